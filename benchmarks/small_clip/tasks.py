"""Downstream tasks with a distribution shift, written in CoOp's on-disk layout.

Run:  python -m benchmarks.small_clip.tasks [DATA_ROOT] [--force] [--model-dir DIR]

Each task is built from the held-out DOWNSTREAM images of one source (never seen in pretraining), shifted
deterministically (see `shifts.py`), and written as

    <data_root>/<folder>/images/<class_name_with_underscores>/<n>.png     32x32 RGB
    <data_root>/<folder>/split_zhou_<Name>.json    {"train": [[path under images/, label, classname], ...],
                                                    "val": [...], "test": [...]}
    <data_root>/<folder>/task_info.json            what was built, from which images, with which shift

so that any CoOp-style loader (e.g. a `DatasetInfo(kind="split_zhou")`) reads it like Caltech101 or EuroSAT. A task
is rebuilt only when its recipe changes (or with `force=True`); it is written into a temporary folder that is renamed
when complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .imaging import to_canvas
from .pretrain import CACHE_ENV
from .shifts import apply_shift, describe_shift
from .sources import SourceData, downstream_sources
from .zeroshot import DEFAULT_TEMPLATE, load_small_clip, zero_shot_accuracy

TASK_VERSION = 1
TASK_INFO = "task_info.json"
IMAGE_DIR = "images"


@dataclass(frozen=True)
class TaskSpec:
    """How to build one task.

    Args:
        name (`str`): dataset name; the split file is `split_zhou_<name>.json`.
        folder (`str`): folder under the data root.
        source (`str`): `SourceData.name` of the downstream images (`"fashion"` or `"digits"`).
        shift (`tuple[str, ...]`): keys of `shifts.SHIFTS`, applied in order.
        train_per_class, val_per_class (`int`): images per class in train / val.
        test_per_class (`int`, *optional*): images per class in test; `None` takes all remaining ones.
        seed (`int`): seeds the choice of images and the random parts of the shift.
    """

    name: str
    folder: str
    source: str
    shift: tuple[str, ...]
    train_per_class: int
    val_per_class: int
    test_per_class: int | None
    seed: int = 0


#: The default tasks. Fashion: 48 + 16 + 100 of the 1,000 test images per class. Digits: each class has only 70-73
#: downstream images: 32 + 8 + the rest (30-33).
DEFAULT_SPECS = (
    TaskSpec("FashionShift", "fashion_shift", "fashion", ("navy_background",), 48, 16, 100),
    TaskSpec("DigitsShift", "digits_shift", "digits", ("stripes",), 32, 8, None),
)


@dataclass(frozen=True)
class ShiftedTask:
    """A built task, described as a dataset registry needs it.

    Args:
        name (`str`): dataset name.
        root (`Path`): the data root.
        folder (`str`): the task's folder, relative to `root`.
        image_dir (`str`): image folder relative to `folder`; split paths are relative to it.
        split_file (`str`): split file relative to `folder`.
        template (`str`): zero-shot template.
        classnames (`tuple[str, ...]`): class names in label order.
    """

    name: str
    root: Path
    folder: str
    image_dir: str
    split_file: str
    template: str
    classnames: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classnames)

    @property
    def path(self) -> Path:
        """The task's folder."""
        return self.root / self.folder

    def catalog_kwargs(self) -> dict:
        """Keyword arguments of a `prompt_clip.data` `DatasetInfo` (`kind="split_zhou"`) for this task."""
        return {
            "name": self.name,
            "folder": self.folder,
            "image_dir": self.image_dir,
            "split_file": self.split_file,
            "template": self.template,
            "num_classes": self.num_classes,
        }

    def read_split(self) -> dict[str, list[list]]:
        """The split file's content."""
        return json.loads((self.path / self.split_file).read_text())


def _spec_key(spec: TaskSpec, source: SourceData) -> str:
    payload = {"version": TASK_VERSION, "spec": dataclasses.asdict(spec), "source": [source.name, len(source)]}
    payload["data"] = hashlib.sha256(source.images.tobytes() + source.labels.tobytes()).hexdigest()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def choose_images(labels: np.ndarray, spec: TaskSpec, num_classes: int) -> dict[str, list[int]]:
    """Indices into the source for each split: per class, a fixed permutation cut into train, val and test.

    Raises:
        `ValueError`: when a class has fewer images than train + val (+ test) need.
    """
    rng = np.random.default_rng(spec.seed)
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == label))
        needed = spec.train_per_class + spec.val_per_class + (spec.test_per_class or 1)
        if len(members) < needed:
            raise ValueError(f"{spec.name}: class {label} has {len(members)} images, {needed} are needed")
        cuts = np.cumsum([spec.train_per_class, spec.val_per_class, spec.test_per_class or len(members)])
        splits["train"] += members[: cuts[0]].tolist()
        splits["val"] += members[cuts[0] : cuts[1]].tolist()
        splits["test"] += members[cuts[1] : cuts[2]].tolist()
    return splits


def class_folder(classname: str) -> str:
    """The folder name of a class: spaces become underscores (CoOp's convention)."""
    return classname.replace(" ", "_")


def shifted_images(source: SourceData, indices: Sequence[int], spec: TaskSpec) -> torch.Tensor:
    """The task's `uint8` RGB 32x32 images for `indices` (the shift's randomness follows the index order)."""
    return apply_shift(to_canvas(source.images[np.asarray(indices, dtype=np.int64)]), spec.shift, spec.seed)


def build_task(spec: TaskSpec, source: SourceData, data_root: str | os.PathLike, force: bool = False) -> ShiftedTask:
    """Writes one task (see the module docstring); reuses a complete folder of the same recipe unless `force`."""
    from PIL import Image

    root = Path(data_root)
    task = ShiftedTask(
        spec.name, root, spec.folder, IMAGE_DIR, f"split_zhou_{spec.name}.json", DEFAULT_TEMPLATE, source.classnames
    )
    key = _spec_key(spec, source)
    info_path = task.path / TASK_INFO
    if not force and info_path.is_file() and json.loads(info_path.read_text()).get("key") == key:
        return task
    chosen = choose_images(source.labels, spec, len(source.classnames))
    temporary = root / f".{spec.folder}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        split: dict[str, list[list]] = {}
        counters = dict.fromkeys(source.classnames, 0)
        for name in ("train", "val", "test"):
            images, split[name] = shifted_images(source, chosen[name], spec), []
            for index, image in zip(chosen[name], images):
                label = int(source.labels[index])
                classname = source.classnames[label]
                relative = f"{class_folder(classname)}/{counters[classname]:04d}.png"
                counters[classname] += 1
                (temporary / IMAGE_DIR / class_folder(classname)).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(temporary / IMAGE_DIR / relative)
                split[name].append([relative, label, classname])
        (temporary / task.split_file).write_text(json.dumps(split))
        info = {
            "key": key,
            "spec": dataclasses.asdict(spec),
            "shift": describe_shift(spec.shift),
            "classnames": list(source.classnames),
            "counts": {name: len(entries) for name, entries in split.items()},
            "source_indices": chosen,  # indices into the downstream part of the source, in split-file order
            "catalog": task.catalog_kwargs(),
        }
        (temporary / TASK_INFO).write_text(json.dumps(info, indent=1) + "\n")  # last: marks the folder complete
        if task.path.exists():
            shutil.rmtree(task.path)
        temporary.rename(task.path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return task


def default_data_root() -> Path:
    """`$PROMPT_CLIP_CACHE/small_clip_data`, or `~/.cache/prompt_clip/small_clip_data`."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/prompt_clip").expanduser() / "small_clip_data"


def build_shifted_tasks(
    data_root: str | os.PathLike | None = None,
    *,
    force: bool = False,
    specs: Sequence[TaskSpec] = DEFAULT_SPECS,
    downstream_data: Sequence[SourceData] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[ShiftedTask]:
    """Writes the shifted downstream tasks under `data_root` (or finds them there) and describes them.

    Args:
        data_root (`str` or `os.PathLike`, *optional*):
            CoOp's DATA root; each task gets its own folder below it. Defaults to `default_data_root()`.
        force (`bool`, *optional*, defaults to `False`):
            Rewrite tasks even when a complete folder of the same recipe exists.
        specs (`Sequence[TaskSpec]`, *optional*):
            The tasks; `DEFAULT_SPECS` by default.
        downstream_data (`Sequence[SourceData]`, *optional*):
            Injected downstream images (tests); by default `sources.downstream_sources()`.
        log (`Callable[[str], None]`, *optional*, defaults to `print`):
            Progress messages; `None` for silence.

    Returns:
        `list[ShiftedTask]`: one per spec, in order.
    """
    data_root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    sources = {source.name: source for source in (downstream_data or downstream_sources())}
    data_root.mkdir(parents=True, exist_ok=True)
    tasks = []
    for spec in specs:
        if spec.source not in sources:
            raise ValueError(f"{spec.name}: no downstream source named {spec.source!r} (have {sorted(sources)})")
        tasks.append(build_task(spec, sources[spec.source], data_root, force))
        if log:
            log(f"task {spec.name}: {tasks[-1].path} ({describe_shift(spec.shift)})")
    return tasks


def load_split_images(task: ShiftedTask, split: str = "test") -> tuple[torch.Tensor, np.ndarray]:
    """The PNG images of one split as `uint8` RGB `(N, 3, 32, 32)`, and their labels."""
    from PIL import Image

    entries = task.read_split()[split]
    images = [np.asarray(Image.open(task.path / task.image_dir / path).convert("RGB")) for path, _, _ in entries]
    labels = np.asarray([label for _, label, _ in entries], dtype=np.int64)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), labels


def task_zero_shot_accuracy(
    model_dir: str | os.PathLike, task: ShiftedTask, split: str = "test", templates: Sequence[str] | None = None
) -> dict[str, float]:
    """Zero-shot accuracy of a saved CLIP on a task's shifted PNGs and on the same images unshifted.

    Args:
        model_dir (`str` or `os.PathLike`): a folder written by `pretrain_small_clip`.
        task (`ShiftedTask`): a built task.
        split (`str`, *optional*, defaults to `"test"`): which split to classify.
        templates (`Sequence[str]`, *optional*): prompt templates; the task's template by default.

    Returns:
        `dict[str, float]`: `{"shifted": ..., "unshifted": ...}`, accuracies in [0, 1]. The unshifted images are
        rebuilt from the source (they need Fashion-MNIST / scikit-learn), from the indices in task_info.json.
    """
    clip, tokenizer = load_small_clip(model_dir)
    templates = tuple(templates or (task.template,))
    images, labels = load_split_images(task, split)
    info = json.loads((task.path / TASK_INFO).read_text())
    source = {data.name: data for data in downstream_sources()}[info["spec"]["source"]]
    clean = to_canvas(source.images[np.asarray(info["source_indices"][split], dtype=np.int64)])
    return {
        "shifted": zero_shot_accuracy(clip, tokenizer, images, labels, task.classnames, templates),
        "unshifted": zero_shot_accuracy(clip, tokenizer, clean, labels, task.classnames, templates),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: build the tasks; with --model-dir, print zero-shot accuracy unshifted vs shifted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_root", nargs="?", default=None, help="CoOp DATA root (default: see default_data_root)")
    parser.add_argument("--force", action="store_true", help="rewrite existing tasks")
    parser.add_argument("--model-dir", default=None, help="a pretrained small CLIP folder, for the zero-shot report")
    args = parser.parse_args(argv)
    tasks = build_shifted_tasks(args.data_root, force=args.force)
    if args.model_dir:
        for task in tasks:
            result = task_zero_shot_accuracy(args.model_dir, task)
            print(f"{task.name}: zero-shot unshifted {result['unshifted']:.1%} -> shifted {result['shifted']:.1%}")


if __name__ == "__main__":
    main()
