"""AMMPL (Wu et al., ACM MM 2024): adaptive multi-modality prompt learning.

Three parts (paper Sec. 2, METHODS.md "AMMPL"):

- text prompt learning: CoOp/CoCoOp-style learned context (`n_ctx` vectors from `"a photo of a"`), one per class or
  shared;
- image prompt learning, in pixel space: a probability matrix `P_i` (`b x b`, one value per ViT patch) gives a
  Bernoulli mask `M_i` (1 keeps a patch) trained with the straight-through estimator `M = detach(M - P) + P`; the
  masked patches are filled with a learned patch of pixels `N_i` (`q x q x channels`);
- two-way interaction at the input (Eq. 7-9): `E_i = f_T(z_i)` (class i's text feature -> a patch-sized pixel delta
  added to the padding) and `h = f_I(x)` (image feature -> one scalar added to every context vector).

The prediction (Eq. 10) compares each class's text feature with the feature of the image prompted *for that class*:
`logit_i = scale * cos(x_i, z_i)`. Per class images are the method's price: see `AMMPLLearner.image_passes_per_image`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PromptConfig, check_choice, check_float, check_int, check_optional_text
from ..learner import ClipShape, PhraseEmbedder, PromptLearner
from ..prompts import Prompts, TextLayout
from ..registry import register_method

if TYPE_CHECKING:
    from ..model import PromptModel, PromptModelOutput


@dataclass
class AMMPLConfig(PromptConfig):
    """Configuration of AMMPL.

    Hyper-parameters the paper does not give follow CoCoOp, which the paper says it follows for its implementation:
    SGD lr 0.002, batch 1, 10 epochs, 4 context vectors from "a photo of a", an interaction net of width
    `projection_dim // 16` with a ReLU between its two linear layers, fed L2-normalised features.

    Cost: with `mask_mode="class_specific"`, or whenever the interaction is on (the padding delta `E_i` depends on
    class i's text feature), every image is encoded once per class: a batch of B images runs the vision encoder on
    B * C images (one batch), plus B unprompted images for the interaction's first pass, and the text encoder on
    B * C prompts (the context depends on the image, as in CoCoOp). Only `mask_mode="shared"` with
    `interaction=False` encodes each image once.

    Args:
        n_ctx (`int`, defaults to 4): learned context vectors M.
        ctx_init (`str`, *optional*, defaults to `"a photo of a"`): phrase whose first `n_ctx` token embeddings
            initialise the context (the paper's init); random N(0, init_std) when `None`.
        mask_mode (`str`, defaults to `"class_specific"`): `"class_specific"` (the paper's main version, used for
            few-shot: one probability matrix `P_i` and one padding `N_i` per class) or `"shared"` (the paper's
            "alternative" version, used for base-to-novel and cross-dataset: one `P` and one `N` for all classes).
            Class-specific parameters are created by `set_classnames` and cannot predict another number of classes.
        class_specific_ctx (`bool`, *optional*): one text context per class. `None` (default) follows `mask_mode`,
            as in the paper (the alternative version shares the context).
        mask_init_mean (`float`, defaults to 0.93): mean mu of the normal init of the probability matrix, in
            (0, 1]; the paper searches {0.80, 0.90, 0.93, 0.95, 0.97}.
        mask_init_std (`float`, defaults to 0.05): standard deviation of that init (paper: 0.05).
        padding (`bool`, defaults to `True`): fill masked patches with the learned padding N (+ E). `False` is the
            paper's ablation without patch padding (C1): masked patches are zero (plus E when the interaction is on).
        interaction (`bool`, defaults to `True`): the two-way interaction E = f_T(z), h = f_I(x). `False` is the
            ablation C1 + C2 (mask and padding only); the text prompts then no longer depend on the image.
        interaction_order (`str`, defaults to `"plain_first"`): where z and x for the interaction come from (the
            paper leaves it open, since z and x themselves depend on E and h). Both take z from the prompted text
            *without* h (computed once per forward, with gradients). `"plain_first"`: x is the unprompted image's
            feature (one extra pass of B images, no gradient), so h is one scalar per image. `"masked_first"`: x_i is
            the feature of the image masked and padded for class i *without* E (one extra pass of B * C images, no
            gradient), so h_i is per image and class, as the paper's notation `h_i = f_I(x_i)` suggests.
        hidden_dim (`int`, *optional*): hidden width of the two-layer nets f_T and f_I. `None` (default) is
            `projection_dim // 16` (32 for ViT-B/16), as CoCoOp's meta-net.
        eval_mask (`str`, defaults to `"threshold"`): the mask at evaluation, which must be deterministic:
            `"threshold"` keeps a patch where clamp(P, 0, 1) >= 0.5; `"expected"` uses the soft mask clamp(P, 0, 1);
            `"sampled"` averages the logits over `eval_samples` Bernoulli draws from a generator seeded with
            `eval_seed` on every forward (so the same input always gets the same answer).
        eval_samples (`int`, defaults to 8): draws for `eval_mask="sampled"`.
        eval_seed (`int`, defaults to 0): seed of those draws.
    """

    method: ClassVar[str] = "ammpl"

    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    mask_mode: str = "class_specific"
    class_specific_ctx: bool | None = None
    mask_init_mean: float = 0.93
    mask_init_std: float = 0.05
    padding: bool = True
    interaction: bool = True
    interaction_order: str = "plain_first"
    hidden_dim: int | None = None
    eval_mask: str = "threshold"
    eval_samples: int = 8
    eval_seed: int = 0

    def validate(self) -> None:
        super().validate()
        check_int(self, "n_ctx", 1, 64)
        check_optional_text(self, "ctx_init")
        check_choice(self, "mask_mode", ["class_specific", "shared"])
        check_choice(self, "class_specific_ctx", [None, True, False])
        check_float(self, "mask_init_mean", 0.0, 1.0, low_inclusive=False)
        check_float(self, "mask_init_std", 0.0)
        check_choice(self, "padding", [True, False])
        check_choice(self, "interaction", [True, False])
        check_choice(self, "interaction_order", ["plain_first", "masked_first"])
        if self.hidden_dim is not None:
            check_int(self, "hidden_dim", 1)
        check_choice(self, "eval_mask", ["threshold", "expected", "sampled"])
        check_int(self, "eval_samples", 1)
        check_int(self, "eval_seed", 0)

    @property
    def class_specific_masks(self) -> bool:
        return self.mask_mode == "class_specific"

    @property
    def class_specific_context(self) -> bool:
        return self.class_specific_masks if self.class_specific_ctx is None else self.class_specific_ctx


def _two_layer_net(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    # PyTorch's default Linear init, as CoCoOp's meta-net.
    return nn.Sequential(
        OrderedDict(
            linear1=nn.Linear(in_features, hidden),
            relu=nn.ReLU(),
            linear2=nn.Linear(hidden, out_features),
        )
    )


class AMMPLLearner(PromptLearner):
    """Owns the text context `ctx`, the probability matrices `mask_probs` `(K, b, b)`, the paddings `padding`
    `(K, channels, q, q)` (K = number of classes, or 1 when shared) and the interaction nets `text_net` (f_T:
    `projection_dim -> hidden -> channels * q * q`) and `image_net` (f_I: `projection_dim -> hidden -> 1`).

    Forward pass (`compute_logits`), for B images and C classes:

    1. first pass, without the interaction: z = text features of the context prompts `(C, d)` (once per forward,
       shared by the batch) and x = unprompted image features `(B, d)` (`interaction_order="plain_first"`);
    2. E = f_T(z) `(C, channels, q, q)`, h = f_I(x) `(B, 1)`;
    3. prompted pass: the B * C prompts with context `ctx + h` (one text batch) and the B * C images
       `M_i * I + (1 - M_i) * (N_i + E_i)` (one vision batch, made by the `pixels` transform), then
       `logit_i = scale * cos(x_i, z_i)`.

    In training each mask is one Bernoulli draw per class and forward, shared by the images of the batch (Eq. 4
    broadcasts `M` over the image), from torch's global RNG so that `torch.manual_seed` reproduces a run.
    """

    config_class = AMMPLConfig
    text_depends_on_image = True  # with the interaction on; set per instance below

    def __init__(self, config: AMMPLConfig, shape: ClipShape, embed_phrase: PhraseEmbedder) -> None:
        super().__init__(config, shape, embed_phrase)
        self.text_depends_on_image = config.interaction
        self.grid = shape.patch_grid
        self.patch = shape.patch_size
        self._num_classes: int | None = None
        # Tells set_classnames where the learner lives when it creates the class-specific parameters.
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)
        initial_ctx = self.context_from_words(config.n_ctx, config.ctx_init, embed_phrase)
        # Class-specific tensors are sized by set_classnames; until then they are None.
        self.ctx: nn.Parameter | None = None
        self.mask_probs: nn.Parameter | None = None
        self.padding: nn.Parameter | None = None
        if config.class_specific_context:
            self.register_buffer("_initial_ctx", initial_ctx, persistent=False)
        else:
            self.ctx = nn.Parameter(initial_ctx)
        if not config.class_specific_masks:
            self.mask_probs, self.padding = self._image_parameters(1)
        if config.interaction:
            hidden = config.hidden_dim if config.hidden_dim is not None else max(1, shape.projection_dim // 16)
            pixels_per_patch = shape.num_channels * self.patch * self.patch
            self.text_net = _two_layer_net(shape.projection_dim, hidden, pixels_per_patch)
            self.image_net = _two_layer_net(shape.projection_dim, hidden, 1)

    def _image_parameters(self, count: int) -> tuple[nn.Parameter, nn.Parameter]:
        config = self.config
        probs = torch.randn(count, self.grid, self.grid) * config.mask_init_std + config.mask_init_mean
        padding = torch.randn(count, self.shape.num_channels, self.patch, self.patch) * config.init_std
        return nn.Parameter(probs), nn.Parameter(padding)

    def text_layout(self) -> TextLayout:
        return TextLayout(self.config.n_ctx, self.config.ctx_init)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        count = len(classnames)
        specific = self.config.class_specific_context or self.config.class_specific_masks
        if specific and self._num_classes is not None and count != self._num_classes:
            raise ValueError(
                f"This class-specific AMMPL learned its prompts and masks for {self._num_classes} classes and cannot "
                f"predict {count}. Use the classes it was trained on, or mask_mode='shared' (the paper's "
                "alternative version) to transfer to new classes."
            )
        if specific:
            self.bind_classnames(classnames, "class-specific AMMPL")
        if self.config.class_specific_context and self.ctx is None:
            device = self._device_anchor.device
            ctx = self._initial_ctx.unsqueeze(0).repeat(count, 1, 1)
            if not self.config.ctx_init:  # independent random context per class, as CoOp does
                ctx = torch.randn_like(ctx) * self.config.init_std
            self.ctx = nn.Parameter(ctx.to(device))
        if self.config.class_specific_masks and self.mask_probs is None:
            device = self._device_anchor.device
            probs, padding = self._image_parameters(count)
            self.mask_probs, self.padding = nn.Parameter(probs.to(device)), nn.Parameter(padding.to(device))
        self._num_classes = count

    def _check_ready(self) -> None:
        if self.ctx is None or self.mask_probs is None:
            raise RuntimeError("Class-specific AMMPL needs set_classnames([...]) before use.")

    # -- cost ----------------------------------------------------------------------------------------------------

    @property
    def prompted_images_per_image(self) -> int:
        """How many prompted versions of each image the vision encoder sees: C when the masks or the padding
        differ per class (class-specific masks, or the interaction's per-class delta E_i), else 1."""
        self._check_ready()
        per_class = self.config.class_specific_masks or self.config.interaction
        return self._num_classes if per_class else 1

    @property
    def image_passes_per_image(self) -> int:
        """Images the vision encoder runs per input image in one forward (deterministic evaluation or training):
        the prompted versions plus the interaction's first pass (1 unprompted image for
        `interaction_order="plain_first"`, C masked ones for `"masked_first"`). `eval_mask="sampled"` repeats the
        prompted part `eval_samples` times."""
        prompted = self.prompted_images_per_image
        if not self.config.interaction:
            return prompted
        return prompted + (1 if self.config.interaction_order == "plain_first" else prompted)

    # -- masks ---------------------------------------------------------------------------------------------------

    def _eval_generator(self) -> torch.Generator:
        generator = torch.Generator(device=self.mask_probs.device)
        generator.manual_seed(self.config.eval_seed)
        return generator

    def _mask_draws(self) -> list[torch.Tensor]:
        """The masks `(K, b, b)` of this forward: one straight-through Bernoulli draw in training, the
        deterministic eval mask(s) otherwise."""
        probs = self.mask_probs
        clamped = probs.clamp(0.0, 1.0)
        if self.training:
            sample = torch.bernoulli(clamped.detach())  # torch's global RNG: torch.manual_seed reproduces it
            return [(sample - probs).detach() + probs]  # Eq. 11: the gradient of M goes to P unchanged
        if self.config.eval_mask == "threshold":
            return [(clamped >= 0.5).to(probs.dtype)]
        if self.config.eval_mask == "expected":
            return [clamped]
        generator = self._eval_generator()
        return [torch.bernoulli(clamped, generator=generator) for _ in range(self.config.eval_samples)]

    @torch.no_grad()
    def masks(self) -> torch.Tensor:
        """The evaluation masks `(K, b, b)` (K = number of classes, or 1 when shared; 1 keeps a patch), the data
        behind the paper's Fig. 3. For `eval_mask="sampled"`, the fraction of the draws that keep each patch."""
        self._check_ready()
        was_training = self.training
        self.eval()
        try:
            return torch.stack(self._mask_draws()).mean(dim=0).detach().clone()
        finally:
            self.train(was_training)

    # -- pixels --------------------------------------------------------------------------------------------------

    def _pixel_transform(self, mask: torch.Tensor, fill: torch.Tensor | None):
        """A `pixels` transform `(B, ch, H, W) -> (B * V, ch, H, W)` giving every image its V prompted versions
        `M_i * I + (1 - M_i) * fill_i` (V = the larger of the mask and fill counts), image after image."""
        q, grid = self.patch, self.grid

        def transform(pixel_values: torch.Tensor) -> torch.Tensor:
            n_images, channels, height, width = pixel_values.shape
            # Patch-wise upsampling; pixels beyond the patch grid (image_size not divisible) are always kept.
            keep = mask.repeat_interleave(q, dim=-2).repeat_interleave(q, dim=-1)
            keep = F.pad(keep, (0, width - grid * q, 0, height - grid * q), value=1.0)
            keep = keep.to(pixel_values.dtype)[None, :, None]  # (1, Km, 1, H, W)
            images = pixel_values[:, None]  # (B, 1, ch, H, W)
            if fill is None:
                prompted = keep * images
            else:
                tiled = fill.repeat(1, 1, grid, grid)
                tiled = F.pad(tiled, (0, width - grid * q, 0, height - grid * q)).to(pixel_values.dtype)
                prompted = keep * images + (1 - keep) * tiled[None]  # (B, V, ch, H, W)
            versions = prompted.shape[1]
            return prompted.reshape(n_images * versions, channels, height, width)

        return transform

    def _fill(self, delta: torch.Tensor | None) -> torch.Tensor | None:
        """What masked patches take: N (+ E), `(K or C, ch, q, q)`; None for zeros."""
        padding = self.padding if self.config.padding else None
        if delta is None:
            return padding
        return delta if padding is None else padding + delta

    def prompts(self) -> Prompts:
        """The image-independent part: the plain context and the masks with the padding, without the interaction."""
        self._check_ready()
        mask = self._mask_draws()[0]
        return Prompts(text={0: self.ctx}, pixels=self._pixel_transform(mask, self._fill(None)))

    # -- forward -------------------------------------------------------------------------------------------------

    def _encode_images(
        self, model: PromptModel, pixel_values: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor | None
    ) -> torch.Tensor:
        """Features `(B, V, d)` of the V prompted versions of each image, in one vision batch."""
        features = model.encode_image(pixel_values, Prompts(pixels=self._pixel_transform(mask, fill)))
        return features.view(pixel_values.shape[0], -1, features.shape[-1])

    def _text_with_shift(self, model: PromptModel, shift: torch.Tensor) -> torch.Tensor:
        """Class text features `(B, C, d)` with the context of every class shifted by `shift` `(B, C or 1)`, the
        B * C prompts in one text batch (`class_tokens.repeat(B)` lays them out image after image)."""
        tokens = model.class_tokens
        n_images, n_classes = shift.shape[0], tokens.input_ids.shape[0]
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0)  # (C or 1, n, width)
        context = ctx.unsqueeze(0) + shift.to(ctx.dtype)[:, :, None, None]  # (B, C or 1, n, width)
        context = context.expand(n_images, n_classes, -1, -1).reshape(n_images * n_classes, *ctx.shape[1:])
        features = model.encode_text(tokens.repeat(n_images), Prompts(text={0: context}))
        return features.view(n_images, n_classes, -1)

    def _image_shift(self, image_features: torch.Tensor) -> torch.Tensor:
        """h = f_I(x): `(B, V)` from image features `(B, V, d)`."""
        normalised = F.normalize(image_features.float(), dim=-1)
        return self.image_net(normalised).squeeze(-1)

    def compute_logits(self, model: PromptModel, pixel_values: torch.Tensor) -> PromptModelOutput:
        from ..model import PromptModelOutput

        self._check_ready()
        config = self.config
        pixel_values = pixel_values.to(model.device)
        plain_prompts = Prompts(text={0: self.ctx})
        delta = text_features = None
        if config.interaction:
            # First pass without the interaction. z: computed once per forward for the whole batch, with gradients
            # (the text pass is cheap and ctx learns through E too).
            plain_text = model.encode_text(model.class_tokens, plain_prompts)  # (C, d)
            delta = self.text_net(F.normalize(plain_text.float(), dim=-1))
            delta = delta.view(-1, self.shape.num_channels, self.patch, self.patch)  # E: (C, ch, q, q)
            if config.interaction_order == "plain_first":
                with torch.no_grad():  # frozen encoder, no learned input: only feeds f_I
                    plain_image = model.encode_image(pixel_values).unsqueeze(1)  # (B, 1, d)
                text_features = self._text_with_shift(model, self._image_shift(plain_image))
        else:
            text_features = model.class_text_features(plain_prompts)  # (C, d), cached in eval

        logits, image_features = [], None
        for mask in self._mask_draws():
            if config.interaction and config.interaction_order == "masked_first":
                with torch.no_grad():  # x_i: the image prompted for class i, without E
                    masked_image = self._encode_images(model, pixel_values, mask, self._fill(None))
                text_features = self._text_with_shift(model, self._image_shift(masked_image))
            image_features = self._encode_images(model, pixel_values, mask, self._fill(delta))  # (B, V, d)
            logits.append(self._paired_logits(model, image_features, text_features))
        logits = logits[0] if len(logits) == 1 else torch.stack(logits).mean(dim=0)
        if image_features.shape[1] == 1:
            image_features = image_features.squeeze(1)
        return PromptModelOutput(logits=logits, image_embeds=image_features, text_embeds=text_features)

    @staticmethod
    def _paired_logits(model: PromptModel, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Eq. 10: `scale * cos(x_i, z_i)`; image `(B, V, d)` with V in {1, C}, text `(C, d)` or `(B, C, d)`."""
        image = F.normalize(image_features.float(), dim=-1)
        text = F.normalize(text_features.float(), dim=-1)
        if text.dim() == 2:
            text = text.unsqueeze(0)
        scale = model.clip.logit_scale.exp().float()
        return scale * (image * text).sum(dim=-1)


register_method(AMMPLConfig, AMMPLLearner)
