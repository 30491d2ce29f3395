"""Zero-shot classification with a plain `transformers.CLIPModel` (no prompt learning involved)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .imaging import normalize

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPTokenizer

DEFAULT_TEMPLATE = "a photo of a {}."


def load_small_clip(model_dir: str | os.PathLike) -> tuple[CLIPModel, CLIPTokenizer]:
    """Loads a saved small CLIP and its tokenizer (`CLIPModel`, `CLIPTokenizer`), in eval mode."""
    from transformers import CLIPModel, CLIPTokenizer

    clip = CLIPModel.from_pretrained(str(model_dir)).eval()
    return clip, CLIPTokenizer.from_pretrained(str(model_dir))


def _pooled(output: object) -> torch.Tensor:
    # transformers < 5 returns the projected features, >= 5 an output whose pooler_output holds them.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def class_text_features(
    clip: CLIPModel,
    tokenizer: CLIPTokenizer,
    classnames: Sequence[str],
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
) -> torch.Tensor:
    """Normalised text features `(C, D)`: per class, the mean of its normalised template features, renormalised."""
    prompts = [template.format(name) for name in classnames for template in templates]
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    features = _pooled(clip.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
    features = torch.nn.functional.normalize(features, dim=-1).view(len(classnames), len(templates), -1).mean(1)
    return torch.nn.functional.normalize(features, dim=-1)


@torch.no_grad()
def image_features(clip: CLIPModel, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Normalised image features `(N, D)` of `uint8` RGB images `(N, 3, H, W)` (already at the model's size)."""
    chunks = [
        _pooled(clip.get_image_features(pixel_values=normalize(images[start : start + batch_size])))
        for start in range(0, len(images), batch_size)
    ]
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)


def zero_shot_accuracy(
    clip: CLIPModel,
    tokenizer: CLIPTokenizer,
    images: torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    classnames: Sequence[str],
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
) -> float:
    """Top-1 accuracy (in [0, 1]) of zero-shot classification of `images` among `classnames`.

    Args:
        clip (`CLIPModel`): the model, in eval mode.
        tokenizer (`CLIPTokenizer`): its tokenizer.
        images (`torch.Tensor`): `uint8` RGB `(N, 3, H, W)` at the model's input size.
        labels (`np.ndarray` or `torch.Tensor`): `(N,)` indices into `classnames`.
        classnames (`Sequence[str]`): class names, in label order.
        templates (`Sequence[str]`): prompt templates with one `{}`; several are ensembled.
    """
    text = class_text_features(clip, tokenizer, classnames, templates)
    predictions = (image_features(clip, images) @ text.T).argmax(-1)
    return float((predictions == torch.as_tensor(np.asarray(labels))).float().mean())
