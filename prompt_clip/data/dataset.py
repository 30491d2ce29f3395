"""Torch glue: a map-style dataset whose augmentation is driven by a seed per item, and the sampler that supplies
those seeds, so that any epoch's batches (and any worker's items) can be reproduced exactly and on their own."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset, Sampler

from ._pil import require_pil
from .errors import DatasetError
from .splits import Sample
from .transforms import ImageTransform

if TYPE_CHECKING:
    from PIL.Image import Image

_MASK64 = (1 << 64) - 1


def derive_seed(*values: int) -> int:
    """A 63-bit seed mixed from integers with SplitMix64: the same on every machine and Python version, and
    different inputs give unrelated seeds (unlike `seed + epoch`, where seed 1 epoch 1 equals seed 2 epoch 0)."""
    state = 0
    for value in values:
        state = ((state ^ (int(value) & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 31
    return state >> 1


class PromptDataset(Dataset):
    """Map-style dataset of `{"pixel_values": FloatTensor[3, S, S], "labels": int}` items.

    Args:
        samples (`Sequence[Sample]`):
            The samples, e.g. `splits.train`.
        transform (`ImageTransform`):
            Pre-processing; its randomness comes from the item's seed.
        image_loader (`Callable[[Sample], PIL.Image.Image]`, *optional*):
            Loads a sample's image; `None` opens `sample.path` from disk. Pass `splits.image_loader`.

    Items are fetched with `dataset[(index, aug_seed)]` (what `EpochSampler` yields): the augmentation uses
    `random.Random(aug_seed)`, so it depends on neither the worker nor the order of fetching. `dataset[index]` uses
    `random.Random(index)`, a fixed augmentation per sample.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: ImageTransform,
        image_loader: Callable[[Sample], Image] | None = None,
    ):
        self.samples = list(samples)
        self.transform = transform
        self.image_loader = image_loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        if isinstance(item, tuple):
            index, aug_seed = item
        else:
            index = aug_seed = item
        sample = self.samples[int(index)]
        rng = random.Random(int(aug_seed))
        return {"pixel_values": self.transform(self.load_image(sample), rng), "labels": sample.label}

    def load_image(self, sample: Sample) -> Image:
        """The sample's image, fully decoded; unreadable or missing images raise a `DatasetError` naming the path."""
        try:
            if self.image_loader is not None:
                return self.image_loader(sample)
            pil_image = require_pil()
            with pil_image.open(sample.path) as image:
                image.load()  # decode now, while the file is open, so a truncated file fails here
                return image.convert("RGB")
        except (OSError, ValueError, KeyError, IndexError) as error:
            raise DatasetError(
                f"Cannot read image {sample.path} (label {sample.label} {sample.classname!r}): {error}. Fix: restore "
                "or replace the file, or remove it from the split and load the dataset again."
            ) from error


class EpochSampler(Sampler):
    """Yields `(index, aug_seed)` for every sample once per epoch, reproducibly.

    The order of epoch `e` is a permutation drawn from `torch.Generator().manual_seed(derive_seed(seed, e))`, and
    the augmentation seed at position `p` is `derive_seed(seed, e, p)`. Both depend only on `(seed, epoch)`, so the
    batches of any epoch can be rebuilt without running the earlier ones, which makes resuming exact.

    Args:
        num_samples (`int`): dataset length.
        seed (`int`): run seed.
        shuffle (`bool`, *optional*, defaults to `True`): permute the samples each epoch; `False` keeps them in order
            (augmentation seeds still change with the epoch).
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Selects the epoch to iterate; `start` skips its first `start` positions (resuming mid-epoch without
        loading the skipped images), in which case `len()` is `num_samples - start`."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start must be in 0..{self.num_samples}, got {start}.")
        self.epoch = int(epoch)
        self.start = int(start)

    def order(self, epoch: int) -> list[int]:
        """The sample indices of `epoch`, in iteration order."""
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.order(self.epoch)
        for position in range(self.start, self.num_samples):
            yield order[position], derive_seed(self.seed, self.epoch, position)

    def __len__(self) -> int:
        return self.num_samples - self.start
