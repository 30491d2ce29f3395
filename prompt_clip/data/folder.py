"""`load_image_folder`: any folder of class sub-folders as a dataset, with or without train/val/test folders."""

from __future__ import annotations

import hashlib
import math
import os

from .errors import DatasetError
from .files import list_images, list_subfolders
from .splits import SPLIT_NAMES, DatasetSplits
from .validation import MAX_LISTED, Entry, build_splits


def load_image_folder(
    root: str | os.PathLike,
    name: str | None = None,
    template: str = "a photo of a {}.",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 1,
) -> DatasetSplits:
    """Reads a generic image-classification folder.

    Two layouts are understood:

    - `root/{train,val,test}/<class>/<image>`: the splits as given. The classes are the sub-folders of `train`
      (sorted; label = position); a val/test class folder that is not a train class is an error. A missing `val` or
      `test` folder is carved out of `train` with `val_fraction` / `test_fraction`.
    - `root/<class>/<image>`: every class is split into train / val / test with `val_fraction` and `test_fraction`.

    Carving is per class, deterministic and machine-independent: a class's images are ranked by the SHA-256 of
    `"<seed>|<class folder>/<file name>"`; the first `round(n * test_fraction)` go to test, the next
    `round(n * val_fraction)` to val, the rest (always at least one) to train. Class names are the folder names
    unchanged; underscores are kept (the prompt model cleans them).

    Args:
        root (`str` or `os.PathLike`): the dataset folder.
        name (`str`, *optional*): dataset name; defaults to the folder's name.
        template (`str`, *optional*): zero-shot template with one `{}`.
        val_fraction (`float`, *optional*, defaults to 0.1): share of each class carved out for val.
        test_fraction (`float`, *optional*, defaults to 0.2): share of each class carved out for test.
        seed (`int`, *optional*, defaults to 1): seed of the carving.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise DatasetError(f"Image folder {root} does not exist. Fix: pass the folder holding the class folders.")
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"Need 0 <= val_fraction, test_fraction and a sum < 1; got {val_fraction}, {test_fraction}.")
    if template.count("{}") != 1:
        raise ValueError(f"Template {template!r} must contain exactly one '{{}}'.")
    given = {split: os.path.join(root, split) for split in SPLIT_NAMES if os.path.isdir(os.path.join(root, split))}
    if given and "train" not in given:
        raise DatasetError(
            f"{root} has {sorted(given)} folders but no 'train' folder, which defines the classes. "
            "Fix: add root/train/<class>/<image>, or use the flat layout root/<class>/<image>."
        )
    train_dir = given.get("train", root)
    classes = list_subfolders(train_dir)
    if not classes:
        raise DatasetError(f"{train_dir} has no class folders. Fix: put the images in {train_dir}/<class>/<image>.")
    label_of = {classname: label for label, classname in enumerate(classes)}

    images = {"train": _list_classes(train_dir, classes, require_images=True)}
    for split in ("val", "test"):
        if split in given:
            present = list_subfolders(given[split])
            unknown = [c for c in present if c not in label_of]
            if unknown:
                raise DatasetError(
                    f"{given[split]}: class folders {unknown[:MAX_LISTED]} are unknown classes: there is no such "
                    f"folder in {train_dir}. Fix: rename or remove them, or add their training images."
                )
            images[split] = _list_classes(given[split], present)
    carve = {
        split: fraction for split, fraction in (("test", test_fraction), ("val", val_fraction)) if split not in given
    }
    if carve:
        images.update(_carve(images["train"], carve, seed))

    entries = {
        split: [
            Entry(os.path.dirname(path), "image", index, os.path.basename(path), path, label_of[c], c)
            for c, paths in per_class.items()
            for index, path in enumerate(paths)
        ]
        for split, per_class in images.items()
    }
    return build_splits(
        name or os.path.basename(root),
        template,
        entries,
        classnames=classes,
        class_source=train_dir,
        check_files=False,
    )


def _list_classes(folder: str, classes: list[str], require_images: bool = False) -> dict[str, list[str]]:
    """Class -> sorted absolute image paths."""
    per_class = {}
    for classname in classes:
        directory = os.path.join(folder, classname)
        per_class[classname] = [os.path.join(directory, image) for image in list_images(directory)]
        if require_images and not per_class[classname]:
            raise DatasetError(
                f"{directory} holds no images (known extensions: .jpg, .png, ...), so class {classname!r} could not "
                "be learned. Fix: add its images or remove the folder."
            )
    return per_class


def _carve(train: dict[str, list[str]], fractions: dict[str, float], seed: int) -> dict[str, dict[str, list[str]]]:
    """Moves a deterministic share of each class from `train` (in place) to new splits; see `load_image_folder`."""
    carved: dict[str, dict[str, list[str]]] = {split: {} for split in fractions}
    for classname, paths in train.items():
        ranked = sorted(paths, key=lambda p: _rank_key(seed, classname, p))
        remaining = len(ranked)
        taken: set[str] = set()
        for split in ("test", "val"):
            if split not in fractions:
                continue
            count = min(math.floor(len(paths) * fractions[split] + 0.5), remaining - 1)  # keep one for train
            chosen = ranked[len(taken) : len(taken) + max(count, 0)]
            carved[split][classname] = sorted(chosen)
            taken.update(chosen)
            remaining -= len(chosen)
        train[classname] = [p for p in paths if p not in taken]
    return carved


def _rank_key(seed: int, classname: str, path: str) -> str:
    # Only the class folder and the file name enter the hash, so the split does not depend on where root lies.
    return hashlib.sha256(f"{seed}|{classname}/{os.path.basename(path)}".encode()).hexdigest()
