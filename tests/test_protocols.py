"""Every protocol end to end on a tiny CLIP and a dataset written in the field's layout at test time."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ElementTree

import pytest
import torch

from prompt_clip import CoOpConfig, PromptModel, get_prompt_model
from prompt_clip.data import ImageTransform, PromptDataset, load_dataset, select_classes
from prompt_clip.evaluation import harmonic_mean, predict
from prompt_clip.protocols import ProtocolRunner
from prompt_clip.recipes import list_recipes
from prompt_clip.reporting import load_results, plot_base_to_novel_svg, render_tables
from prompt_clip.training import PromptTrainer

from .conftest import make_tiny_clip
from .data_helpers import make_eurosat, make_imagenet_family

ONE_EPOCH = {"epochs": 1, "warmup_epochs": 0, "progress": False}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_eurosat(root)
    make_imagenet_family(root)
    return root


@pytest.fixture(scope="module")
def imagenet_family(data_root):
    # The fixture's ImageNet has 3 classes, so the catalog's class-count check (1000) is off for it.
    names = ("ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA")
    return {name: load_dataset(name, data_root, check_num_classes=False) for name in names}


def runner(tokenizer, data_root, output_dir=None, clip=None, **kwargs) -> ProtocolRunner:
    kwargs.setdefault("training_overrides", ONE_EPOCH)
    kwargs.setdefault("seeds", (1, 2))
    kwargs.setdefault("shots", 2)
    return ProtocolRunner(clip or make_tiny_clip(), tokenizer, data_root=data_root, output_dir=output_dir, **kwargs)


def clip_outputs(clip, tokenizer) -> torch.Tensor:
    torch.manual_seed(0)
    tokens = tokenizer(["a photo of a cat."], return_tensors="pt")
    with torch.no_grad():
        return clip(**tokens, pixel_values=torch.randn(2, 3, 32, 32)).logits_per_image


@pytest.mark.parametrize("method", ["zeroshot", *list_recipes()])
def test_base_to_novel_with_open_world_for_every_method(method, tokenizer, data_root, tmp_path):
    clip = make_tiny_clip()
    before = clip_outputs(clip, tokenizer)
    records = runner(tokenizer, data_root, tmp_path, clip=clip, seeds=(1,)).base_to_novel(method, "EuroSAT")
    (record,) = records
    assert record["method"] == method and record["dataset"] == "EuroSAT" and record["shots"] == 2
    for key in ("base", "novel", "open_world_all", "open_world_base", "open_world_novel"):
        assert 0.0 <= record[key] <= 100.0
    assert record["hm"] == pytest.approx(harmonic_mean(record["base"], record["novel"]))
    assert (record["trainable_params"] == 0) == (method == "zeroshot")
    assert (tmp_path / "runs" / "base_to_novel" / "EuroSAT" / method / "shots2-seed1" / "result.json").is_file()
    # the CLIP is shared by every run: each run unloads its method and leaves the CLIP as it was
    assert torch.equal(before, clip_outputs(clip, tokenizer))


def test_base_to_novel_numbers_are_those_of_the_trained_adapter(tokenizer, data_root, tmp_path):
    records = runner(tokenizer, data_root, tmp_path, seeds=(1,)).base_to_novel("coop", "EuroSAT")
    full = load_dataset("EuroSAT", data_root)
    base, novel = select_classes(full, "base"), select_classes(full, "novel")
    model = PromptModel.from_pretrained(
        make_tiny_clip(),
        tmp_path / "runs" / "base_to_novel" / "EuroSAT" / "coop" / "shots2-seed1" / "adapter",
        tokenizer,
    )
    test = ImageTransform.from_clip_config(model.clip.config, train=False)

    def accuracy(splits, mask=None) -> float:
        model.set_classnames(splits.classnames)
        return predict(model, PromptDataset(splits.test, test)).accuracy(mask)

    assert records[0]["base"] == pytest.approx(accuracy(base))
    assert records[0]["novel"] == pytest.approx(accuracy(novel))
    labels = torch.tensor([sample.label for sample in full.test])
    assert records[0]["open_world_base"] == pytest.approx(accuracy(full, labels < base.num_classes))
    assert records[0]["open_world_all"] == pytest.approx(accuracy(full))


def test_zero_shot_row_is_clip_with_the_dataset_template(tokenizer, data_root):
    clip = make_tiny_clip()
    (record,) = runner(tokenizer, data_root, clip=clip, seeds=(1,)).base_to_novel("zeroshot", "EuroSAT")
    base = select_classes(load_dataset("EuroSAT", data_root), "base")
    assert base.template == "a centered satellite photo of {}."
    model = get_prompt_model(clip, CoOpConfig(n_ctx=1, template=base.template), tokenizer, base.classnames)
    dataset = PromptDataset(base.test, ImageTransform.from_clip_config(clip.config, train=False))
    assert record["base"] == pytest.approx(predict(model, dataset, zero_shot=True).accuracy())


def test_finished_runs_are_reused_and_a_changed_recipe_trains_again(tokenizer, data_root, tmp_path, monkeypatch):
    first = runner(tokenizer, data_root, tmp_path).base_to_novel("coop", "EuroSAT")

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(PromptTrainer, "train", no_training)
    again = runner(tokenizer, data_root, tmp_path).base_to_novel("coop", "EuroSAT")
    assert again == first
    changed = runner(tokenizer, data_root, tmp_path, training_overrides={**ONE_EPOCH, "lr": 0.01})
    with pytest.raises(AssertionError, match="trained again"):
        changed.base_to_novel("coop", "EuroSAT")


def test_results_files_tables_and_plot(tokenizer, data_root, tmp_path):
    run = runner(tokenizer, data_root, tmp_path)
    for method in ("zeroshot", "coop", "vpt"):
        run.base_to_novel(method, "EuroSAT")
    records = load_results(tmp_path)
    assert records == json.loads(json.dumps(run.records))
    assert len(records) == 6
    with open(tmp_path / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["method"] for row in rows] == [r["method"] for r in records]
    tables = render_tables(records)
    assert "Base-to-novel: average over 1 dataset(s)" in tables and "Open-world" in tables
    for label in ("Zero-shot CLIP", "CoOp", "VPT"):
        assert f"| {label} |" in tables
    coop = [r for r in records if r["method"] == "coop"]
    mean_base = sum(r["base"] for r in coop) / 2
    mean_novel = sum(r["novel"] for r in coop) / 2
    assert f"| CoOp | {mean_base:.2f} | {mean_novel:.2f} | {harmonic_mean(mean_base, mean_novel):.2f}" in tables
    svg = plot_base_to_novel_svg(records, tmp_path / "plot.svg", title="test")
    root = ElementTree.parse(svg).getroot()
    assert len(root.findall("{http://www.w3.org/2000/svg}rect")) >= 3 * 3


def test_few_shot_over_shots_and_seeds(tokenizer, data_root, tmp_path):
    records = runner(tokenizer, data_root, tmp_path).few_shot("coop", "EuroSAT", shots=(1, 2))
    assert [(r["shots"], r["seed"]) for r in records] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(0 <= r["accuracy"] <= 100 for r in records)
    assert (tmp_path / "few_shot" / "EuroSAT" / "shot_2-seed_1.json").is_file()
    assert "Few-shot: EuroSAT" in render_tables(records)


def test_cross_dataset_with_a_chosen_source(tokenizer, data_root, imagenet_family):
    run = runner(tokenizer, data_root, seeds=(1,))
    records = run.cross_dataset("maple", source="EuroSAT", targets=[imagenet_family["ImageNet"]])
    assert [(r["source"], r["dataset"]) for r in records] == [("EuroSAT", "EuroSAT"), ("EuroSAT", "ImageNet")]
    assert "Cross-dataset transfer from EuroSAT" in render_tables(records)


def test_domain_generalisation_on_the_imagenet_variants(tokenizer, data_root, imagenet_family):
    run = runner(tokenizer, data_root, seeds=(1,), shots=1)
    variants = [imagenet_family[name] for name in ("ImageNetV2", "ImageNetSketch", "ImageNetA")]
    records = run.domain_generalisation("coop", source=imagenet_family["ImageNet"], targets=variants)
    assert [r["dataset"] for r in records] == ["ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA"]
    assert all(r["protocol"] == "domain_generalisation" for r in records)
    assert "Domain generalisation from ImageNet" in render_tables(records)


def test_a_broken_dataset_fails_before_any_training(tokenizer, data_root, tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    make_eurosat(broken)
    split_path = broken / "eurosat" / "split_zhou_EuroSAT.json"
    split = json.loads(split_path.read_text())
    split["test"][3][0] = "Forest/missing.jpg"
    split_path.write_text(json.dumps(split))

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(PromptTrainer, "train", no_training)
    with pytest.raises(ValueError, match="missing.jpg"):
        runner(tokenizer, broken).base_to_novel("coop", "EuroSAT")


def test_runner_refuses_to_run_in_several_processes(tokenizer, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="WORLD_SIZE=2"):
        ProtocolRunner(make_tiny_clip(), tokenizer)


def test_runner_needs_seeds_and_a_data_root_for_names(tokenizer):
    with pytest.raises(ValueError, match="seed"):
        ProtocolRunner(make_tiny_clip(), tokenizer, seeds=())
    with pytest.raises(ValueError, match="data_root"):
        ProtocolRunner(make_tiny_clip(), tokenizer).base_to_novel("coop", "EuroSAT")


def test_same_seed_same_numbers_whatever_the_global_random_state(tokenizer, data_root):
    results = []
    for state in (123, 456):
        torch.manual_seed(state)  # what other code did before: must not leak into the seeded run
        (record,) = runner(tokenizer, data_root, seeds=(1,)).base_to_novel("maple", "EuroSAT")
        results.append({key: record[key] for key in ("base", "novel", "train_loss", "fingerprint")})
    assert results[0] == results[1]


def test_sweeps_into_one_folder_add_up(tokenizer, data_root, tmp_path):
    runner(tokenizer, data_root, tmp_path, seeds=(1,)).base_to_novel("zeroshot", "EuroSAT")
    runner(tokenizer, data_root, tmp_path, seeds=(1,)).base_to_novel("coop", "EuroSAT")
    runner(tokenizer, data_root, tmp_path, seeds=(1,), reuse_results=False).base_to_novel("coop", "EuroSAT")
    assert sorted(r["method"] for r in load_results(tmp_path)) == ["coop", "zeroshot"]


@pytest.mark.filterwarnings("ignore:ImageNet val")  # the fixture's ImageNet has one validation image per class
def test_transfer_evaluates_each_target_with_its_own_template(tokenizer, data_root, imagenet_family):
    clip = make_tiny_clip()
    eurosat = load_dataset("EuroSAT", data_root)
    records = runner(tokenizer, data_root, clip=clip, seeds=(1,)).cross_dataset(
        "zeroshot", source=imagenet_family["ImageNet"], targets=[eurosat]
    )
    model = get_prompt_model(clip, CoOpConfig(n_ctx=1, template=eurosat.template), tokenizer, eurosat.classnames)
    dataset = PromptDataset(eurosat.test, ImageTransform.from_clip_config(clip.config, train=False))
    assert records[1]["accuracy"] == pytest.approx(predict(model, dataset, zero_shot=True).accuracy())


def test_new_targets_reuse_the_saved_adapter_and_other_weights_train_again(
    tokenizer, data_root, imagenet_family, tmp_path, monkeypatch
):
    source, sketch, v2 = (imagenet_family[name] for name in ("ImageNet", "ImageNetSketch", "ImageNetV2"))
    first = runner(tokenizer, data_root, tmp_path, seeds=(1,), shots=1).domain_generalisation("coop", source, [sketch])
    trained = PromptTrainer.train

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(PromptTrainer, "train", no_training)
    more = runner(tokenizer, data_root, tmp_path, seeds=(1,), shots=1).domain_generalisation(
        "coop", source, [sketch, v2]
    )
    assert more[:2] == first and more[2]["dataset"] == "ImageNetV2"
    assert {r["dataset"] for r in load_results(tmp_path)} == {"ImageNet", "ImageNetSketch", "ImageNetV2"}
    with pytest.raises(AssertionError, match="trained again"):  # same name, other weights
        runner(tokenizer, data_root, tmp_path, clip=make_tiny_clip(seed=5), seeds=(1,), shots=1).domain_generalisation(
            "coop", source, [sketch]
        )
    monkeypatch.setattr(PromptTrainer, "train", trained)


def test_tables_never_average_different_shot_counts():
    def record(shots: int, accuracy: float) -> dict:
        return {"protocol": "cross_dataset", "method": "coop", "source": "Food101", "dataset": "Food101",
                "seed": 1, "shots": shots, "accuracy": accuracy}  # fmt: skip

    tables = render_tables([record(1, 40.0), record(16, 80.0)])
    assert "from Food101, 1 shots" in tables and "from Food101, 16 shots" in tables
    assert "60.00" not in tables
