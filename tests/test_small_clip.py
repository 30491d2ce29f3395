"""The small-CLIP benchmark kit: idx reader, pretraining (tiny recipe on injected data), cache, shifted tasks."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.small_clip import pretrain as pretrain_module
from benchmarks.small_clip.imaging import to_canvas
from benchmarks.small_clip.pretrain import (
    INFO_FILE,
    PretrainRecipe,
    batch_shares,
    contrastive_loss,
    pretrain_small_clip,
    recipe_key,
)
from benchmarks.small_clip.shifts import SHIFTS, apply_shift
from benchmarks.small_clip.sources import (
    DIGIT_CLASSES,
    FASHION_CLASSES,
    SourceData,
    fashion_mnist_dir,
    load_fashion_mnist,
    per_class_split,
    read_idx,
)
from benchmarks.small_clip.tasks import TaskSpec, build_shifted_tasks, load_split_images

# A recipe small enough to train in about a second: the pipeline is what is tested, not the accuracy.
TINY = dict(
    patch_size=8,
    vision_width=32,
    vision_layers=1,
    vision_heads=2,
    text_width=32,
    text_layers=1,
    text_heads=2,
    projection_dim=16,
    steps=3,
    batch_size=16,
)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes an idx file of uint8 values (magic 0x0000 08 <ndim>, big-endian sizes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def fake_source(name: str, classnames: tuple[str, ...], per_class: int, side: int, seed: int) -> SourceData:
    """Random images whose mean brightness depends on the class, so that they are not all alike."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(classnames)), per_class)
    images = rng.integers(0, 60, (len(labels), side, side)) + (labels * 19)[:, None, None]
    return SourceData(name, images.clip(0, 255).astype(np.uint8), labels.astype(np.int64), classnames)


@pytest.fixture(scope="module")
def injected():
    pretrain = [fake_source("fashion", FASHION_CLASSES, 6, 28, 0), fake_source("digits", DIGIT_CLASSES, 4, 8, 1)]
    downstream = [fake_source("fashion", FASHION_CLASSES, 7, 28, 2), fake_source("digits", DIGIT_CLASSES, 7, 8, 3)]
    return pretrain, downstream


def test_read_idx_gz_and_raw(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x-idx3-ubyte.gz", array)
    write_idx(tmp_path / "x-idx3-ubyte", array)
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), array)
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    with open(tmp_path / "x-idx3-ubyte", "ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(ValueError, match="announces"):
        read_idx(tmp_path / "x-idx3-ubyte")


def test_fashion_reader_on_a_written_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("t10k", 3)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (count,)))
    test = load_fashion_mnist("test", root=tmp_path)
    assert test.images.shape == (3, 28, 28) and test.images.dtype == np.uint8
    assert test.labels.dtype == np.int64 and test.classnames == FASHION_CLASSES


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist_dir(tmp_path)


def test_per_class_split_is_fixed_and_disjoint():
    data = fake_source("digits", DIGIT_CLASSES, 10, 8, 0)
    first, rest = per_class_split(data, 0.6)
    again, _ = per_class_split(data, 0.6)
    assert np.array_equal(first.images, again.images)
    assert np.bincount(first.labels).tolist() == [6] * 10 and np.bincount(rest.labels).tolist() == [4] * 10
    rows = {row.tobytes() for row in first.images}
    assert not any(row.tobytes() in rows for row in rest.images)


def test_canvas_and_batch_shares():
    canvas = to_canvas(np.full((2, 8, 8), 255, dtype=np.uint8))
    assert canvas.shape == (2, 3, 32, 32) and canvas.dtype == torch.uint8
    assert canvas[:, :, :2].max() == 0 and canvas[:, :, 2:30, 2:30].min() == 255  # 28x28 content, black frame
    assert batch_shares([60000, 1078], 128) == [113, 15]
    assert sum(batch_shares([5, 7, 11], 10)) == 10


def test_contrastive_loss_without_groups_is_clips():
    torch.manual_seed(0)
    images, texts = (torch.nn.functional.normalize(torch.randn(6, 8), dim=-1) for _ in range(2))
    scale = torch.tensor(2.0)
    logits = scale.exp() * images @ texts.T
    targets = torch.arange(6)
    cross_entropy = torch.nn.functional.cross_entropy
    expected = (cross_entropy(logits, targets) + cross_entropy(logits.T, targets)) / 2
    torch.testing.assert_close(contrastive_loss(images, texts, scale, None), expected)
    torch.testing.assert_close(contrastive_loss(images, texts, scale, torch.arange(6)), expected)


def test_pretrain_end_to_end_reload_and_cache(tmp_path, injected, monkeypatch):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    pretrain, downstream = injected
    # threads=None keeps the test's thread count, so that the in-memory run below matches bit for bit.
    options = dict(pretrain_data=pretrain, downstream_data=downstream, log=None, threads=None, **TINY)
    folder = pretrain_small_clip(tmp_path, **options)
    recipe = PretrainRecipe(**TINY)
    assert folder == tmp_path / recipe_key(recipe, [*pretrain, *downstream])
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no temporary folder left
    info = json.loads((folder / INFO_FILE).read_text())
    assert info["pretrain_sizes"] == {"fashion": 60, "digits": 40} and len(info["zero_shot_accuracy"]) == 2
    assert all(0 <= value <= 1 for value in info["zero_shot_accuracy"].values()) and "zero-shot" in info["summary"]

    clip = CLIPModel.from_pretrained(folder).eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    processor = CLIPImageProcessor.from_pretrained(folder)
    assert processor.crop_size == {"height": 32, "width": 32}
    assert tokenizer("a photo of a sneaker.")["input_ids"][0] == 49406 and len(tokenizer) == 49408

    # The same recipe trained again in memory gives the saved weights: deterministic, and saved faithfully.
    torch.manual_seed(recipe.seed)
    fresh = CLIPModel(recipe.clip_config())
    pretrain_module.train_contrastive(fresh, tokenizer, pretrain, recipe, log=None)
    fresh.eval()
    saved, trained = clip.state_dict(), fresh.state_dict()
    assert saved.keys() == trained.keys() and all(torch.equal(saved[name], trained[name]) for name in saved)
    tokens = tokenizer(["a photo of a sneaker.", "the digit seven."], padding=True, return_tensors="pt")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = fresh(**tokens, pixel_values=pixels).logits_per_image
        # Equal weights; the last bits of the logits may differ with the memory alignment of the loaded tensors.
        torch.testing.assert_close(clip(**tokens, pixel_values=pixels).logits_per_image, expected)

    # A second call finds the complete folder and does not train.
    mtime = (folder / INFO_FILE).stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the cache was complete")

    monkeypatch.setattr(pretrain_module, "train_contrastive", no_training)
    again = pretrain_small_clip(tmp_path, **options)
    assert again == folder and (folder / INFO_FILE).stat().st_mtime_ns == mtime

    # An interrupted run (here: forced, failing) keeps the old folder and leaves no temporary one.
    with pytest.raises(AssertionError, match="trained although"):
        pretrain_small_clip(tmp_path, force=True, **options)
    assert (folder / INFO_FILE).stat().st_mtime_ns == mtime
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([folder.name, "tokenizer"])


def test_default_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPT_CLIP_CACHE", str(tmp_path))
    assert pretrain_module.default_cache_root() == tmp_path / "small_clip"


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_shifts_are_deterministic(name):
    images = to_canvas(fake_source("digits", DIGIT_CLASSES, 2, 8, 0).images)
    first, second = apply_shift(images, name, seed=3), apply_shift(images, name, seed=3)
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, second)
    assert torch.equal(first, images) == (name == "none")


def test_build_shifted_tasks_layout(tmp_path, injected):
    _, downstream = injected
    specs = [
        TaskSpec("TinyFashion", "tiny_fashion", "fashion", ("navy_background",), 3, 1, 2),
        TaskSpec("TinyDigits", "tiny_digits", "digits", ("rotate90", "noise"), 3, 1, None),
    ]
    tasks = build_shifted_tasks(tmp_path, specs=specs, downstream_data=downstream, log=None)
    assert [task.name for task in tasks] == ["TinyFashion", "TinyDigits"]
    for task, per_class in zip(tasks, ({"train": 3, "val": 1, "test": 2}, {"train": 3, "val": 1, "test": 3})):
        assert task.split_file == f"split_zhou_{task.name}.json" and task.image_dir == "images"
        split = json.loads((task.path / task.split_file).read_text())
        assert set(split) == {"train", "val", "test"}
        for name, entries in split.items():
            assert len(entries) == 10 * per_class[name]
            for path, label, classname in entries:
                assert (task.path / "images" / path).is_file()
                assert task.classnames[label] == classname
                assert path.split("/")[0] == classname.replace(" ", "_")
        paths = [entry[0] for entries in split.values() for entry in entries]
        assert len(set(paths)) == len(paths)
        images, labels = load_split_images(task, "test")
        assert images.shape == (10 * per_class["test"], 3, 32, 32) and images.dtype == torch.uint8
        assert labels.tolist() == [entry[1] for entry in split["test"]]
    assert "ankle_boot" in os.listdir(tasks[0].path / "images")

    # Built again: the same files, not rewritten; forced: rewritten with identical bytes (the shift is deterministic).
    info = tasks[1].path / "task_info.json"
    mtime, first_png = info.stat().st_mtime_ns, (tasks[1].path / "images" / "zero" / "0000.png").read_bytes()
    build_shifted_tasks(tmp_path, specs=specs, downstream_data=downstream, log=None)
    assert info.stat().st_mtime_ns == mtime
    build_shifted_tasks(tmp_path, specs=specs, downstream_data=downstream, log=None, force=True)
    assert (tasks[1].path / "images" / "zero" / "0000.png").read_bytes() == first_png
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def _fashion_available() -> bool:
    try:
        fashion_mnist_dir()
    except FileNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _fashion_available(), reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist():
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_real_digits_split():
    pytest.importorskip("sklearn", reason="scikit-learn missing: pip install scikit-learn")
    from benchmarks.small_clip.sources import DIGITS_PRETRAIN_FRACTION, load_digits

    digits = load_digits()
    pretrain, downstream = per_class_split(digits, DIGITS_PRETRAIN_FRACTION)
    assert len(pretrain) + len(downstream) == len(digits) == 1797
    assert digits.images.max() == 255 and np.bincount(downstream.labels).min() >= 25 + 32 + 8
