"""Turns the raw entries read from a dataset's files into validated `DatasetSplits`.

All checks run here, when the dataset is loaded, so that a wrong file fails in seconds instead of after the first
epoch. Every error names the file, the entry and the fix.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import DatasetError
from .files import find_missing
from .splits import SPLIT_NAMES, DatasetSplits, Sample

MAX_LISTED = 5  # entries quoted in an error message; enough to see the pattern without flooding the terminal


class Entry(NamedTuple):
    """One image as read from a dataset file, with what is needed to point at it in an error message.

    Args:
        source (`str`): the file the entry was read from.
        unit (`str`): what `index` counts in that file, `"entry"` (JSON list position) or `"line"` (1-based).
        index (`int`): the entry's position in `source`.
        raw (`object`): the entry as written in the file.
        path (`str`): absolute image path.
        label (`int`): class index.
        classname (`str`): class name, renames applied.
    """

    source: str
    unit: str
    index: int
    raw: object
    path: str
    label: int
    classname: str


def describe(split: str, entry: Entry) -> str:
    """`"<file>: train entry 3 ['a.jpg', 0, 'cat']"`, the way errors point at an entry."""
    return f"{entry.source}: {split} {entry.unit} {entry.index} {entry.raw!r}"


def build_splits(
    name: str,
    template: str,
    entries: dict[str, list[Entry]],
    *,
    classnames: list[str] | None = None,
    class_source: str | None = None,
    expected_num_classes: int | None = None,
    check_files: bool = True,
    fix_missing: str = "",
) -> DatasetSplits:
    """Validates raw entries and returns the dataset.

    Args:
        name (`str`):
            Dataset name.
        template (`str`):
            Zero-shot template.
        entries (`dict[str, list[Entry]]`):
            Entries per split name (`"train"`, `"val"`, `"test"`; missing splits are empty).
        classnames (`list[str]`, *optional*):
            The class list when the dataset has its own class file (FGVC, ImageNet). `None` takes it from the train
            split (from the test split when there is no train split), as CoOp's split files define no class list.
        class_source (`str`, *optional*):
            The file or folder the class list comes from, named in the class-count error (defaults to the file of the
            first entry).
        expected_num_classes (`int`, *optional*):
            The catalog's class count; a different count means the file belongs to another dataset.
        check_files (`bool`, *optional*, defaults to `True`):
            Check that every image exists (readers that listed the folders themselves skip it).
        fix_missing (`str`, *optional*):
            Advice appended to the missing-images error.
    """
    entries = {split: entries.get(split, []) for split in SPLIT_NAMES}
    if classnames is None:
        classnames = _class_table(entries)
    known = {label: classname for label, classname in enumerate(classnames)}
    for split in SPLIT_NAMES:
        for entry in entries[split]:
            if known.get(entry.label) != entry.classname:
                _raise_unknown_class(split, entry, known)

    reference = class_source or next((entries[s][0].source for s in ("train", "test", "val") if entries[s]), name)
    if expected_num_classes is not None and len(classnames) != expected_num_classes:
        raise DatasetError(
            f"{reference} defines {len(classnames)} classes, but {name} has {expected_num_classes}: the file seems "
            f"to belong to another dataset (or to be incomplete). Fix: use {name}'s own file in its folder; for a "
            "custom subset of classes, pass check_num_classes=False or register a DatasetInfo with num_classes=None."
        )
    if check_files:
        _check_images_exist(name, entries, fix_missing)
    samples = {
        split: [Sample(entry.path, entry.label, entry.classname) for entry in entries[split]] for split in SPLIT_NAMES
    }
    return DatasetSplits(name=name, classnames=list(classnames), template=template, **samples)


def _class_table(entries: dict[str, list[Entry]]) -> list[str]:
    """label -> class name from the first non-empty split among train, test, val; labels must be 0..C-1."""
    reference = next((split for split in ("train", "test", "val") if entries[split]), None)
    if reference is None:
        raise DatasetError("The dataset has no entries at all. Fix: check that the split file lists images.")
    table: dict[int, str] = {}
    label_of: dict[str, int] = {}
    for entry in entries[reference]:
        known = table.setdefault(entry.label, entry.classname)
        if known != entry.classname:
            raise DatasetError(
                f"{describe(reference, entry)} gives label {entry.label} the name {entry.classname!r}, but earlier "
                f"entries of the {reference} split call it {known!r}. Fix: use one name per label."
            )
        other = label_of.setdefault(entry.classname, entry.label)
        if other != entry.label:
            raise DatasetError(
                f"{describe(reference, entry)} uses class name {entry.classname!r} for label {entry.label}, but "
                f"earlier entries of the {reference} split use it for label {other}. Fix: use one label per name."
            )
    num_classes = max(table) + 1
    absent = [label for label in range(num_classes) if label not in table]
    if absent or min(table) < 0:
        source = entries[reference][0].source
        raise DatasetError(
            f"{source}: the labels of the {reference} split are not contiguous: {len(table)} classes but labels up "
            f"to {num_classes - 1}, with no image for labels {absent[:10]}{' ...' if len(absent) > 10 else ''}. "
            f"Fix: number the classes 0..{len(table) - 1} and give every class at least one {reference} image."
        )
    return [table[label] for label in range(num_classes)]


def _raise_unknown_class(split: str, entry: Entry, known: dict[int, str]) -> None:
    if entry.label in known:
        reason = f"label {entry.label} is {known[entry.label]!r} in the class list, not {entry.classname!r}"
    else:
        reason = f"label {entry.label} ({entry.classname!r}) is not one of the {len(known)} known classes"
    raise DatasetError(
        f"{describe(split, entry)} has an unknown class: {reason}. Every class must appear in the train split with "
        "the same label and name. Fix: correct this entry, or regenerate the split file from the images."
    )


def _check_images_exist(name: str, entries: dict[str, list[Entry]], fix: str) -> None:
    flat = [(split, entry) for split in SPLIT_NAMES for entry in entries[split]]
    missing = find_missing(entry.path for _, entry in flat)
    if not missing:
        return
    listed = "\n".join(f"  {describe(*flat[i])}: {flat[i][1].path}" for i in missing[:MAX_LISTED])
    more = f"\n  ... and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
    raise DatasetError(
        f"{name}: {len(missing)} of {len(flat)} images are missing:\n{listed}{more}\n"
        f"Fix: {fix or 'check that the images are fully extracted where the dataset files point.'}"
    )
