"""CLIP's image pre-processing in plain Pillow + torch (no torchvision), with all randomness from an explicit RNG."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ._pil import require_pil

if TYPE_CHECKING:
    from PIL.Image import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageTransform:
    """Turns a PIL image into a normalised `[3, S, S]` float tensor, the way the field pre-processes CLIP inputs.

    Train: random resized crop (area share in `scale`, log-uniform aspect ratio in `ratio`, 10 tries then a centre
    crop fallback) resized to `S x S` with bicubic filtering, random horizontal flip with probability 0.5,
    normalisation. Test: resize the short side to `S` (bicubic), centre crop `S x S`, normalisation. Images are
    converted to RGB first.

    Args:
        image_size (`int`):
            Output side `S`, the vision model's input size.
        mean, std (`Sequence[float]`):
            Per-channel normalisation statistics.
        train (`bool`):
            Training augmentation (`True`) or deterministic test pre-processing (`False`).
        scale (`tuple[float, float]`, *optional*, defaults to `(0.08, 1.0)`):
            Range of the crop's area as a share of the image area (train only).
        ratio (`tuple[float, float]`, *optional*, defaults to `(3/4, 4/3)`):
            Range of the crop's aspect ratio, width / height (train only).
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        train: bool = False,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ):
        if int(image_size) < 1:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each (RGB) with std > 0; got {mean}, {std}.")
        if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"Need 0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1]; got {scale}, {ratio}.")
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.train = bool(train)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self._mean = torch.tensor(self.mean).view(3, 1, 1)
        self._std = torch.tensor(self.std).view(3, 1, 1)

    @classmethod
    def from_processor(cls, image_processor: Any, train: bool, **kwargs) -> ImageTransform:
        """Takes size and statistics from a transformers `CLIPImageProcessor` (or any processor with `crop_size` or
        `size`, `image_mean` and `image_std`). Does not need Pillow.

        Args:
            image_processor: the model's image processor.
            train (`bool`): training augmentation or test pre-processing.
            kwargs: forwarded to `ImageTransform` (e.g. `scale`).
        """
        size = None
        if getattr(image_processor, "do_center_crop", True):
            size = _side(getattr(image_processor, "crop_size", None))
        size = size or _side(getattr(image_processor, "size", None))
        if size is None:
            raise ValueError(
                f"Cannot read the image size from {type(image_processor).__name__}: it has no usable crop_size or "
                "size. Fix: build the transform with ImageTransform(image_size, mean, std, train)."
            )
        mean = getattr(image_processor, "image_mean", None) or OPENAI_CLIP_MEAN
        std = getattr(image_processor, "image_std", None) or OPENAI_CLIP_STD
        return cls(size, mean, std, train=train, **kwargs)

    @classmethod
    def from_clip_config(cls, clip_config: Any, train: bool, **kwargs) -> ImageTransform:
        """Image size from `clip_config.vision_config.image_size` (or a vision config itself), OpenAI CLIP's
        statistics."""
        vision_config = getattr(clip_config, "vision_config", clip_config)
        return cls(vision_config.image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, train=train, **kwargs)

    @classmethod
    def for_model(cls, clip_config: Any, image_processor: Any = None, *, train: bool, **kwargs: Any) -> ImageTransform:
        """From the model's image processor when there is one (`from_processor`), else from its config
        (`from_clip_config`).

        Args:
            clip_config: the CLIP's config (`clip.config`).
            image_processor (*optional*): the model's image processor.
            train (`bool`): training augmentation or test pre-processing.
            kwargs: forwarded to `ImageTransform` (e.g. `scale`).
        """
        if image_processor is not None:
            return cls.from_processor(image_processor, train, **kwargs)
        return cls.from_clip_config(clip_config, train, **kwargs)

    def __call__(self, image: Image, rng: random.Random | None = None) -> torch.Tensor:
        """Pre-processes one image.

        Args:
            image (`PIL.Image.Image`): the image, in any mode.
            rng (`random.Random`, *optional*): source of all augmentation randomness; a fresh unseeded one when
                `None`. Test pre-processing uses no randomness.

        Returns:
            `torch.FloatTensor` of shape `[3, image_size, image_size]`.
        """
        pil_image = require_pil()
        image = image.convert("RGB")
        size = self.image_size
        if self.train:
            rng = rng if rng is not None else random.Random()
            top, left, height, width = self.crop_box(image.width, image.height, rng)
            image = image.resize(
                (size, size), pil_image.Resampling.BICUBIC, box=(left, top, left + width, top + height)
            )
            if rng.random() < 0.5:
                image = image.transpose(pil_image.Transpose.FLIP_LEFT_RIGHT)
        else:
            image = self._resize_short_side(image, pil_image)
            left = int(round((image.width - size) / 2))
            top = int(round((image.height - size) / 2))
            image = image.crop((left, top, left + size, top + size))
        return self.normalize(image)

    def crop_box(self, width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
        """The random resized crop's box `(top, left, height, width)` for an image of `width x height`.

        Tries 10 times to find a box whose area share is uniform in `scale` and whose aspect ratio is log-uniform in
        `ratio` and that fits the image; otherwise falls back to the largest centred box with a ratio in `ratio`.
        """
        area = width * height
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(log_low, log_high))
            crop_width = int(round(math.sqrt(target_area * aspect)))
            crop_height = int(round(math.sqrt(target_area / aspect)))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                top = rng.randint(0, height - crop_height)
                left = rng.randint(0, width - crop_width)
                return top, left, crop_height, crop_width
        image_ratio = width / height
        if image_ratio < self.ratio[0]:
            crop_width, crop_height = width, int(round(width / self.ratio[0]))
        elif image_ratio > self.ratio[1]:
            crop_width, crop_height = int(round(height * self.ratio[1])), height
        else:
            crop_width, crop_height = width, height
        return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width

    def normalize(self, image: Image) -> torch.Tensor:
        """RGB PIL image -> `[3, H, W]` float tensor in [0, 1], then standardised with `mean` and `std`."""
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        pixels = data.view(image.height, image.width, 3).permute(2, 0, 1).float().div_(255)
        return pixels.sub_(self._mean).div_(self._std)

    def _resize_short_side(self, image: Image, pil_image: Any) -> Image:
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        # The long side is truncated, not rounded, as in the reference pre-processing of CLIP.
        new_short, new_long = self.image_size, int(self.image_size * long / short)
        new_size = (new_short, new_long) if width <= height else (new_long, new_short)
        if new_size == image.size:
            return image
        return image.resize(new_size, pil_image.Resampling.BICUBIC)

    def __repr__(self) -> str:
        extra = f", scale={self.scale}, ratio={self.ratio}" if self.train else ""
        stats = f"mean={self.mean}, std={self.std}"
        return f"ImageTransform(image_size={self.image_size}, train={self.train}, {stats}{extra})"


def _side(size: Any) -> int | None:
    """The square side from a transformers size spec: an int, or a dict/SizeDict with height/width or
    shortest_edge."""
    if size is None:
        return None
    if isinstance(size, int):
        return size
    get = size.get if hasattr(size, "get") else lambda key: getattr(size, key, None)
    height, width = get("height"), get("width")
    if height and width:
        if height != width:
            raise ValueError(f"Only square inputs are supported, the processor asks for {height}x{width}.")
        return int(height)
    shortest = get("shortest_edge")
    return int(shortest) if shortest else None
