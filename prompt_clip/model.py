"""`PromptModel`: a frozen CLIP, a prompt learner and the hooks that join them."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .config import PromptConfig
from .injection import PromptInjector
from .learner import ClipShape
from .prompts import Prompts
from .registry import get_method
from .text import ClassTokens, clean_classnames, cut_after_end_of_text, tokenize_class_prompts


@dataclass
class PromptModelOutput(ModelOutput):
    """Output of `PromptModel.forward`.

    Args:
        loss (`torch.FloatTensor`, *optional*): cross-entropy of `logits` against `labels`, when labels are given.
        logits (`torch.FloatTensor` of shape `(batch, num_classes)`): scaled cosine similarities.
        image_embeds (`torch.FloatTensor` of shape `(batch, projection_dim)`): prompted image features
            (not normalised; per class `(batch, num_classes, projection_dim)` for methods that prompt the image
            per class).
        text_embeds (`torch.FloatTensor` of shape `(num_classes, projection_dim)`): prompted class text features
            (per image `(batch, num_classes, projection_dim)` for methods whose text depends on the image).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


def _features(output: Any) -> torch.Tensor:
    # transformers >= 5 returns a model output whose pooler_output is the projected feature; older, a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _autocast_state(device: torch.device) -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type)


def _check_clip(clip: Any) -> None:
    needed = ("text_model", "vision_model", "text_projection", "visual_projection", "logit_scale", "config")
    missing = [name for name in needed if not hasattr(clip, name)]
    if missing:
        raise TypeError(
            f"Expected a transformers CLIPModel, got {type(clip).__name__} (missing {missing}). Load one with "
            "CLIPModel.from_pretrained(...)."
        )


class PromptModel(nn.Module):
    """A frozen `CLIPModel` with a prompt method injected through forward hooks.

    Build it with `get_prompt_model` or load a saved adapter with `PromptModel.from_pretrained`.

    Args:
        clip (`transformers.CLIPModel`): the base model; its weights are frozen and never modified.
        config (`PromptConfig`): the method's configuration (e.g. `CoOpConfig(n_ctx=4)`).
        tokenizer: the CLIP's tokenizer; needed to build class prompts. Loaded from `clip.name_or_path` if omitted.
        classnames (`Sequence[str]`, *optional*): the classes to predict; can also be set later with
            `set_classnames`.
    """

    def __init__(
        self,
        clip: nn.Module,
        config: PromptConfig,
        tokenizer: Any = None,
        classnames: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        _check_clip(clip)
        if not isinstance(config, PromptConfig):
            raise TypeError(f"config must be a PromptConfig (e.g. CoOpConfig()), got {type(config).__name__}.")
        spec = get_method(config.method)
        if config.base_model_name_or_path is None and getattr(clip, "name_or_path", ""):
            config = config.replace(base_model_name_or_path=clip.name_or_path)
        self.config = config
        self.shape = ClipShape.from_clip_config(clip.config)
        self.tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(clip)
        learner = spec.learner_class(config, self.shape, self._phrase_embedder(clip))
        # The learner's parameters stay in float32 (master weights) whatever the CLIP's dtype; hooks cast them.
        self.learner = learner.to(device=clip.logit_scale.device)
        # Created last, so that a failure above leaves no hook behind.
        self.injector = PromptInjector(clip)
        self.clip = clip
        self._clip_requires_grad = {name: p.requires_grad for name, p in clip.named_parameters()}
        self._clip_was_training = clip.training
        self._enabled_checkpointing = False
        clip.requires_grad_(False)
        self._adapter_disabled = False
        self._unloaded = False
        self.classnames: list[str] | None = None
        self._class_tokens: ClassTokens | None = None
        self._template_tokens: ClassTokens | None = None
        self._text_cache: tuple[Any, torch.Tensor, list[torch.Tensor]] | None = None
        self.train(clip.training)
        if classnames is not None:
            try:
                self.set_classnames(classnames)
            except BaseException:
                self.unload()  # leave the CLIP exactly as it was given
                raise

    # -- construction helpers ----------------------------------------------------------------------------------

    def _phrase_embedder(self, clip: nn.Module):
        embedding = clip.text_model.embeddings.token_embedding

        def embed_phrase(phrase: str) -> torch.Tensor:
            ids = self.tokenizer(phrase, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                return embedding(torch.tensor(ids, device=embedding.weight.device)).float().cpu()

        return embed_phrase

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    def _require_loaded(self) -> None:
        if self._unloaded:
            raise RuntimeError("This PromptModel was unloaded; build a new one with get_prompt_model(clip, config).")

    # -- classes -------------------------------------------------------------------------------------------------

    def set_classnames(self, classnames: Sequence[str], template: str | None = None) -> None:
        """Sets the classes the model predicts (underscores become spaces); text prompts are rebuilt from them.

        Args:
            classnames (`Sequence[str]`): the class names, in label order.
            template (`str`, *optional*): a new hand-written template (one `{}`), e.g. the target dataset's in a
                transfer protocol. It is the text of methods that learn no text prompt (VPT, VP) and of
                `disable_adapter()`; it becomes the config's `template`. Unchanged when omitted.

        Raises:
            ValueError: for an empty list, empty or duplicate names, a bad template, or a prompt longer than the
                text encoder.
        """
        self._require_loaded()
        config = self.config if template is None else self.config.replace(template=template)
        names = clean_classnames(classnames)
        max_length = self.shape.text_positions
        class_tokens = tokenize_class_prompts(
            self.tokenizer, names, self.learner.text_layout(), config.template, max_length
        )
        template_tokens = tokenize_class_prompts(self.tokenizer, names, None, config.template, max_length)
        self.learner.set_classnames(names)
        self.config = config
        self.classnames = names
        self._class_tokens, self._template_tokens = class_tokens, template_tokens
        self._text_cache = None

    def _tokens(self, template: bool = False) -> ClassTokens:
        tokens = self._template_tokens if template else self._class_tokens
        if tokens is None:
            raise RuntimeError("No classes set: call model.set_classnames([...]) before the forward pass.")
        return tokens

    # -- encoders (used by learners) -----------------------------------------------------------------------------

    def encode_text(self, tokens: ClassTokens, prompts: Prompts | None = None) -> torch.Tensor:
        """Projected text features `(N, projection_dim)` of `tokens` with the text prompts of `prompts`."""
        self._require_loaded()
        tokens = tokens.to(self.device)
        input_ids = cut_after_end_of_text(tokens.input_ids, self.clip.config.text_config.eos_token_id)
        text_prompts = prompts.text if prompts is not None and not self._adapter_disabled else {}
        with self.injector.text(text_prompts, tokens.ctx_positions):
            return _features(self.clip.get_text_features(input_ids=input_ids))

    def encode_image(self, pixel_values: torch.Tensor, prompts: Prompts | None = None) -> torch.Tensor:
        """Projected image features `(B', projection_dim)` with the vision prompts of `prompts`."""
        self._require_loaded()
        pixel_values = pixel_values.to(self.device)
        if prompts is None or self._adapter_disabled:
            vision, pixels = {}, None
        else:
            vision, pixels = prompts.vision, prompts.pixels
        with self.injector.vision(vision, pixels):
            return _features(self.clip.get_image_features(pixel_values=pixel_values))

    def class_text_features(self, prompts: Prompts | None, template: bool = False) -> torch.Tensor:
        """Text features of the current classes; cached in eval mode without gradients.

        The cache key includes every learner parameter's version counter, so an optimizer step or a load
        invalidates it.
        """
        tokens = self._tokens(template)
        frozen = template or self._adapter_disabled or prompts is None or not prompts.text
        if frozen:
            # No trainable input: compute once, outside autograd, and reuse in every mode. inference_mode(False)
            # keeps the cached tensor usable by a later training step even if first built under inference_mode.
            key = (id(tokens), "frozen", self.device, self._clip_dtype(), *_autocast_state(self.device))
            if self._text_cache is None or self._text_cache[0] != key:
                with torch.inference_mode(False), torch.no_grad():
                    self._text_cache = (key, self.encode_text(tokens, None), [])
            return self._text_cache[1]
        if self.training or torch.is_grad_enabled() or self.learner.text_depends_on_image:
            return self.encode_text(tokens, prompts)
        # Keyed on the parameters' content, not their version counters: fused optimizers and writes through
        # `.data` change parameters without bumping `_version`. Learners are small, so the comparison is cheap.
        parameters = list(self.learner.parameters())
        key = (id(tokens), "prompted", self.device, self._clip_dtype(), *_autocast_state(self.device))
        cache = self._text_cache
        if (
            cache is None
            or cache[0] != key
            or len(cache[2]) != len(parameters)
            or not all(torch.equal(p, snapshot) for p, snapshot in zip(parameters, cache[2]))
        ):
            snapshots = [p.detach().clone() for p in parameters]
            self._text_cache = (key, self.encode_text(tokens, prompts), snapshots)
        return self._text_cache[1]

    def _clip_dtype(self) -> torch.dtype:
        return self.clip.text_projection.weight.dtype

    def train(self, mode: bool = True) -> PromptModel:
        # Prompted text features are recomputed after a change of mode; frozen ones (no prompts) stay valid.
        if self._text_cache is not None and self._text_cache[0][1] == "prompted":
            self._text_cache = None
        return super().train(mode)

    def cosine_logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """`logit_scale.exp() * cos(image, text)`; text `(C, d)` shared, or `(B, C, d)` per image."""
        image_features = F.normalize(image_features.float(), dim=-1)
        text_features = F.normalize(text_features.float(), dim=-1)
        scale = self.clip.logit_scale.exp().float()
        if text_features.dim() == 3:
            return scale * torch.einsum("bd,bcd->bc", image_features, text_features)
        return scale * image_features @ text_features.t()

    # -- forward -------------------------------------------------------------------------------------------------

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, return_dict: bool = True
    ) -> PromptModelOutput | tuple:
        """Classifies images among the current classes.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, channels, height, width)`): normalised images.
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*): class indices; adds the cross-entropy loss.
            return_dict (`bool`, defaults to `True`): return a `PromptModelOutput` instead of a tuple.
        """
        self._require_loaded()
        self._check_inputs(pixel_values, labels)
        if self._adapter_disabled:
            text_features = self.class_text_features(None, template=True)
            image_features = self.encode_image(pixel_values)
            output = PromptModelOutput(
                logits=self.cosine_logits(image_features, text_features),
                image_embeds=image_features,
                text_embeds=text_features,
            )
        else:
            self._tokens()
            output = self.learner.compute_logits(self, pixel_values)
        if labels is not None:
            output.loss = F.cross_entropy(output.logits, labels.to(output.logits.device))
        return output if return_dict else output.to_tuple()

    def _check_inputs(self, pixel_values: torch.Tensor, labels: torch.Tensor | None) -> None:
        channels, size = self.shape.num_channels, self.shape.image_size
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4 or pixel_values.shape[1] != channels:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(
                f"pixel_values must be a (batch, {channels}, {size}, {size}) tensor, got {shape}; add a batch "
                "dimension with .unsqueeze(0), or use the CLIP's image processor (channels first)."
            )
        classes = len(self._tokens())
        if labels is not None and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ValueError(
                f"labels must be class indices in [0, {classes - 1}] for the {classes} classes set, got values in "
                f"[{int(labels.min())}, {int(labels.max())}]."
            )

    @property
    def class_tokens(self) -> ClassTokens:
        """Token ids and context positions of the current class prompts."""
        return self._tokens()

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Within the block the model is zero-shot CLIP with the config's hand-written template."""
        self._require_loaded()
        previous, self._adapter_disabled = self._adapter_disabled, True
        try:
            yield
        finally:
            self._adapter_disabled = previous

    # -- training helpers ----------------------------------------------------------------------------------------

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable parameters, all parameters including the frozen CLIP)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
        )

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Activation checkpointing on the CLIP's encoder layers (non-reentrant by default; layers recompute in
        the backward pass only in training mode)."""
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        self.clip.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if not kwargs["use_reentrant"] and hasattr(self.clip, "disable_input_require_grads"):
            # transformers also makes the input embeddings require grad, which only reentrant checkpointing needs;
            # it would make a frozen tower (the image side of CoOp) run its backward pass for nothing.
            self.clip.disable_input_require_grads()
        self._enabled_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.clip.gradient_checkpointing_disable()
        self._enabled_checkpointing = False

    def unload(self) -> nn.Module:
        """Removes every hook and returns the CLIP exactly as it was given (weights, grad flags, train mode)."""
        self._require_loaded()
        clip = self.clip
        self.injector.remove()
        if self._enabled_checkpointing:
            self.gradient_checkpointing_disable()
        for name, parameter in clip.named_parameters():
            parameter.requires_grad_(self._clip_requires_grad.get(name, parameter.requires_grad))
        clip.train(self._clip_was_training)
        del self._modules["clip"]
        self.__dict__["clip"] = None
        self._unloaded = True
        self._text_cache = None
        return clip

    # -- adapter files -------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Writes `adapter_config.json`, `adapter_model.safetensors` and a `README.md` model card."""
        from .hub import save_adapter

        self._require_loaded()
        save_adapter(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Uploads the adapter files to the Hugging Face Hub; returns the commit URL. See `hub.push_adapter`."""
        from .hub import push_adapter

        self._require_loaded()
        return push_adapter(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(
        cls, clip: nn.Module, path_or_repo_id: str | os.PathLike, tokenizer: Any = None, **kwargs: Any
    ) -> PromptModel:
        """Loads an adapter (a local folder or a Hub repo id) onto `clip`. See `hub.load_adapter` for options."""
        from .hub import load_adapter

        return load_adapter(cls, clip, path_or_repo_id, tokenizer=tokenizer, **kwargs)

    def __repr__(self) -> str:
        trainable, _ = self.get_nb_trainable_parameters() if not self._unloaded else (0, 0)
        return f"PromptModel(method={self.config.method!r}, trainable={trainable:,d}, classes={self.classnames})"


def _load_tokenizer(clip: nn.Module) -> Any:
    name = getattr(clip, "name_or_path", "") or getattr(clip.config, "_name_or_path", "")
    if not name:
        raise ValueError(
            "No tokenizer given and the CLIPModel does not say where it was loaded from; pass "
            "tokenizer=CLIPTokenizer.from_pretrained(...)."
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as error:
        raise ValueError(
            f"Could not load a tokenizer from {name!r} ({error}); pass tokenizer=... explicitly."
        ) from error


def get_prompt_model(
    clip: nn.Module,
    config: PromptConfig,
    tokenizer: Any = None,
    classnames: Sequence[str] | None = None,
) -> PromptModel:
    """Injects the prompt method described by `config` into a frozen `clip`.

    Args:
        clip (`transformers.CLIPModel`): the base model; never modified (see `PromptModel.unload`).
        config (`PromptConfig`): one method's config, e.g. `MaPLeConfig(n_ctx=2, depth=9)`.
        tokenizer: the CLIP's tokenizer (loaded from `clip.name_or_path` when omitted).
        classnames (`Sequence[str]`, *optional*): the classes to predict.

    Returns:
        `PromptModel`: only the method's parameters require gradients.
    """
    return PromptModel(clip, config, tokenizer=tokenizer, classnames=classnames)
