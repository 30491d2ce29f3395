"""Readers for ImageNet and its test-only variants (V2, Sketch, A, R), all labelled through ImageNet's
`classnames.txt`.

Label order: WordNet ids sorted, the standard ImageNet class order. ImageNet's labels are therefore the positions of
the sorted wnids; ImageNetV2's folder `<i>` is the i-th sorted wnid; ImageNet-A/-R (200-class subsets) number the
wnid folders present, sorted, 0..n-1. This matches CoOp, whose `classnames.txt` is itself sorted by wnid, and does
not depend on the order of the lines in `classnames.txt`.
"""

from __future__ import annotations

import os

from .catalog import DatasetInfo
from .errors import DatasetError
from .files import list_images, list_subfolders, read_classnames_txt
from .splits import DatasetSplits
from .validation import MAX_LISTED, Entry, build_splits


def read_imagenet(info: DatasetInfo, root: str, check_num_classes: bool) -> DatasetSplits:
    """Reads `<folder>/<image_dir>/{train,val}/<wnid>/<image>`.

    ImageNet has no public test labels, so its val folder serves as both val and test, as in CoOp.
    """
    classnames_path = os.path.join(root, info.classnames_file)
    names = read_classnames_txt(classnames_path)
    wnids = sorted(names)
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    image_dir = os.path.join(root, info.folder, info.image_dir)
    entries = {}
    for split in ("train", "val"):
        split_dir = _require_dir(os.path.join(image_dir, split), info)
        present = list_subfolders(split_dir)
        _check_known_wnids(present, label_of, split_dir, classnames_path)
        absent = sorted(set(wnids) - set(present))
        if absent:
            raise DatasetError(
                f"{split_dir} has no folder for {len(absent)} of the {len(wnids)} classes of {classnames_path} "
                f"(e.g. {absent[:MAX_LISTED]}). Fix: finish extracting ImageNet's {split} images into one folder per "
                "wnid, or use a classnames.txt that lists only the classes you have."
            )
        entries[split] = _folder_entries(split_dir, present, [label_of[w] for w in present], names, info)
    entries["test"] = list(entries["val"])
    return build_splits(
        info.name,
        info.template,
        entries,
        classnames=[info.rename(names[wnid]) for wnid in wnids],
        class_source=classnames_path,
        expected_num_classes=info.num_classes if check_num_classes else None,
        check_files=False,  # the images were listed from disk
    )


def read_imagenet_variant(info: DatasetInfo, root: str, check_num_classes: bool) -> DatasetSplits:
    """Reads a test-only ImageNet variant: `<folder>/<image_dir>/<class folder>/<image>`, with class folders named
    by wnid (`class_folders="wnid"`: Sketch, A, R) or by ImageNet label index (`class_folders="index"`: V2)."""
    classnames_path = os.path.join(root, info.classnames_file)
    names = read_classnames_txt(classnames_path)
    wnids = sorted(names)
    image_dir = _require_dir(os.path.join(root, info.folder, info.image_dir), info)
    present = list_subfolders(image_dir)
    if not present:
        raise DatasetError(f"{image_dir} has no class folders. Fix: extract {info.name} there.")
    if info.class_folders == "index":
        bad = [f for f in present if not f.isdigit() or int(f) >= len(wnids)]
        if bad:
            raise DatasetError(
                f"{image_dir}: class folders {bad[:MAX_LISTED]} are not ImageNet label indices 0..{len(wnids) - 1} "
                f"(the {len(wnids)} classes of {classnames_path}). Fix: use the folders of the {info.name} archive "
                "as they are, named 0..999."
            )
        class_wnids = wnids
        labels = [int(f) for f in present]
        wnid_of_folder = {f: wnids[int(f)] for f in present}
    else:
        _check_known_wnids(present, {w: 0 for w in wnids}, image_dir, classnames_path)
        class_wnids = present
        labels = list(range(len(present)))
        wnid_of_folder = {f: f for f in present}
    entries = {
        "test": _folder_entries(image_dir, present, labels, {f: names[w] for f, w in wnid_of_folder.items()}, info)
    }
    return build_splits(
        info.name,
        info.template,
        entries,
        classnames=[info.rename(names[wnid]) for wnid in class_wnids],
        class_source=image_dir,
        expected_num_classes=info.num_classes if check_num_classes else None,
        check_files=False,
    )


def _require_dir(path: str, info: DatasetInfo) -> str:
    if not os.path.isdir(path):
        raise DatasetError(
            f"{info.name} images not found: expected the folder {path}. Fix: extract {info.name} there, laid out as "
            "in CoOp's DATASETS.md."
        )
    return path


def _check_known_wnids(present: list[str], label_of: dict[str, int], folder: str, classnames_path: str) -> None:
    unknown = [wnid for wnid in present if wnid not in label_of]
    if unknown:
        raise DatasetError(
            f"{folder}: class folders {unknown[:MAX_LISTED]} ({len(unknown)} in all) are unknown classes: they are "
            f"not WordNet ids listed in {classnames_path}. Fix: remove stray folders, or use ImageNet's full "
            "classnames.txt."
        )


def _folder_entries(
    folder: str, class_folders: list[str], labels: list[int], names: dict[str, str], info: DatasetInfo
) -> list[Entry]:
    """One entry per image of each class folder; `names` maps a class folder to its raw class name."""
    entries = []
    for class_folder, label in zip(class_folders, labels, strict=True):
        directory = os.path.join(folder, class_folder)
        classname = info.rename(names[class_folder])
        for index, image in enumerate(list_images(directory)):
            entries.append(Entry(directory, "image", index, image, os.path.join(directory, image), label, classname))
    return entries
