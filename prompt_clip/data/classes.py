"""Class subsets: the base-to-novel protocol and relabelling."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

from .splits import DatasetSplits, Sample


def base_novel_split(num_classes: int) -> tuple[list[int], list[int]]:
    """The field's base-to-novel split: base = the first `ceil(C / 2)` label ids, novel = the rest.

    Example: 37 classes (OxfordPets) give 19 base and 18 novel classes.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}.")
    half = math.ceil(num_classes / 2)
    return list(range(half)), list(range(half, num_classes))


def select_classes(splits: DatasetSplits, subset: Literal["all", "base", "novel"] | Sequence[int]) -> DatasetSplits:
    """Keeps the samples of some classes in every split and relabels those classes `0..n-1`.

    Args:
        splits (`DatasetSplits`):
            The dataset.
        subset (`"all"`, `"base"`, `"novel"` or a sequence of label ids):
            Which classes to keep: the base or novel half of `base_novel_split`, or explicit label ids (their order
            becomes the new label order).

    Returns:
        `DatasetSplits`: a copy with `classnames` reordered accordingly and the same name and template.
    """
    if isinstance(subset, str):
        if subset == "all":
            return dataclasses.replace(splits, train=list(splits.train), val=list(splits.val), test=list(splits.test))
        if subset not in ("base", "novel"):
            raise ValueError(f"subset must be 'all', 'base', 'novel' or a list of label ids, got {subset!r}.")
        base, novel = base_novel_split(splits.num_classes)
        labels = base if subset == "base" else novel
    else:
        labels = [int(label) for label in subset]
        bad = [label for label in labels if not 0 <= label < splits.num_classes]
        if bad or len(set(labels)) != len(labels):
            raise ValueError(
                f"Labels {labels} must be distinct ids in 0..{splits.num_classes - 1} of {splits.name}; bad: {bad}."
            )
    new_label = {old: new for new, old in enumerate(labels)}

    def keep(samples: list[Sample]) -> list[Sample]:
        return [Sample(s.path, new_label[s.label], s.classname) for s in samples if s.label in new_label]

    return dataclasses.replace(
        splits,
        classnames=[splits.classnames[label] for label in labels],
        train=keep(splits.train),
        val=keep(splits.val),
        test=keep(splits.test),
    )
