"""Builders of tiny on-disk datasets in the field's layouts, for tests/test_data.py (no Pillow needed)."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

EUROSAT_RAW = [
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
]
# per class: (train, val, test) image counts of the EuroSAT fixture
EUROSAT_COUNTS = (5, 2, 2)


def png_bytes(width: int, height: int, color: tuple[int, int, int], stripes: bool = False) -> bytes:
    """A valid RGB PNG, solid or with vertical stripes, written with zlib only so fixtures need no Pillow."""
    rows = []
    for _ in range(height):
        pixels = bytearray()
        for x in range(width):
            pixels += bytes(color) if not stripes or x % 2 == 0 else b"\x00\x00\x00"
        rows.append(b"\x00" + bytes(pixels))  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def write_image(path: Path, color: tuple[int, int, int] = (200, 40, 10), size: tuple[int, int] = (12, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(size[0], size[1], color, stripes=True))
    return path


def color_of(label: int, index: int) -> tuple[int, int, int]:
    return ((37 * label + 11 * index) % 256, (91 * label) % 256, (13 * index + 50) % 256)


def make_eurosat(root: Path, names_in_file: list[str] | None = None) -> Path:
    """`root/eurosat/2750/<Class>/<Class>_<i>.jpg` plus `split_zhou_EuroSAT.json`, CoOp's layout. Returns root.

    `names_in_file` replaces the class names written in the split file (the folders keep the raw names).
    """
    names_in_file = names_in_file or EUROSAT_RAW
    image_dir = root / "eurosat" / "2750"
    split = {"train": [], "val": [], "test": []}
    for label, (folder, classname) in enumerate(zip(EUROSAT_RAW, names_in_file)):
        index = 0
        for name, count in zip(("train", "val", "test"), EUROSAT_COUNTS):
            for _ in range(count):
                relative = f"{folder}/{folder}_{index + 1}.jpg"
                write_image(image_dir / relative, color_of(label, index))
                split[name].append([relative, label, classname])
                index += 1
    write_split(root, split)
    return root


def write_split(root: Path, split: dict, name: str = "split_zhou_EuroSAT.json") -> Path:
    path = root / "eurosat" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split))
    return path


def read_split(root: Path) -> dict:
    return json.loads((root / "eurosat" / "split_zhou_EuroSAT.json").read_text())


IMAGENET_CLASSNAMES = {"n02000003": "zebra finch", "n01000001": "tench", "n01500002": "great white shark"}


def make_imagenet_family(root: Path) -> Path:
    """A 3-class ImageNet (classnames.txt deliberately not sorted) and its variants, in CoOp's layout."""
    lines = [f"{wnid} {name}" for wnid, name in IMAGENET_CLASSNAMES.items()]
    (root / "imagenet").mkdir(parents=True)
    (root / "imagenet" / "classnames.txt").write_text("\n".join(lines) + "\n")
    for label, wnid in enumerate(sorted(IMAGENET_CLASSNAMES)):
        for i in range(3):
            write_image(root / "imagenet" / "images" / "train" / wnid / f"{wnid}_{i}.JPEG", color_of(label, i))
        write_image(root / "imagenet" / "images" / "val" / wnid / f"ILSVRC2012_val_{label}.JPEG", color_of(label, 9))
        write_image(root / "imagenet-sketch" / "images" / wnid / f"sketch_{label}.JPEG", color_of(label, 5))
        write_image(root / "imagenetv2" / "imagenetv2-matched-frequency-threshold0.7" / str(label) / "a.jpeg")
    # ImageNet-A: a subset of the classes, plus the README the archive ships next to the class folders
    for wnid in ("n02000003", "n01500002"):
        write_image(root / "imagenet-adversarial" / "imagenet-a" / wnid / "0.jpg")
        write_image(root / "imagenet-adversarial" / "imagenet-a" / wnid / "1.jpg")
    (root / "imagenet-adversarial" / "imagenet-a" / "README.txt").write_text("not a class\n")
    return root


FGVC_VARIANTS = ["707-320", "A300B4", "F-16A/B"]


def make_fgvc(root: Path) -> Path:
    """FGVC-Aircraft's native layout: variants.txt, images_variant_<split>.txt, images/<id>.jpg."""
    folder = root / "fgvc_aircraft"
    folder.mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(FGVC_VARIANTS) + "\n")
    image_id = 1000000
    for split, per_class in (("train", 2), ("val", 1), ("test", 1)):
        lines = []
        for label, variant in enumerate(FGVC_VARIANTS):
            for _ in range(per_class):
                image_id += 1
                write_image(folder / "images" / f"{image_id}.jpg", color_of(label, image_id % 7))
                lines.append(f"{image_id} {variant}")
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def relative(paths: list[str], root: Path) -> list[str]:
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]
