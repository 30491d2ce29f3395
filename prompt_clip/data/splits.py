"""The containers every loader returns: one `Sample` per image, grouped into `DatasetSplits`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    Args:
        path (`str`):
            Absolute path of the image file, or an opaque key understood by `DatasetSplits.image_loader` (datasets
            that do not live on disk as files, e.g. Hugging Face datasets).
        label (`int`):
            Class index, in `0..num_classes - 1`.
        classname (`str`):
            Human-readable class name, i.e. `DatasetSplits.classnames[label]`.
    """

    path: str
    label: int
    classname: str


@dataclass
class DatasetSplits:
    """A classification dataset split into train / val / test.

    Args:
        name (`str`):
            Dataset name, e.g. `"EuroSAT"`. Used in few-shot seeds and cache paths.
        classnames (`list[str]`):
            Class names; the index in this list is the label.
        train, val, test (`list[Sample]`):
            The three splits. Any of them may be empty (e.g. the ImageNet variants only have a test split).
        template (`str`):
            Zero-shot prompt template with exactly one `{}`, e.g. `"a photo of a {}."`.
        image_loader (`Callable[[Sample], PIL.Image.Image]`, *optional*):
            Returns the image of a sample. `None` means "open `sample.path` from disk".
    """

    name: str
    classnames: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    template: str = "a photo of a {}."
    image_loader: Callable[[Sample], Image] | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classnames)

    def split(self, name: str) -> list[Sample]:
        """Returns the split called `name` (`"train"`, `"val"` or `"test"`)."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLIT_NAMES}.")
        return getattr(self, name)


SPLIT_NAMES = ("train", "val", "test")
