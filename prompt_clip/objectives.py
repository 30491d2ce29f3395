"""Training objectives that compose with any prompt method, and PromptSRC's Gaussian prompt aggregation.

An objective is not an architecture: it takes a `PromptModel` (any method), a batch of images and their labels, and
returns the loss to minimise. The training loop picks one objective and one method:

```python
objective = PromptSRCObjective()  # or CrossEntropyObjective()
aggregator = GaussianPromptAggregation(num_epochs=20, mean=15, std=1)
for epoch in range(20):
    for pixel_values, labels in loader:
        out = objective(model, pixel_values, labels)
        out.loss.backward()
        ...
    aggregator.update(model, epoch)
aggregator.apply(model)
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_float, check_int
from .text import tokenize_class_prompts

if TYPE_CHECKING:
    from .model import PromptModel, PromptModelOutput


#: The 60 templates of OpenAI CLIP's ImageNet prompt ensemble that PromptSRC's textual-diversity term averages over
#: (`trainers/imagenet_templates.py` of the PromptSRC code; the list comes from CLIP's prompt-engineering notebook).
PROMPTSRC_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
)


@dataclass
class ObjectiveOutput:
    """What an objective returns for one batch.

    Args:
        loss (`torch.FloatTensor`, a scalar): the total loss to back-propagate.
        logits (`torch.FloatTensor` of shape `(batch, num_classes)`): the prompted model's logits (for accuracy).
        parts (`dict[str, torch.FloatTensor]`): detached scalars for logging, each term as it enters the loss
            (weights applied); they sum to `loss`.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective:
    """Base class of training objectives: `objective(model, pixel_values, labels) -> ObjectiveOutput`.

    An objective holds no trainable parameter; it only reads the `PromptModel`'s public API (`model(...)`,
    `encode_image`, `encode_text`, `cosine_logits`), so it works with every prompt method.
    """

    def __call__(self, model: PromptModel, pixel_values: torch.Tensor, labels: torch.Tensor) -> ObjectiveOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CrossEntropyObjective(Objective):
    """Plain cross-entropy of the prompted logits against the labels (the default objective of every method)."""

    def __call__(self, model: PromptModel, pixel_values: torch.Tensor, labels: torch.Tensor) -> ObjectiveOutput:
        output = model(pixel_values)
        loss = F.cross_entropy(output.logits, labels.to(output.logits.device))
        return ObjectiveOutput(loss=loss, logits=output.logits, parts={"ce": loss.detach()})


def l1_to_frozen(prompted: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    """PromptSRC's `F.l1_loss(normalised prompted, normalised frozen, reduction="mean")`, broadcasting `frozen`.

    The mean runs over every element, so with per-image (or per-class) prompted features it is the mean of the
    per-image losses, and features that all equal shared ones give the shared loss.

    Args:
        prompted (`torch.FloatTensor` of shape `(..., d)`): prompted features (with gradients).
        frozen (`torch.FloatTensor`): frozen features of a shape that broadcasts to `prompted`'s.
    """
    prompted = F.normalize(prompted.float(), dim=-1)
    frozen = F.normalize(frozen.float(), dim=-1).to(prompted.device)
    # Expanding explicitly: F.l1_loss warns on targets of another shape.
    return F.l1_loss(prompted, frozen.expand_as(prompted), reduction="mean")


class PromptSRCObjective(Objective):
    """PromptSRC's self-regulating objective (Khattak et al., ICCV 2023), usable with any prompt method.

    `loss = CE + weight_text * L1(text) + weight_image * L1(image) + weight_kl * KL`, where, as in PromptSRC's code:

    - `L1(text)`: mean absolute difference between the L2-normalised prompted class text features and the frozen
      CLIP's text features averaged (unnormalised) over `templates`, then L2-normalised.
    - `L1(image)`: the same between the L2-normalised prompted image features and the frozen CLIP's image features.
    - `KL`: `F.kl_div(log_softmax(prompted logits), log_softmax(zero-shot logits), log_target=True,
      reduction="sum") / logits.numel()`: temperature 1 on logits already scaled by CLIP's `logit_scale`, and the
      zero-shot logits are the frozen image features against the template-ensemble text features. This is the
      divergence of the prompted distribution from the frozen one that METHODS.md writes "KL(prompted || frozen)";
      in the usual notation it is KL(P_frozen || P_prompted), the distillation direction. PromptSRC divides the sum
      by `batch * num_classes` (not `batch`), so this term is `batchmean / num_classes`; to get `batchmean` use
      `weight_kl=num_classes`.

    The frozen text features are computed once per class list (and device) and cached; they are recomputed when the
    model's classes change. The frozen image features are computed without gradients on every batch.

    Args:
        weight_text (`float`, defaults to 25.0): weight of the text L1 term (PromptSRC's `TEXT_LOSS_WEIGHT`).
        weight_image (`float`, defaults to 10.0): weight of the image L1 term (`IMAGE_LOSS_WEIGHT`).
        weight_kl (`float`, defaults to 1.0): weight of the KL term (1 in PromptSRC).
        templates (`Sequence[str]`, *optional*): the frozen text-feature template ensemble, each with one `{}`;
            defaults to `PROMPTSRC_TEMPLATES` (the 60 CLIP ImageNet templates PromptSRC uses for every dataset).
            A dataset's own template can be added: `templates=[*PROMPTSRC_TEMPLATES, "a photo of a {}, a type of
            pet."]`.
    """

    def __init__(
        self,
        weight_text: float = 25.0,
        weight_image: float = 10.0,
        weight_kl: float = 1.0,
        templates: Sequence[str] | None = None,
    ) -> None:
        self.weight_text = weight_text
        self.weight_image = weight_image
        self.weight_kl = weight_kl
        self.templates = tuple(PROMPTSRC_TEMPLATES if templates is None else templates)
        for name in ("weight_text", "weight_image", "weight_kl"):
            check_float(self, name, low=0.0)
        if isinstance(templates, str) or not self.templates:
            raise ValueError(
                f"PromptSRCObjective.templates must be a non-empty list of templates, got {templates!r}; for "
                "example ['a photo of a {}.']."
            )
        for index, template in enumerate(self.templates):
            if not isinstance(template, str) or template.count("{}") != 1:
                raise ValueError(
                    f"PromptSRCObjective.templates[{index}] must contain exactly one '{{}}' for the class name, "
                    f"got {template!r}."
                )
        self._cache: tuple[Any, torch.Tensor] | None = None

    def __repr__(self) -> str:
        return (
            f"PromptSRCObjective(weight_text={self.weight_text}, weight_image={self.weight_image}, "
            f"weight_kl={self.weight_kl}, templates=<{len(self.templates)} templates>)"
        )

    # -- frozen features -----------------------------------------------------------------------------------------

    def frozen_text_features(self, model: PromptModel) -> torch.Tensor:
        """Frozen CLIP text features `(C, d)` of the model's classes, averaged over the template ensemble.

        As in PromptSRC, the unnormalised features of each template are averaged (the L1 and KL terms normalise the
        average). Cached until the model, its classes, the device or the autocast state change.
        """
        if model.classnames is None:
            raise RuntimeError("No classes set: call model.set_classnames([...]) before computing the objective.")
        device = model.device
        autocast = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        key = (
            id(model),
            tuple(model.classnames),
            device,
            model.clip.text_projection.weight.dtype,
            autocast,
            self.templates,
        )
        if self._cache is None or self._cache[0] != key:
            total = None
            # inference_mode(False): the cached tensor must stay usable by a later training step.
            with torch.inference_mode(False), torch.no_grad(), model.disable_adapter():
                for template in self.templates:
                    tokens = tokenize_class_prompts(
                        model.tokenizer, model.classnames, None, template, model.shape.text_positions
                    )
                    features = model.encode_text(tokens).float()
                    total = features if total is None else total + features
            self._cache = (key, total / len(self.templates))
        return self._cache[1]

    @torch.no_grad()
    def frozen_image_features(self, model: PromptModel, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen CLIP image features `(B, d)` (no prompts, no gradients)."""
        with model.disable_adapter():
            return model.encode_image(pixel_values).float()

    # -- loss ----------------------------------------------------------------------------------------------------

    def terms(
        self, model: PromptModel, pixel_values: torch.Tensor, output: PromptModelOutput
    ) -> dict[str, torch.Tensor]:
        """The three unweighted self-regulating terms of one batch, differentiable w.r.t. the prompts.

        Args:
            model (`PromptModel`): the prompted model that produced `output`.
            pixel_values (`torch.FloatTensor` of shape `(batch, channels, height, width)`): the batch.
            output (`PromptModelOutput`): `model(pixel_values)`.

        Returns:
            `dict` with `"text_l1"`, `"image_l1"` and `"kl"` scalars.
        """
        if output.text_embeds is None or output.image_embeds is None:
            raise ValueError(
                f"PromptSRCObjective needs the prompted features, but the {model.config.method!r} learner returned "
                "no text_embeds/image_embeds in its PromptModelOutput."
            )
        frozen_text = self.frozen_text_features(model)
        frozen_image = self.frozen_image_features(model, pixel_values)
        with torch.no_grad():
            zero_shot_logits = model.cosine_logits(frozen_image, frozen_text)
        logits = output.logits.float()
        kl = (
            F.kl_div(
                F.log_softmax(logits, dim=-1),
                F.log_softmax(zero_shot_logits.to(logits.device), dim=-1),
                reduction="sum",
                log_target=True,
            )
            / logits.numel()
        )
        # Methods whose text depends on the image give text (B, C, d): compare each image's class features to the
        # shared frozen ones. Methods that prompt the image per class give images (B, C, d): compare each to the
        # image's frozen feature.
        if output.text_embeds.dim() == 3:
            frozen_text = frozen_text.unsqueeze(0)
        if output.image_embeds.dim() == 3:
            frozen_image = frozen_image.unsqueeze(1)
        return {
            "text_l1": l1_to_frozen(output.text_embeds, frozen_text),
            "image_l1": l1_to_frozen(output.image_embeds, frozen_image),
            "kl": kl,
        }

    def __call__(self, model: PromptModel, pixel_values: torch.Tensor, labels: torch.Tensor) -> ObjectiveOutput:
        # The prompted pass goes through `model`, which may be a DistributedDataParallel wrapper (gradients are
        # synchronised by its forward); the frozen features read the PromptModel inside it.
        output = model(pixel_values)
        ce = F.cross_entropy(output.logits, labels.to(output.logits.device))
        terms = self.terms(getattr(model, "module", model), pixel_values, output)
        weighted = {
            "ce": ce,
            "text_l1": self.weight_text * terms["text_l1"],
            "image_l1": self.weight_image * terms["image_l1"],
            "kl": self.weight_kl * terms["kl"],
        }
        loss = sum(weighted.values())
        return ObjectiveOutput(
            loss=loss, logits=output.logits, parts={name: value.detach() for name, value in weighted.items()}
        )


# ----------------------------------------------------------------------------------------------------------------
# Gaussian prompt aggregation


def _learner(model: nn.Module) -> nn.Module:
    """The module whose parameters are aggregated: a `PromptModel`'s learner, or the module itself."""
    return getattr(model, "learner", model)


class GaussianPromptAggregation:
    """PromptSRC's Gaussian prompt aggregation (GPA): a Gaussian-weighted average of per-epoch prompt snapshots.

    After epoch `e` (0-based, as in `for epoch in range(num_epochs)`) call `update(model, e)`: it adds
    `weight(e) * p` for every learner parameter `p` (float32, on the parameter's device). At the end, `apply(model)`
    loads the weighted sum into the learner. As in PromptSRC, the weights are the normal density
    `N(e + 1; mean, std)` at the 1-based epoch number `e + 1`, normalised to sum to 1 over epochs `1..num_epochs`;
    so `mean=15` puts the peak after the 15th epoch (`epoch == 14`).

    Only raw learner parameters are aggregated (buffers are left as they are). `apply` divides by the sum of the
    weights seen so far, which is 1 after a full run (PromptSRC's case) and keeps a stopped-early run an average
    instead of a shrunken sum.

    Args:
        num_epochs (`int`, defaults to 20): the number of training epochs.
        mean (`float`, defaults to 15.0): the 1-based epoch at the Gaussian's peak.
        std (`float`, defaults to 1.0): the Gaussian's standard deviation in epochs (> 0).
    """

    def __init__(self, num_epochs: int = 20, mean: float = 15.0, std: float = 1.0) -> None:
        self.num_epochs = num_epochs
        self.mean = mean
        self.std = std
        check_int(self, "num_epochs", 1)
        check_float(self, "mean")
        check_float(self, "std", low=0.0, low_inclusive=False)
        self.reset()

    def __repr__(self) -> str:
        return f"GaussianPromptAggregation(num_epochs={self.num_epochs}, mean={self.mean}, std={self.std})"

    def reset(self) -> None:
        """Forgets every snapshot."""
        self._sums: dict[str, torch.Tensor] = {}
        self._seen: list[int] = []
        self._total_weight = 0.0

    @property
    def weights(self) -> torch.Tensor:
        """The normalised weight of each epoch, `(num_epochs,)` float64, index = 0-based epoch."""
        epochs = torch.arange(1, self.num_epochs + 1, dtype=torch.float64)
        # The density's constant factor cancels in the normalisation; subtracting the largest exponent keeps a
        # mean far outside 1..num_epochs from underflowing every weight to 0.
        exponents = -0.5 * ((epochs - self.mean) / self.std) ** 2
        density = torch.exp(exponents - exponents.max())
        return density / density.sum()

    def weight(self, epoch: int) -> float:
        """The normalised weight of a 0-based epoch."""
        self._check_epoch(epoch)
        return float(self.weights[epoch])

    def _check_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < self.num_epochs:
            raise ValueError(
                f"epoch must be a 0-based epoch index in [0, {self.num_epochs - 1}] (num_epochs={self.num_epochs}), "
                f"got {epoch!r}."
            )

    @torch.no_grad()
    def update(self, model: nn.Module, epoch: int) -> None:
        """Adds the learner's current parameters with the weight of `epoch` (0-based); call once per epoch.

        Raises:
            ValueError: for an epoch out of range or already added, or parameters that differ from the earlier
                snapshots (names or shapes).
        """
        self._check_epoch(epoch)
        if epoch in self._seen:
            raise ValueError(f"Epoch {epoch} was already added to the aggregation; call update once per epoch.")
        parameters = dict(_learner(model).named_parameters())
        if self._sums and (
            set(parameters) != set(self._sums)
            or any(parameters[name].shape != self._sums[name].shape for name in parameters)
        ):
            raise ValueError(
                "The learner's parameters changed since the last snapshot (names or shapes); the aggregation needs "
                "the same learner every epoch."
            )
        weight = self.weight(epoch)
        for name, parameter in parameters.items():
            snapshot = weight * parameter.detach().float()
            if name in self._sums:
                total = self._sums[name]
                self._sums[name] = total.to(parameter.device).add_(snapshot)
            else:
                self._sums[name] = snapshot
        self._seen.append(epoch)
        self._total_weight += weight

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Loads the aggregated parameters into the learner (in place, so optimizers and caches see the change).

        Raises:
            RuntimeError: when no epoch was added yet.
        """
        if not self._seen:
            raise RuntimeError("No snapshot to aggregate: call update(model, epoch) after each epoch first.")
        parameters = dict(_learner(model).named_parameters())
        if set(parameters) != set(self._sums):
            raise ValueError(
                f"The learner's parameters {sorted(parameters)} do not match the aggregated {sorted(self._sums)}."
            )
        for name, parameter in parameters.items():
            average = self._sums[name] / self._total_weight
            parameter.copy_(average.to(device=parameter.device, dtype=parameter.dtype))

    @property
    def seen_epochs(self) -> list[int]:
        """The 0-based epochs added so far, in order."""
        return list(self._seen)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the aggregation exactly (for a training checkpoint; `torch.save`-able)."""
        return {
            "num_epochs": self.num_epochs,
            "mean": self.mean,
            "std": self.std,
            "seen_epochs": list(self._seen),
            "total_weight": self._total_weight,
            "sums": {name: tensor.detach().cpu().clone() for name, tensor in self._sums.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores `state_dict()` output; the Gaussian's settings must match this aggregator's.

        Raises:
            ValueError: when `num_epochs`, `mean` or `std` differ (the saved sums were weighted differently).
        """
        saved = (state["num_epochs"], state["mean"], state["std"])
        if saved[0] != self.num_epochs or not (math.isclose(saved[1], self.mean) and math.isclose(saved[2], self.std)):
            raise ValueError(
                f"This aggregation state was saved with (num_epochs, mean, std)={saved}, but this aggregator has "
                f"{(self.num_epochs, self.mean, self.std)}; build it with the same settings."
            )
        # Sums stay where they were loaded (the CPU) and move to each parameter's device at the next update.
        self._sums = {name: tensor.detach().float().clone() for name, tensor in state["sums"].items()}
        self._seen = [int(epoch) for epoch in state["seen_epochs"]]
        self._total_weight = float(state["total_weight"])


__all__ = [
    "PROMPTSRC_TEMPLATES",
    "ObjectiveOutput",
    "Objective",
    "CrossEntropyObjective",
    "PromptSRCObjective",
    "GaussianPromptAggregation",
    "l1_to_frozen",
]
