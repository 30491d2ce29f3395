"""Small file-system helpers shared by the readers: image listings, fast existence checks, `classnames.txt`."""

from __future__ import annotations

import os
from collections.abc import Iterable

from .errors import DatasetError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)


def is_image_file(name: str) -> bool:
    """Whether a file name looks like an image (by extension, case-insensitive); hidden files never do."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_subfolders(folder: str) -> list[str]:
    """Sorted names of the non-hidden sub-folders of `folder` (files such as a README are skipped)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def list_images(folder: str) -> list[str]:
    """Sorted names of the image files directly inside `folder`."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if is_image_file(e.name) and e.is_file())


def find_missing(paths: Iterable[str]) -> list[int]:
    """Positions of the paths in `paths` that do not exist.

    Lists each directory once instead of calling `stat` per file: a CoOp split file lists up to ~100k images spread
    over a few hundred folders, and on network file systems one `listdir` per folder is much faster than 100k stats.
    A name absent from the listing is re-checked with `os.path.exists`, which keeps case-insensitive file systems and
    unusual path spellings correct.
    """
    listings: dict[str, frozenset[str]] = {}
    missing = []
    for position, path in enumerate(paths):
        directory, base = os.path.split(path)
        names = listings.get(directory)
        if names is None:
            try:
                names = frozenset(os.listdir(directory or "."))
            except OSError:
                names = frozenset()
            listings[directory] = names
        if base not in names and not os.path.exists(path):
            missing.append(position)
    return missing


def read_classnames_txt(path: str) -> dict[str, str]:
    """Reads ImageNet's `classnames.txt`: one "wnid classname" line per class (the name may contain spaces).

    Returns:
        `dict[str, str]`: WordNet id -> class name, in file order.
    """
    if not os.path.isfile(path):
        raise DatasetError(
            f"ImageNet class names not found: expected {path}. The ImageNet datasets (and its variants) take their "
            "class names from this file, one 'wnid classname' line per class. Fix: put CoOp's classnames.txt at "
            "that path (see CoOp's DATASETS.md), or pass the data root that holds 'imagenet/classnames.txt'."
        )
    classnames: dict[str, str] = {}
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            line = line.strip()
            if not line:
                continue
            wnid, _, name = line.partition(" ")
            name = name.strip()
            if not name:
                raise DatasetError(
                    f"{path}: line {number} {line!r} is malformed: expected 'wnid classname' (e.g. "
                    "'n01440764 tench'). Fix: correct or remove this line."
                )
            if wnid in classnames:
                raise DatasetError(
                    f"{path}: line {number} {line!r} repeats WordNet id {wnid!r}. Fix: keep one line per class."
                )
            classnames[wnid] = name
    if not classnames:
        raise DatasetError(f"{path} is empty. Fix: put one 'wnid classname' line per ImageNet class in it.")
    return classnames
