"""Real grey-level images available offline: Fashion-MNIST (Debian package) and scikit-learn's digits.

Each source is split once, deterministically, into a PRETRAINING part (what the small CLIP is trained on) and a
held-out DOWNSTREAM part that pretraining never sees (the prompt-learning tasks of `tasks.py` are built from it):

- Fashion-MNIST: pretraining = the 60,000 training images, downstream = the 10,000 test images.
- digits: for every class, a fixed permutation of its ~180 images; the first 60% pretrain, the rest is downstream.

Images are returned as `uint8` arrays of shape `(N, H, W)` (0 = black background), labels as `int64`.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Where Debian's `dataset-fashion-mnist` installs the idx files.
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
#: Environment variable that points to another folder holding the four Fashion-MNIST idx files.
FASHION_MNIST_ENV = "PROMPT_CLIP_FASHION_MNIST"

FASHION_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
DIGIT_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# idx type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class SourceData:
    """Labelled grey-level images of one source.

    Args:
        name (`str`):
            `"fashion"` or `"digits"` (or any name for injected data).
        images (`np.ndarray`):
            `uint8` array of shape `(N, H, W)`, 0 = black.
        labels (`np.ndarray`):
            `int64` array of shape `(N,)` with values in `0..len(classnames) - 1`.
        classnames (`tuple[str, ...]`):
            Natural class names; the index is the label.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    classnames: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError(
                f"{self.name}: images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{self.name}: {len(self.labels)} labels for {len(self.images)} images")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classnames)):
            raise ValueError(f"{self.name}: labels outside 0..{len(self.classnames) - 1}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> SourceData:
        """The images at `indices` (in that order)."""
        return SourceData(self.name, self.images[indices], self.labels[indices], self.classnames)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an idx file (the MNIST format), gzip-compressed or not.

    Args:
        path (`str` or `os.PathLike`):
            The file; a name ending in `.gz` is decompressed.

    Returns:
        `np.ndarray`: the array with the file's shape, in native byte order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number {data[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(n) for n in np.frombuffer(data[4:header], dtype=">u4"))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: {len(data)} bytes, but its header {shape} announces {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def fashion_mnist_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder with Fashion-MNIST's idx files: `root`, else `$PROMPT_CLIP_FASHION_MNIST`, else Debian's folder.

    Raises:
        `FileNotFoundError`: with the install command when the files are missing.
    """
    folder = Path(root or os.environ.get(FASHION_MNIST_ENV) or DEFAULT_FASHION_MNIST_DIR)
    missing = [name for split in ("train", "t10k") for name in _fashion_files(split) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST was not found in {folder} (missing {', '.join(missing)}). On Debian/Ubuntu install it "
            f"with `apt-get install dataset-fashion-mnist`, or point ${FASHION_MNIST_ENV} (or root=...) to a folder "
            "holding the four *-ubyte.gz files."
        )
    return folder


def _fashion_files(split: str) -> tuple[str, str]:
    return f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz"


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> SourceData:
    """Fashion-MNIST's `"train"` (60,000) or `"test"` (10,000) images, 28x28.

    Args:
        split (`str`):
            `"train"` or `"test"`.
        root (`str` or `os.PathLike`, *optional*):
            Folder of the idx files; see `fashion_mnist_dir`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = fashion_mnist_dir(root)
    image_file, label_file = _fashion_files("train" if split == "train" else "t10k")
    images, labels = read_idx(folder / image_file), read_idx(folder / label_file)
    return SourceData("fashion", images.astype(np.uint8), labels.astype(np.int64), FASHION_CLASSES)


def load_digits() -> SourceData:
    """scikit-learn's 1,797 digits, 8x8, their 17 grey levels (0..16) stretched to 0..255.

    Raises:
        `ImportError`: with the install command when scikit-learn is missing.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as error:
        raise ImportError(
            "The digits source needs scikit-learn: `pip install scikit-learn` (or install the project's `demo` extra)."
        ) from error
    bunch = sklearn_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return SourceData("digits", images, bunch.target.astype(np.int64), DIGIT_CLASSES)


def per_class_split(data: SourceData, first_fraction: float, seed: int = 0) -> tuple[SourceData, SourceData]:
    """Splits every class by a fixed permutation: the first `first_fraction` of each class, and the rest.

    Args:
        data (`SourceData`): the images to split.
        first_fraction (`float`): share of each class in the first part (rounded to the nearest image).
        seed (`int`, *optional*, defaults to 0): seed of the permutation.

    Returns:
        `tuple[SourceData, SourceData]`: both parts, each ordered by class, then by the permutation.
    """
    rng = np.random.default_rng(seed)
    first, rest = [], []
    for label in range(len(data.classnames)):
        members = rng.permutation(np.flatnonzero(data.labels == label))
        cut = int(round(first_fraction * len(members)))
        first.append(members[:cut])
        rest.append(members[cut:])
    return data.subset(np.concatenate(first)), data.subset(np.concatenate(rest))


#: Share of each digit class used for pretraining; the rest is the downstream part.
DIGITS_PRETRAIN_FRACTION = 0.6


def pretraining_sources(fashion_root: str | os.PathLike | None = None) -> list[SourceData]:
    """The pretraining part of both sources: Fashion-MNIST train, and 60% of each digit class."""
    digits_pretrain, _ = per_class_split(load_digits(), DIGITS_PRETRAIN_FRACTION)
    return [load_fashion_mnist("train", fashion_root), digits_pretrain]


def downstream_sources(fashion_root: str | os.PathLike | None = None) -> list[SourceData]:
    """The held-out part of both sources, never seen in pretraining: Fashion-MNIST test, and 40% of each digit."""
    _, digits_downstream = per_class_split(load_digits(), DIGITS_PRETRAIN_FRACTION)
    return [load_fashion_mnist("test", fashion_root), digits_downstream]
