"""CoOp (Zhou et al., IJCV 2022): learned text context in place of the hand-written prompt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config import PromptConfig, check_choice, check_int, check_optional_text
from ..learner import ClipShape, PhraseEmbedder, PromptLearner
from ..prompts import Prompts, TextLayout
from ..registry import register_method


@dataclass
class CoOpConfig(PromptConfig):
    """Configuration of CoOp.

    Args:
        n_ctx (`int`, defaults to 16): number of learned context vectors (4 with `"a photo of a"` in
            base-to-novel).
        ctx_init (`str`, *optional*): phrase whose first `n_ctx` token embeddings initialise the context; the rest
            of the phrase stays literal text before the class name. Random N(0, init_std) without it.
        class_specific (`bool`, defaults to `False`): one context per class (`C x n_ctx x width`) instead of one
            shared context. The parameters are created by `set_classnames`; such a model cannot predict classes
            it was not trained on.
        class_token_position (`str`, defaults to `"end"`): `"end"`, `"middle"` or `"front"`.
    """

    method: ClassVar[str] = "coop"

    n_ctx: int = 16
    ctx_init: str | None = None
    class_specific: bool = False
    class_token_position: str = "end"

    def validate(self) -> None:
        super().validate()
        check_int(self, "n_ctx", 1, 64)
        check_optional_text(self, "ctx_init")
        check_choice(self, "class_specific", [True, False])
        check_choice(self, "class_token_position", ["end", "middle", "front"])


class CoOpLearner(PromptLearner):
    """Owns the context vectors `ctx`: `(n_ctx, width)` shared or `(C, n_ctx, width)` class-specific."""

    config_class = CoOpConfig

    def __init__(self, config: CoOpConfig, shape: ClipShape, embed_phrase: PhraseEmbedder) -> None:
        super().__init__(config, shape, embed_phrase)
        initial = self.context_from_words(config.n_ctx, config.ctx_init, embed_phrase)
        if config.class_specific:
            # Sized by set_classnames; kept as a buffer until then so the init words are not looked up twice.
            self.register_buffer("_initial_ctx", initial, persistent=False)
            self.ctx = None
        else:
            self.ctx = nn.Parameter(initial)

    def text_layout(self) -> TextLayout:
        return TextLayout(self.config.n_ctx, self.config.ctx_init, self.config.class_token_position)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        if not self.config.class_specific:
            return
        if self.ctx is None:
            ctx = self._initial_ctx.unsqueeze(0).repeat(len(classnames), 1, 1)
            if not self.config.ctx_init:  # independent random context per class, as CoOp does
                ctx = torch.randn_like(ctx) * self.config.init_std
            self.ctx = nn.Parameter(ctx.to(self._initial_ctx.device))
        elif self.ctx.shape[0] != len(classnames):
            raise ValueError(
                f"This class-specific CoOp learned a context for {self.ctx.shape[0]} classes and cannot predict "
                f"{len(classnames)}. Use the classes it was trained on, or class_specific=False to transfer."
            )
        self.bind_classnames(classnames, "class-specific CoOp")

    def prompts(self) -> Prompts:
        if self.ctx is None:
            raise RuntimeError("Class-specific CoOp needs set_classnames([...]) before use.")
        return Prompts(text={0: self.ctx})


register_method(CoOpConfig, CoOpLearner)
