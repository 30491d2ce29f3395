"""Few-shot sampling: K images per class, the same draw on every machine, Python version and data location."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Sequence

from .errors import DatasetError
from .splits import DatasetSplits, Sample

CACHE_FORMAT = 1
MAX_VAL_SHOTS = 4  # the field's protocol: validation gets min(K, 4) images per class


class FewShotWarning(UserWarning):
    """A class has fewer images than the requested shots, or a cached draw had to be redrawn."""


def sample_key(sample: Sample) -> str:
    """The identity of a sample in few-shot draws and caches: the last two components of its path, `/`-separated.

    For CoOp's layouts these are `<class folder>/<file>` (or `<split folder>/<file>`), unique within a class, so the
    draw does not depend on where the data root lies or on the operating system's path separator. (Ties, which
    would need two images with the same folder and file name in one class, are broken by the full path.)
    """
    path = sample.path
    for separator in (os.sep, os.altsep):
        if separator and separator != "/":
            path = path.replace(separator, "/")
    return "/".join(path.rstrip("/").split("/")[-2:])


def few_shot(
    samples: Sequence[Sample],
    shots: int | None,
    seed: int,
    *,
    dataset: str = "",
    split: str = "train",
    classnames: Sequence[str] | None = None,
) -> list[Sample]:
    """Draws `shots` samples per class, without replacement.

    Each class's samples are ranked by the SHA-256 of `f"{dataset}|{split}|{seed}|{sample_key(sample)}"` and the
    first `shots` are taken. Hence the draw is identical on every machine and Python version, independent of the
    data root and of the order of `samples`, nested (the 1-shot draw is part of the 2-shot draw), and a class's
    draw does not depend on which other classes are present (drawing from base classes only gives the same images).

    Args:
        samples (`Sequence[Sample]`):
            The samples to draw from.
        shots (`int` or `None`):
            Images per class; `-1` or `None` keeps all samples.
        seed (`int`):
            Seed of the draw (the field uses 1, 2, 3).
        dataset (`str`, *optional*):
            Dataset name, mixed into the ranking so that datasets sharing file names draw independently.
        split (`str`, *optional*, defaults to `"train"`):
            Split name, mixed into the ranking.
        classnames (`Sequence[str]`, *optional*):
            All class names; when given, a class without any sample is an error instead of being silently absent.

    Returns:
        `list[Sample]`: the draw, ordered by label, then by rank.
    """
    if shots is None or shots == -1:
        return list(samples)
    if not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive integer, or -1 / None for all samples; got {shots!r}.")
    where = f"{dataset} " if dataset else ""
    if not samples:
        raise DatasetError(f"The {where}{split} split is empty, so {shots} shots per class cannot be drawn.")
    by_label = _group(samples)
    if classnames is not None:
        empty = [f"{label} {name!r}" for label, name in enumerate(classnames) if label not in by_label]
        if empty:
            raise DatasetError(
                f"{where}class {empty[0]} has no {split} samples ({len(empty)} such classes: {', '.join(empty[:5])}), "
                f"so {shots} shots cannot be drawn. Fix: add {split} images for it, or leave the class out "
                "(select_classes)."
            )
    drawn = []
    short = []
    prefix = f"{dataset}|{split}|{seed}|"
    for label in sorted(by_label):
        group = by_label[label]
        if len(group) < shots:
            short.append(f"{label} {group[0].classname!r} ({len(group)})")
        group = sorted(group, key=lambda s: (hashlib.sha256((prefix + sample_key(s)).encode()).digest(), s.path))
        drawn.extend(group[:shots])
    if short:
        # One warning per draw, not per class: a small dataset would otherwise print a screen of them.
        listed = ", ".join(short[:10]) + (f" and {len(short) - 10} more" if len(short) > 10 else "")
        warnings.warn(
            f"{where}{split}: classes with fewer than {shots} samples, of which all are taken: class {listed}.",
            FewShotWarning,
            stacklevel=2,
        )
    return drawn


def few_shot_splits(
    splits: DatasetSplits, shots: int | None, seed: int, cache_dir: str | os.PathLike | None = None
) -> DatasetSplits:
    """The field's few-shot protocol: `shots` train images per class, `min(shots, 4)` val images, the full test set.

    Args:
        splits (`DatasetSplits`):
            The full dataset (or a `select_classes` subset of it).
        shots (`int` or `None`):
            Train images per class; `-1` or `None` keeps everything.
        seed (`int`):
            Seed of the draw.
        cache_dir (`str` or `os.PathLike`, *optional*):
            When given, the draw is saved to `<cache_dir>/<dataset name>/shot_<K>-seed_<seed>.json` (written
            atomically) and read back by later runs, so that a run keeps the images it was trained on even if this
            library's drawing ever changes. The cache is per class name: runs on base and on novel classes share a
            file. A cached class whose images are no longer in the split is drawn again, with a `FewShotWarning`.

    Returns:
        `DatasetSplits`: a copy with reduced `train` and `val`.
    """
    if shots is None or shots == -1:
        return dataclasses.replace(splits, train=list(splits.train), val=list(splits.val), test=list(splits.test))
    val_shots = min(shots, MAX_VAL_SHOTS) if isinstance(shots, int) else shots
    path = cache_path(cache_dir, splits.name, shots, seed) if cache_dir is not None else None
    cache = _read_cache(path, splits.name, shots, seed) if path else {"train": {}, "val": {}}
    changed = path is not None and not os.path.exists(path)

    drawn = {}
    for split, k in (("train", shots), ("val", val_shots)):
        samples = getattr(splits, split)
        if split == "val" and not samples:
            drawn[split] = []
            continue
        classnames = splits.classnames if split == "train" else None
        fresh = few_shot(samples, k, seed, dataset=splits.name, split=split, classnames=classnames)
        available = _group(samples)
        drawn[split] = []
        for label, group in _group(fresh).items():
            classname = splits.classnames[label]
            cached = _cached_group(cache[split].get(classname), available[label], k)
            if cached is None:
                if classname in cache[split]:
                    warnings.warn(
                        f"{path}: the cached {split} draw of class {classname!r} refers to images that are not in "
                        "the dataset any more; drawing it again.",
                        FewShotWarning,
                        stacklevel=2,
                    )
                cached = group
                cache[split][classname] = [sample_key(s) for s in group]
                changed = True
            drawn[split].extend(cached)
    if path is not None and changed:
        _write_cache(path, {"format": CACHE_FORMAT, "dataset": splits.name, "shots": shots, "seed": seed, **cache})
    return dataclasses.replace(splits, train=drawn["train"], val=drawn["val"], test=list(splits.test))


def cache_path(cache_dir: str | os.PathLike, dataset: str, shots: int, seed: int) -> str:
    """`<cache_dir>/<dataset>/shot_<K>-seed_<seed>.json`, with the dataset name made safe as a folder name."""
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset) or "dataset"
    return os.path.join(os.fspath(cache_dir), folder, f"shot_{shots}-seed_{seed}.json")


def _group(samples: Sequence[Sample]) -> dict[int, list[Sample]]:
    groups: dict[int, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.label, []).append(sample)
    return groups


def _cached_group(keys: list[str] | None, samples: list[Sample], shots: int) -> list[Sample] | None:
    """The cached draw of one class (`samples`: all of its samples), or `None` when absent or no longer valid."""
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        return None
    by_key = {sample_key(s): s for s in samples}
    expected = min(shots, len(by_key))
    if len(keys) != expected or len(set(keys)) != len(keys) or any(key not in by_key for key in keys):
        return None
    return [by_key[key] for key in keys]


def _read_cache(path: str, dataset: str, shots: int, seed: int) -> dict[str, dict[str, list[str]]]:
    empty: dict[str, dict[str, list[str]]] = {"train": {}, "val": {}}
    if not os.path.exists(path):
        return empty
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
        valid = (
            data.get("format") == CACHE_FORMAT
            and (data.get("dataset"), data.get("shots"), data.get("seed")) == (dataset, shots, seed)
            and all(isinstance(data.get(split), dict) for split in empty)
        )
    except (OSError, ValueError, AttributeError):
        valid = False
    if not valid:
        warnings.warn(f"{path} is not a valid few-shot cache for this draw; drawing again.", FewShotWarning, 3)
        return empty
    return {split: dict(data[split]) for split in empty}


def _write_cache(path: str, data: dict) -> None:
    # Temp file + os.replace: a concurrent reader sees the old or the new file, never half of one.
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".shot_", suffix=".json.tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=1, sort_keys=True)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
