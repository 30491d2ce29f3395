"""Writes a tiny offline setup for the examples: a random CLIP folder and two small generated datasets.

    python examples/tiny_setup.py --output /tmp/prompt_clip_demo

creates

    <output>/clip/           a random CLIP of the test suite's shape (32x32 images), OpenAI's tokenizer and an image
                             processor: `--clip <output>/clip` works wherever a Hub id does, offline
    <output>/images/         an image folder, `<class>/<image>.png` (4 classes: `load_image_folder`, `--image-folder`)
    <output>/data/eurosat/   EuroSAT in CoOp's layout (`2750/<Class>/<Class>_<i>.jpg` + `split_zhou_EuroSAT.json`,
                             10 classes, the raw class names), so `--data-root <output>/data --dataset EuroSAT` works

The images are coloured stripes plus noise, one colour and stripe width per class: learnable, so accuracies move
during training, but nothing here says anything about real data. Used by `examples/accelerate_cpu_demo.sh` and for
smoke runs of `examples/train_one.py` and `examples/reproduce_base_to_novel.py`. Needs Pillow and `open-clip-torch`
(for OpenAI's BPE file).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The CLIP shapes are defined once, in benchmarks/clip_shapes.py.
sys.path.insert(0, str(ROOT))
from benchmarks.clip_shapes import save_random_clip, tiny_config  # noqa: E402
from prompt_clip.data import get_dataset_info  # noqa: E402

IMAGE_FOLDER_CLASSES = ("red_square", "green_field", "blue_water", "yellow_sand")
#: EuroSAT's raw folder and class names, from the dataset catalog; the loader renames them
#: ("AnnualCrop" -> "Annual Crop Land").
EUROSAT_CLASSES = tuple(get_dataset_info("EuroSAT").renames)


def class_image(label: int, num_classes: int, rng: random.Random, size: int = 40):
    """A `size x size` RGB image: vertical stripes in the class's colour, with the class's stripe width, plus noise."""
    from PIL import Image

    hue = label / num_classes
    colour = tuple(int(255 * max(0.0, min(1.0, abs((hue * 6 + shift) % 6 - 3) - 1))) for shift in (0, 4, 2))
    width = 1 + label % 4
    pixels = []
    for _ in range(size):
        for x in range(size):
            base = colour if (x // width) % 2 == 0 else (0, 0, 0)
            pixels.append(tuple(max(0, min(255, value + rng.randint(-40, 40))) for value in base))
    image = Image.new("RGB", (size, size))
    image.putdata(pixels)
    return image


def make_image_folder(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """`root/<class>/<class>_<i>.png`, the flat layout of `load_image_folder` (it carves val and test out)."""
    rng = random.Random(seed)
    for label, name in enumerate(IMAGE_FOLDER_CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            class_image(label, len(IMAGE_FOLDER_CLASSES), rng).save(folder / f"{name}_{index}.png")
    return root


def make_eurosat(data_root: Path, counts: tuple[int, int, int] = (20, 4, 6), seed: int = 0) -> Path:
    """EuroSAT in CoOp's layout under `data_root`, with `counts` (train, val, test) images per class.

    20 training images per class leave room for the field's 16-shot draw.
    """
    rng = random.Random(seed)
    image_dir = data_root / "eurosat" / "2750"
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, name in enumerate(EUROSAT_CLASSES):
        (image_dir / name).mkdir(parents=True, exist_ok=True)
        index = 0
        for part, count in zip(("train", "val", "test"), counts):
            for _ in range(count):
                index += 1
                relative = f"{name}/{name}_{index}.jpg"
                class_image(label, len(EUROSAT_CLASSES), rng).save(image_dir / relative, quality=95)
                split[part].append([relative, label, name])
    (data_root / "eurosat" / "split_zhou_EuroSAT.json").write_text(json.dumps(split), encoding="utf-8")
    return data_root


def make_tiny_setup(output: str | Path) -> dict[str, Path]:
    """Writes the CLIP folder and both datasets under `output`; returns their paths."""
    output = Path(output)
    paths = {"clip": output / "clip", "images": output / "images", "data": output / "data"}
    save_random_clip(paths["clip"], tiny_config())
    make_image_folder(paths["images"])
    make_eurosat(paths["data"])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder to write clip/, images/ and data/ into")
    args = parser.parse_args()
    for name, path in make_tiny_setup(args.output).items():
        print(f"{name:<7} {path}")


if __name__ == "__main__":
    main()
