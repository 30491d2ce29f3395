"""The catalog of known datasets, kept as data: where each one lives under CoOp's DATA root and how to read it.

Adding a dataset that uses one of the known on-disk layouts is one `register_dataset(DatasetInfo(...))` call; no code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DatasetKind = Literal["split_zhou", "fgvc", "imagenet", "imagenet_variant"]

DEFAULT_TEMPLATE = "a photo of a {}."


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset lives below the data root and how its files are read.

    Args:
        name (`str`):
            Canonical name, e.g. `"EuroSAT"`. Look-ups are case-insensitive.
        folder (`str`):
            The dataset's folder, relative to the data root (e.g. `"eurosat"`).
        image_dir (`str`):
            Folder holding the images, relative to `folder` (`""` for the dataset folder itself). Paths in the split
            file are relative to it.
        split_file (`str`, *optional*):
            Split file relative to `folder`: CoOp's `split_zhou_<Name>.json` for `kind="split_zhou"`; `None` for the
            kinds that read the dataset's native files.
        template (`str`):
            Zero-shot prompt template with one `{}`.
        num_classes (`int`, *optional*):
            Expected number of classes. `load_dataset` checks it (unless told not to) so that a split file of another
            dataset, or a half-extracted archive, is caught before training. `None` skips the check.
        renames (`dict[str, str]`):
            Class names rewritten after reading (e.g. EuroSAT `"AnnualCrop"` -> `"Annual Crop Land"`). Must be
            idempotent: a new name is never itself renamed, so files that already hold the new names read the same.
        kind (`str`):
            On-disk layout: `"split_zhou"` (JSON split file), `"fgvc"` (FGVC-Aircraft's `variants.txt` and
            `images_variant_<split>.txt`), `"imagenet"` (`<image_dir>/{train,val}/<wnid>/`) or `"imagenet_variant"`
            (test-only folders of an ImageNet variant).
        classnames_file (`str`, *optional*):
            For the ImageNet kinds: `classnames.txt` ("wnid classname" lines), relative to the data root.
        class_folders (`str`):
            For `"imagenet_variant"`: `"wnid"` when class folders are named by WordNet id, `"index"` when they are
            named by ImageNet label index (ImageNetV2).
    """

    name: str
    folder: str
    image_dir: str
    split_file: str | None = None
    template: str = DEFAULT_TEMPLATE
    num_classes: int | None = None
    renames: dict[str, str] = field(default_factory=dict)
    kind: DatasetKind = "split_zhou"
    classnames_file: str | None = None
    class_folders: Literal["wnid", "index"] = "wnid"

    def rename(self, classname: str) -> str:
        """Applies `renames` to one class name (a no-op for names that are not renamed)."""
        return self.renames.get(classname, classname)


_CATALOG: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo, overwrite: bool = False) -> DatasetInfo:
    """Adds a dataset to the catalog.

    Args:
        info (`DatasetInfo`):
            The dataset description.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace an existing entry of the same (case-insensitive) name instead of raising.

    Returns:
        `DatasetInfo`: `info`, so the call can be used as an expression.
    """
    if info.template.count("{}") != 1:
        raise ValueError(f"Template {info.template!r} of dataset {info.name!r} must contain exactly one '{{}}'.")
    if info.kind == "split_zhou" and not info.split_file:
        raise ValueError(f"Dataset {info.name!r} has kind 'split_zhou' but no split_file.")
    if info.kind in ("imagenet", "imagenet_variant") and not info.classnames_file:
        raise ValueError(f"Dataset {info.name!r} has kind {info.kind!r} but no classnames_file.")
    # Idempotent renames let one loader read both raw split files and files that already hold the new names.
    chained = {old: new for old, new in info.renames.items() if info.rename(new) != new}
    if chained:
        raise ValueError(
            f"Renames of dataset {info.name!r} are not idempotent: {chained} map to names that are renamed again."
        )
    key = info.name.lower()
    if key in _CATALOG and not overwrite:
        raise ValueError(f"Dataset {info.name!r} is already registered; pass overwrite=True to replace it.")
    _CATALOG[key] = info
    return info


def unregister_dataset(name: str) -> None:
    """Removes a dataset from the catalog (useful for tests and for replacing built-in entries)."""
    get_dataset_info(name)
    del _CATALOG[name.lower()]


def get_dataset_info(name: str) -> DatasetInfo:
    """Returns the catalog entry of `name` (case-insensitive); the error lists the known names."""
    try:
        return _CATALOG[name.lower()]
    except KeyError:
        raise KeyError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(list_datasets())}. "
            "Register new ones with prompt_clip.data.register_dataset, or read any folder of class sub-folders "
            "with load_image_folder."
        ) from None


def list_datasets() -> list[str]:
    """Names of all registered datasets, in registration order."""
    return [info.name for info in _CATALOG.values()]


# CoOp's class-name rewrites, as data. Caltech101's are already applied in CoOp's released split file; applying them
# again is harmless because renames are idempotent.
CALTECH101_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
EUROSAT_RENAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}

IMAGENET_CLASSNAMES = "imagenet/classnames.txt"

_BUILTIN = (
    DatasetInfo(
        name="ImageNet",
        folder="imagenet",
        image_dir="images",
        kind="imagenet",
        num_classes=1000,
        classnames_file=IMAGENET_CLASSNAMES,
    ),
    DatasetInfo(
        name="Caltech101",
        folder="caltech-101",
        image_dir="101_ObjectCategories",
        split_file="split_zhou_Caltech101.json",
        num_classes=100,
        renames=CALTECH101_RENAMES,
    ),
    DatasetInfo(
        name="OxfordPets",
        folder="oxford_pets",
        image_dir="images",
        split_file="split_zhou_OxfordPets.json",
        template="a photo of a {}, a type of pet.",
        num_classes=37,
    ),
    DatasetInfo(
        name="StanfordCars",
        folder="stanford_cars",
        image_dir="",  # the split file's paths start with cars_train/ or cars_test/
        split_file="split_zhou_StanfordCars.json",
        num_classes=196,
    ),
    DatasetInfo(
        name="Flowers102",
        folder="oxford_flowers",
        image_dir="jpg",
        split_file="split_zhou_OxfordFlowers.json",
        template="a photo of a {}, a type of flower.",
        num_classes=102,
    ),
    DatasetInfo(
        name="Food101",
        folder="food-101",
        image_dir="images",
        split_file="split_zhou_Food101.json",
        template="a photo of {}, a type of food.",
        num_classes=101,
    ),
    DatasetInfo(
        name="FGVCAircraft",
        folder="fgvc_aircraft",
        image_dir="images",
        kind="fgvc",
        template="a photo of a {}, a type of aircraft.",
        num_classes=100,
    ),
    DatasetInfo(
        name="SUN397",
        folder="sun397",
        image_dir="SUN397",
        split_file="split_zhou_SUN397.json",
        num_classes=397,
    ),
    DatasetInfo(
        name="DTD",
        folder="dtd",
        image_dir="images",
        split_file="split_zhou_DescribableTextures.json",
        template="{} texture.",
        num_classes=47,
    ),
    DatasetInfo(
        name="EuroSAT",
        folder="eurosat",
        image_dir="2750",
        split_file="split_zhou_EuroSAT.json",
        template="a centered satellite photo of {}.",
        num_classes=10,
        renames=EUROSAT_RENAMES,
    ),
    DatasetInfo(
        name="UCF101",
        folder="ucf101",
        image_dir="UCF-101-midframes",
        split_file="split_zhou_UCF101.json",
        template="a photo of a person doing {}.",
        num_classes=101,
    ),
    DatasetInfo(
        name="ImageNetV2",
        folder="imagenetv2",
        image_dir="imagenetv2-matched-frequency-threshold0.7",
        kind="imagenet_variant",
        num_classes=1000,
        classnames_file=IMAGENET_CLASSNAMES,
        class_folders="index",
    ),
    DatasetInfo(
        name="ImageNetSketch",
        folder="imagenet-sketch",
        image_dir="images",
        kind="imagenet_variant",
        num_classes=1000,
        classnames_file=IMAGENET_CLASSNAMES,
    ),
    DatasetInfo(
        name="ImageNetA",
        folder="imagenet-adversarial",
        image_dir="imagenet-a",
        kind="imagenet_variant",
        num_classes=200,
        classnames_file=IMAGENET_CLASSNAMES,
    ),
    DatasetInfo(
        name="ImageNetR",
        folder="imagenet-rendition",
        image_dir="imagenet-r",
        kind="imagenet_variant",
        num_classes=200,
        classnames_file=IMAGENET_CLASSNAMES,
    ),
)
for _info in _BUILTIN:
    register_dataset(_info)
