"""Turning the grey source images into the small CLIP's 32x32 RGB inputs, and the pretraining augmentation.

Every image is first resized to 28x28 (a no-op for Fashion-MNIST; digits' 8x8 are upsampled bilinearly), then
padded with black to 32x32, so both sources share the same framing, and the grey level is copied to R, G and B.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 32
CONTENT_SIZE = 28
#: OpenAI CLIP's normalisation (the values of `transformers.image_utils.OPENAI_CLIP_MEAN/STD`).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_canvas(images: np.ndarray | torch.Tensor, size: int = IMAGE_SIZE, content: int = CONTENT_SIZE) -> torch.Tensor:
    """Grey `uint8` images `(N, H, W)` -> RGB `uint8` images `(N, 3, size, size)`, content resized to `content`.

    Args:
        images (`np.ndarray` or `torch.Tensor`): `uint8` grey images, 0 = black.
        size (`int`, *optional*, defaults to 32): side of the output canvas.
        content (`int`, *optional*, defaults to 28): side of the resized image, centred on the black canvas.
    """
    grey = torch.as_tensor(np.asarray(images)).float().unsqueeze(1)
    if grey.shape[-2:] != (content, content):
        grey = F.interpolate(grey, size=(content, content), mode="bilinear", align_corners=False)
    before = (size - content) // 2
    grey = F.pad(grey, (before, size - content - before, before, size - content - before))
    return grey.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """RGB images in `[0, 1]` (float) or `0..255` (`uint8`), shape `(N, 3, H, W)` -> CLIP-normalised floats."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    mean = torch.tensor(CLIP_MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def augment(
    images: torch.Tensor,
    flippable: torch.Tensor,
    generator: torch.Generator,
    *,
    max_rotation: float = 10.0,
    scale: tuple[float, float] = (0.85, 1.15),
    max_shift: float = 3.0,
    gain: tuple[float, float] = (0.7, 1.0),
    tint: float = 0.2,
) -> torch.Tensor:
    """Mild random geometry and colour for pretraining; returns floats in `[0, 1]`.

    The geometry (rotation, zoom, shift, and a horizontal flip where `flippable`, i.e. clothes but not digits)
    teaches invariance to framing. The colour (an overall gain and a small per-channel tint) keeps the model from
    relying on exact grey levels; backgrounds stay black, so inverted or strongly coloured images remain unseen.

    Args:
        images (`torch.Tensor`): `uint8` RGB `(B, 3, H, W)`.
        flippable (`torch.Tensor`): `bool` `(B,)`, whether each image may be mirrored.
        generator (`torch.Generator`): the only source of randomness (determinism).
        max_rotation (`float`): degrees, uniform in `[-max_rotation, max_rotation]`.
        scale (`tuple[float, float]`): zoom range.
        max_shift (`float`): pixels, uniform in each direction.
        gain (`tuple[float, float]`): range of the brightness factor.
        tint (`float`): each channel is further scaled by a factor in `[1 - tint, 1]`.
    """
    batch, _, height, width = images.shape

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    angle = uniform(-max_rotation, max_rotation, batch) * (math.pi / 180)
    zoom = uniform(*scale, batch)
    mirror = torch.where(flippable & (torch.rand(batch, generator=generator) < 0.5), -1.0, 1.0)
    shift = uniform(-max_shift, max_shift, batch, 2) * torch.tensor([2.0 / width, 2.0 / height])
    # affine_grid maps output coordinates to input ones, so the inverse zoom magnifies by `zoom`.
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos * mirror, -sin, shift[:, 0]], 1), torch.stack([sin * mirror, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, [batch, 3, height, width], align_corners=False)
    out = F.grid_sample(images.float() / 255.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    colour = uniform(*gain, batch, 1, 1, 1) * uniform(1.0 - tint, 1.0, batch, 3, 1, 1)
    return (out * colour).clamp(0, 1)
