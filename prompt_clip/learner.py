"""Base class of prompt learners and the description of the CLIP they are built for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .config import PromptConfig
from .prompts import Prompts, TextLayout

if TYPE_CHECKING:
    from .model import PromptModel, PromptModelOutput


@dataclass(frozen=True)
class ClipShape:
    """The dimensions of a CLIP that a learner's parameters depend on (read from its config, never hard-coded)."""

    text_width: int
    vision_width: int
    projection_dim: int
    text_layers: int
    vision_layers: int
    text_positions: int
    image_size: int
    patch_size: int
    num_channels: int

    @classmethod
    def from_clip_config(cls, config: Any) -> ClipShape:
        text, vision = config.text_config, config.vision_config
        return cls(
            text_width=text.hidden_size,
            vision_width=vision.hidden_size,
            projection_dim=config.projection_dim,
            text_layers=text.num_hidden_layers,
            vision_layers=vision.num_hidden_layers,
            text_positions=text.max_position_embeddings,
            image_size=vision.image_size,
            patch_size=vision.patch_size,
            num_channels=vision.num_channels,
        )

    @property
    def patch_grid(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


PhraseEmbedder = Callable[[str], torch.Tensor]


class PromptLearner(nn.Module):
    """Owns every trainable parameter of a method and produces its prompts.

    A learner knows nothing about hooks: it returns `Prompts` and, when its flow differs from the default
    (text features of the classes, image features, cosine logits), overrides `compute_logits`, calling the
    `PromptModel`'s `encode_text` / `encode_image` / `class_text_features` / `cosine_logits` and
    `model.class_tokens`.

    Args:
        config (`PromptConfig`): the method's configuration.
        shape (`ClipShape`): dimensions of the CLIP the learner is built for.
        embed_phrase (`Callable[[str], torch.Tensor]`): returns the frozen token embeddings `(tokens, text_width)`
            of a phrase (no start/end tokens), used to initialise context vectors from words.
    """

    config_class: ClassVar[type[PromptConfig]] = PromptConfig
    #: True when text prompts depend on the image (no text-feature cache then).
    text_depends_on_image: ClassVar[bool] = False

    def __init__(self, config: PromptConfig, shape: ClipShape, embed_phrase: PhraseEmbedder) -> None:
        super().__init__()
        self.config = config
        self.shape = shape

    def text_layout(self) -> TextLayout | None:
        """The learned-context layout of the class prompts, or None to use the config's hand-written template."""
        return None

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Called when the class list changes; class-specific learners build or check their parameters here."""

    def bind_classnames(self, classnames: Sequence[str], owner: str) -> None:
        """For class-specific parameters: remembers the classes (in order) they were built for and refuses others.

        A class-specific context learned for "cat" means nothing for "dog": another list of the same length (or the
        same names in another order) would silently give wrong predictions, so it is an error.

        Args:
            classnames (`Sequence[str]`): the classes being set.
            owner (`str`): how the error names the learner, e.g. `"class-specific CoOp"`.
        """
        names = list(classnames)
        bound = getattr(self, "_bound_classnames", None)
        if bound is None:
            self._bound_classnames = names
        elif bound != names:
            changed = next(i for i, (old, new) in enumerate(zip(bound, names)) if old != new)
            raise ValueError(
                f"This {owner} learned its parameters for other classes: class {changed} is {bound[changed]!r}, "
                f"not {names[changed]!r}. Set the classes it was trained on, in the same order "
                "(`model.classnames` before the change), or use a shared variant to predict new classes."
            )

    def prompts(self) -> Prompts:
        """The prompts of one forward pass (image-independent part)."""
        raise NotImplementedError

    def compute_logits(self, model: PromptModel, pixel_values: torch.Tensor) -> PromptModelOutput:
        """Default flow: prompted class text features, prompted image features, scaled cosine similarity.

        Returns:
            `PromptModelOutput` with `logits`, `image_embeds` and `text_embeds` (the loss is added by the model).
        """
        from .model import PromptModelOutput

        prompts = self.prompts()
        text_features = model.class_text_features(prompts)
        image_features = model.encode_image(pixel_values, prompts)
        return PromptModelOutput(
            logits=model.cosine_logits(image_features, text_features),
            image_embeds=image_features,
            text_embeds=text_features,
        )

    # -- helpers for subclasses ---------------------------------------------------------------------------------

    def random_prompt(self, *size: int) -> nn.Parameter:
        """A parameter drawn from N(0, config.init_std)."""
        return nn.Parameter(torch.randn(*size) * self.config.init_std)

    def context_from_words(self, n_ctx: int, ctx_init: str | None, embed_phrase: PhraseEmbedder) -> torch.Tensor:
        """Context vectors `(n_ctx, text_width)`: the first `n_ctx` token embeddings of `ctx_init`, else random."""
        if ctx_init:
            embedded = embed_phrase(ctx_init)
            if embedded.shape[0] < n_ctx:
                raise ValueError(
                    f"ctx_init {ctx_init!r} has {embedded.shape[0]} tokens but n_ctx is {n_ctx}: use a longer "
                    f"phrase or set n_ctx <= {embedded.shape[0]}."
                )
            return embedded[:n_ctx].detach().clone().float()
        return torch.randn(n_ctx, self.shape.text_width) * self.config.init_std

    def deep_prompts(self, n_layers: int, n_tokens: int, width: int) -> nn.ParameterList:
        """`n_layers` independently initialised prompts of shape `(n_tokens, width)`."""
        return nn.ParameterList(self.random_prompt(n_tokens, width) for _ in range(n_layers))
