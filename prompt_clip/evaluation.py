"""Accuracy of a `PromptModel` on a dataset, in the field's settings (closed set, base-to-novel, open world)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .model import PromptModel


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN / (B + N), the field's summary of base and novel accuracy (0 when both are 0)."""
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


@dataclass
class Predictions:
    """Predicted and true labels of a test set, in the label space of the classes that were set.

    Args:
        predicted (`torch.LongTensor` of shape `(n,)`): argmax of the logits.
        labels (`torch.LongTensor` of shape `(n,)`): the true labels.
    """

    predicted: torch.Tensor
    labels: torch.Tensor

    def accuracy(self, mask: torch.Tensor | None = None) -> float:
        """Top-1 accuracy in percent, over all images or those selected by a boolean `mask`."""
        hits = self.predicted == self.labels
        if mask is not None:
            hits = hits[mask]
        if hits.numel() == 0:
            raise ValueError("No test image to measure accuracy on (empty test split or empty selection).")
        return 100.0 * hits.float().mean().item()


@torch.no_grad()
def predict(
    model: PromptModel,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 100,
    mixed_precision: str = "no",
    num_workers: int = 0,
    zero_shot: bool = False,
    progress: bool = False,
) -> Predictions:
    """Classifies every image of `dataset` among the model's current classes.

    Args:
        model (`PromptModel`): a model with its classes set (`set_classnames`).
        dataset (`prompt_clip.data.PromptDataset`): test images (test-time pre-processing).
        batch_size (`int`, defaults to 100): the field's test batch.
        mixed_precision (`str`, defaults to `"no"`): `"bf16"`/`"fp16"` runs under autocast.
        num_workers (`int`, defaults to 0): data-loading worker processes.
        zero_shot (`bool`, defaults to `False`): evaluate the CLIP without prompts (the config's template).
        progress (`bool`, defaults to `False`): show a progress bar.
    """
    from tqdm.auto import tqdm

    if model.classnames is None:
        raise ValueError("The model has no classes: call model.set_classnames(...) before evaluating.")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    was_training = model.training
    model.eval()
    predicted, labels = [], []
    try:
        adapter_off = model.disable_adapter() if zero_shot else contextlib.nullcontext()
        with adapter_off, torch.autocast(model.device.type, dtype=dtype, enabled=dtype is not None):
            for batch in tqdm(loader, desc="eval", disable=not progress, dynamic_ncols=True):
                logits = model(batch["pixel_values"].to(model.device)).logits
                predicted.append(logits.argmax(-1).cpu())
                labels.append(batch["labels"].cpu())
    finally:
        model.train(was_training)
    if not labels:
        raise ValueError("The test dataset is empty; check the split file.")
    return Predictions(torch.cat(predicted), torch.cat(labels).long())


def evaluate(
    model: PromptModel, dataset: torch.utils.data.Dataset, classnames: Sequence[str] | None = None, **kwargs: Any
) -> float:
    """Top-1 accuracy (%) on `dataset`, classifying among `classnames` (or the classes already set).

    Args:
        model (`PromptModel`): the prompted model.
        dataset (`prompt_clip.data.PromptDataset`): test images whose labels index `classnames`.
        classnames (`Sequence[str]`, *optional*): sets the model's classes first.
        **kwargs: passed to `predict` (batch_size, mixed_precision, zero_shot, ...).
    """
    if classnames is not None:
        model.set_classnames(list(classnames))
    return predict(model, dataset, **kwargs).accuracy()


def open_world_metrics(predictions: Predictions, base_labels: Sequence[int]) -> dict[str, float]:
    """BMIP's open-world numbers from predictions over the union of base and novel classes.

    Args:
        predictions (`Predictions`): every test image classified among all classes (joint label space).
        base_labels (`Sequence[int]`): the labels (in that joint space) of the base classes.

    Returns:
        `dict` with `"all"` (accuracy over every image), `"base"` and `"novel"` (accuracy of base/novel images,
        still classified among all classes) and `"hm"` (harmonic mean of the two).
    """
    is_base = torch.isin(predictions.labels, torch.tensor(list(base_labels), dtype=torch.long))
    base, novel = predictions.accuracy(is_base), predictions.accuracy(~is_base)
    return {"all": predictions.accuracy(), "base": base, "novel": novel, "hm": harmonic_mean(base, novel)}


__all__ = ["harmonic_mean", "Predictions", "predict", "evaluate", "open_world_metrics"]
