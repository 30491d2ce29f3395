"""`from_hf_dataset`: a Hugging Face `datasets.DatasetDict` as `DatasetSplits`, images decoded on demand."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._pil import require_pil
from .errors import DatasetError
from .splits import SPLIT_NAMES, DatasetSplits, Sample

if TYPE_CHECKING:
    from PIL.Image import Image

_DEFAULT_SPLITS = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}
KEY_PREFIX = "hf:"


def from_hf_dataset(
    dataset: Any,
    image_column: str = "image",
    label_column: str = "label",
    name: str | None = None,
    template: str = "a photo of a {}.",
    splits: Mapping[str, str] | None = None,
) -> DatasetSplits:
    """Wraps a `datasets.DatasetDict` (extra `hf`) whose label column is a `ClassLabel`.

    Samples get opaque paths `"hf:<hf split>/<row>"`; `DatasetSplits.image_loader` decodes the image of a row when
    it is needed, so nothing is decoded up front.

    Args:
        dataset (`datasets.DatasetDict`):
            The dataset, e.g. `datasets.load_dataset("tanganke/eurosat")`.
        image_column (`str`, *optional*, defaults to `"image"`):
            Column holding the images (an `Image` feature).
        label_column (`str`, *optional*, defaults to `"label"`):
            Column holding the labels; must be a `ClassLabel`, whose names become the class names.
        name (`str`, *optional*):
            Dataset name; defaults to the dataset's `builder_name`, else `"hf_dataset"`.
        template (`str`, *optional*):
            Zero-shot template with one `{}`.
        splits (`Mapping[str, str]`, *optional*):
            Our split name (`"train"`, `"val"`, `"test"`) -> the dataset's split name. By default train <- `train`,
            val <- the first of `validation`, `val`, `valid`, test <- `test`; absent splits are empty.
    """
    if template.count("{}") != 1:
        raise ValueError(f"Template {template!r} must contain exactly one '{{}}'.")
    available = list(dataset.keys())
    if splits is None:
        mapping = {
            ours: next((theirs for theirs in candidates if theirs in available), None)
            for ours, candidates in _DEFAULT_SPLITS.items()
        }
    else:
        unknown = sorted(set(splits) - set(SPLIT_NAMES)) + sorted(v for v in splits.values() if v not in available)
        if unknown:
            raise DatasetError(
                f"splits={dict(splits)} names {unknown}, but our splits are {list(SPLIT_NAMES)} and the dataset has "
                f"{available}. Fix: map 'train'/'val'/'test' to existing split names."
            )
        mapping = {ours: splits.get(ours) for ours in SPLIT_NAMES}
    used = [theirs for theirs in mapping.values() if theirs is not None]
    if not used:
        raise DatasetError(f"None of the dataset's splits {available} is train/validation/test. Fix: pass splits=.")
    classnames = None
    for theirs in used:
        columns = dataset[theirs].features
        for column in (image_column, label_column):
            if column not in columns:
                raise DatasetError(
                    f"Split {theirs!r} has no column {column!r}; its columns are {list(columns)}. Fix: pass "
                    "image_column= / label_column=."
                )
        names = getattr(columns[label_column], "names", None)
        if not names:
            raise DatasetError(
                f"Column {label_column!r} of split {theirs!r} is {type(columns[label_column]).__name__}, not a "
                "ClassLabel with class names. Fix: dataset = dataset.cast_column(label_column, ClassLabel(names=...))."
            )
        if classnames is not None and list(names) != classnames:
            raise DatasetError(f"Split {theirs!r} has other class names than split {used[0]!r}: {names[:5]} ...")
        classnames = list(names)

    samples: dict[str, list[Sample]] = {}
    for ours in SPLIT_NAMES:
        theirs = mapping[ours]
        samples[ours] = []
        if theirs is None:
            continue
        for row, label in enumerate(dataset[theirs][label_column]):  # one column read, no image decoding
            if not 0 <= label < len(classnames):
                raise DatasetError(
                    f"Split {theirs!r} row {row} has label {label}, outside the {len(classnames)} classes of its "
                    "ClassLabel. Fix: filter or relabel that row."
                )
            samples[ours].append(Sample(f"{KEY_PREFIX}{theirs}/{row}", label, classnames[label]))
    if name is None:
        first = dataset[used[0]]
        name = getattr(getattr(first, "info", None), "builder_name", None) or "hf_dataset"
    return DatasetSplits(
        name=name,
        classnames=classnames,
        template=template,
        image_loader=HFImageLoader(dataset, image_column),
        **samples,
    )


class HFImageLoader:
    """Decodes the image of an `"hf:<split>/<row>"` sample. A class (not a closure) so that DataLoader workers can
    pickle it."""

    def __init__(self, dataset: Any, image_column: str):
        self.dataset = dataset
        self.image_column = image_column

    def __call__(self, sample: Sample) -> Image:
        if not sample.path.startswith(KEY_PREFIX):
            raise DatasetError(f"{sample.path!r} is not a Hugging Face sample key ('hf:<split>/<row>').")
        split, _, row = sample.path[len(KEY_PREFIX) :].rpartition("/")
        image = self.dataset[split][int(row)][self.image_column]
        if isinstance(image, dict):  # an Image feature with decode=False: {"bytes": ..., "path": ...}
            pil_image = require_pil()
            source = io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]
            with pil_image.open(source) as opened:
                return opened.convert("RGB")
        return image
