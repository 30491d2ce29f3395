"""`load_dataset`: reads a catalogued dataset from CoOp's on-disk layout and validates it before returning."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from .catalog import DatasetInfo, get_dataset_info
from .errors import DatasetError
from .imagenet import read_imagenet, read_imagenet_variant
from .splits import SPLIT_NAMES, DatasetSplits
from .validation import Entry, build_splits

Reader = Callable[[DatasetInfo, str, bool], DatasetSplits]


def load_dataset(name: str | DatasetInfo, root: str | os.PathLike, *, check_num_classes: bool = True) -> DatasetSplits:
    """Loads a dataset of the catalog from CoOp's DATA root, fully validated.

    Validation happens here, before any training: the split file exists and every entry is well formed, every
    val/test class is a known train class with the same name, labels are 0..C-1, the class count matches the
    catalog, and every image exists. Errors are `DatasetError`s naming the file, the entry and the fix.

    Args:
        name (`str` or `DatasetInfo`):
            A catalogued name (case-insensitive, see `list_datasets()`), or a `DatasetInfo` not in the catalog.
        root (`str` or `os.PathLike`):
            The folder holding the dataset folders (CoOp's DATA root), e.g. the one with `eurosat/` in it.
        check_num_classes (`bool`, *optional*, defaults to `True`):
            Compare the number of classes with the catalog's `num_classes`. Turn off for a deliberate subset (e.g. an
            ImageNet with fewer classes).

    Returns:
        `DatasetSplits`: the dataset with absolute image paths.
    """
    info = name if isinstance(name, DatasetInfo) else get_dataset_info(name)
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise DatasetError(f"Data root {root} does not exist. Fix: pass the folder holding the dataset folders.")
    folder = os.path.join(root, info.folder)
    if not os.path.isdir(folder):
        hint = ""
        if os.path.basename(root) == info.folder:
            hint = f" It looks like you passed the dataset folder itself; pass its parent {os.path.dirname(root)}."
        raise DatasetError(
            f"{info.name} not found: expected the folder {folder}.{hint} Fix: pass as root the folder that holds "
            f"'{info.folder}/' (CoOp's DATA folder), laid out as in CoOp's DATASETS.md."
        )
    try:
        reader = READERS[info.kind]
    except KeyError:
        raise DatasetError(
            f"Dataset {info.name!r} has unknown kind {info.kind!r}; known: {sorted(READERS)}."
        ) from None
    return reader(info, root, check_num_classes)


def read_split_zhou(info: DatasetInfo, root: str, check_num_classes: bool) -> DatasetSplits:
    """Reads a CoOp split file `{"train": [[relative_path, label, classname], ...], "val": ..., "test": ...}`."""
    folder = os.path.join(root, info.folder)
    path = os.path.join(folder, info.split_file)
    if not os.path.isfile(path):
        raise DatasetError(
            f"Split file of {info.name} not found: expected {path}. Fix: download CoOp's {info.split_file} into "
            f"{folder} (links in CoOp's DATASETS.md)."
        )
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path} is not valid JSON ({error}). Fix: download the split file again.") from None
    if not isinstance(data, dict) or not set(data) <= set(SPLIT_NAMES):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(
            f"{path} must be a JSON object with the keys 'train', 'val' and 'test', found {found}. "
            "Fix: use CoOp's split file, or write one in that format."
        )
    image_dir = os.path.join(folder, info.image_dir)
    entries = {}
    for split in SPLIT_NAMES:
        items = data.get(split, [])
        if not isinstance(items, list):
            raise DatasetError(f"{path}: '{split}' must be a list of entries, found {type(items).__name__}.")
        entries[split] = [_parse_entry(info, path, image_dir, split, index, item) for index, item in enumerate(items)]
    return build_splits(
        info.name,
        info.template,
        entries,
        expected_num_classes=info.num_classes if check_num_classes else None,
        fix_missing=f"the paths of {path} are relative to {image_dir}; check that the images are fully extracted "
        f"there, and that the split file belongs to {info.name}.",
    )


def _parse_entry(info: DatasetInfo, source: str, image_dir: str, split: str, index: int, item: object) -> Entry:
    valid = (
        isinstance(item, list)
        and len(item) == 3
        and isinstance(item[0], str)
        and item[0] != ""
        and type(item[1]) is int  # bool is an int subclass; True is not a label
        and item[1] >= 0
        and isinstance(item[2], str)
        and item[2].strip() != ""
    )
    if not valid:
        raise DatasetError(
            f"{source}: {split} entry {index} {item!r} is malformed: expected [relative_image_path, label, classname] "
            "with a non-negative integer label. Fix: correct this entry, or download the split file again."
        )
    path, label, classname = item
    return Entry(source, "entry", index, item, os.path.join(image_dir, path), label, info.rename(classname))


def read_fgvc(info: DatasetInfo, root: str, check_num_classes: bool) -> DatasetSplits:
    """Reads FGVC-Aircraft's native files: `variants.txt` (one class per line, label = line order) and
    `images_variant_{train,val,test}.txt` ("<image id> <variant name>" lines, image `<image_dir>/<id>.jpg`)."""
    folder = os.path.join(root, info.folder)
    variants_path = os.path.join(folder, "variants.txt")
    classnames = [info.rename(line) for line in _read_lines(variants_path, info)]
    label_of = {}
    for number, classname in enumerate(classnames, start=1):
        if label_of.setdefault(classname, number - 1) != number - 1:
            raise DatasetError(f"{variants_path}: line {number} repeats variant {classname!r}. Fix: remove it.")
    image_dir = os.path.join(folder, info.image_dir)
    entries = {}
    for split in SPLIT_NAMES:
        path = os.path.join(folder, f"images_variant_{split}.txt")
        entries[split] = []
        for number, line in enumerate(_read_lines(path, info, keep_numbers=True), start=1):
            if not line:
                continue
            image_id, _, variant = line.partition(" ")
            variant = info.rename(variant.strip())
            if not variant:
                raise DatasetError(
                    f"{path}: line {number} {line!r} is malformed: expected '<image id> <variant name>'. "
                    "Fix: correct this line, or extract the FGVC-Aircraft archive again."
                )
            if variant not in label_of:
                raise DatasetError(
                    f"{path}: {split} line {number} {line!r} has an unknown class: {variant!r} is not in "
                    f"{variants_path}. Fix: correct this line, or use the variants.txt of the same archive."
                )
            image = os.path.join(image_dir, f"{image_id}.jpg")
            entries[split].append(Entry(path, "line", number, line, image, label_of[variant], variant))
    return build_splits(
        info.name,
        info.template,
        entries,
        classnames=classnames,
        expected_num_classes=info.num_classes if check_num_classes else None,
        fix_missing=f"images are expected as {image_dir}/<image id>.jpg; extract the FGVC-Aircraft archive there.",
    )


def _read_lines(path: str, info: DatasetInfo, keep_numbers: bool = False) -> list[str]:
    """Stripped lines of a text file; blank lines are dropped, or kept (as "") when line numbers must stay right."""
    if not os.path.isfile(path):
        raise DatasetError(
            f"{info.name} file not found: expected {path}. Fix: extract the dataset archive into "
            f"{os.path.dirname(path)} (layout as in CoOp's DATASETS.md)."
        )
    with open(path, encoding="utf-8") as file:
        lines = [line.strip() for line in file]
    return lines if keep_numbers else [line for line in lines if line]


READERS: dict[str, Reader] = {
    "split_zhou": read_split_zhou,
    "fgvc": read_fgvc,
    "imagenet": read_imagenet,
    "imagenet_variant": read_imagenet_variant,
}
