"""The trainer: the field's schedule, exact resume, mixed precision, checkpoint files, errors; and the recipes."""

from __future__ import annotations

import dataclasses
import math
import shutil

import pytest
import torch

from prompt_clip import AMMPLConfig, BloomConfig, BMIPConfig, ClipShape, CoOpConfig, IVLPConfig, get_prompt_model
from prompt_clip.data import ImageTransform, PromptDataset, load_dataset
from prompt_clip.recipes import DEPTH_FIELDS, get_recipe, list_recipes, scale_to_clip
from prompt_clip.training import PromptTrainer, TrainingConfig, learning_rate, list_checkpoints

from .conftest import make_tiny_clip
from .data_helpers import make_eurosat


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory):
    return load_dataset("EuroSAT", make_eurosat(tmp_path_factory.mktemp("data")))


def train_set(splits, clip) -> PromptDataset:
    return PromptDataset(splits.train, ImageTransform.from_clip_config(clip.config, train=True))


def trained_state(config, training, splits, tokenizer, output_dir=None, resume=None) -> dict[str, torch.Tensor]:
    clip = make_tiny_clip()
    model = get_prompt_model(clip, config, tokenizer=tokenizer, classnames=splits.classnames)
    trainer = PromptTrainer(model, train_set(splits, clip), training, output_dir=output_dir)
    trainer.train(resume_from_checkpoint=resume)
    return {name: tensor.clone() for name, tensor in trainer.model.learner.state_dict().items()}


def quick(**changes) -> TrainingConfig:
    values = dict(epochs=2, batch_size=8, lr=0.05, warmup_epochs=1, warmup_lr=0.01, progress=False)
    values.update(changes)
    return TrainingConfig(**values)


# Each row exercises a different piece of state that an exact resume must restore.
RESUME_CASES = [
    pytest.param(CoOpConfig(n_ctx=2), quick(), id="coop-sgd-momentum"),
    pytest.param(BMIPConfig(depth=2), quick(optimizer="adam", lr=0.01), id="bmip-adam"),
    pytest.param(AMMPLConfig(mask_mode="shared"), quick(batch_size=4), id="ammpl-sampled-masks"),
    pytest.param(BloomConfig(n_ctx=1, insert_end=3, fusion="routing"), quick(), id="bloom-gumbel-routing"),
    pytest.param(CoOpConfig(n_ctx=2), quick(batch_size=4, gradient_accumulation_steps=3), id="coop-accumulation"),
    pytest.param(
        IVLPConfig(text_depth=2, vision_depth=2), quick(epochs=3, objective="promptsrc"), id="promptsrc-aggregation"
    ),
]


@pytest.mark.parametrize("config, training", RESUME_CASES)
def test_resume_from_any_checkpoint_ends_with_the_uninterrupted_prompts(
    config, training, eurosat, tokenizer, tmp_path
):
    uninterrupted = trained_state(config, training, eurosat, tokenizer)
    other_seed = trained_state(config, training.replace(seed=2), eurosat, tokenizer)
    # The same run with periodic checkpoints (saving must not perturb it), then resumed from a mid-epoch one.
    training = training.replace(checkpoint_every=1, keep_checkpoints=1000)
    with_checkpoints = trained_state(config, training, eurosat, tokenizer, output_dir=tmp_path)
    checkpoints = list_checkpoints(tmp_path)
    assert len(checkpoints) > 4
    middle = checkpoints[len(checkpoints) // 2 - 1]
    resumed = trained_state(config, training, eurosat, tokenizer, output_dir=tmp_path / "again", resume=middle)
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, with_checkpoints[name]), name
        assert torch.equal(tensor, resumed[name]), name
    assert any(not torch.equal(tensor, other_seed[name]) for name, tensor in uninterrupted.items())


def test_resume_true_continues_from_the_newest_checkpoint(eurosat, tokenizer, tmp_path):
    training = quick(checkpoint_every=2, keep_checkpoints=1000)
    finished = trained_state(CoOpConfig(n_ctx=2), training, eurosat, tokenizer, tmp_path)
    # An interruption after the third checkpoint: later ones were never written.
    for late in list_checkpoints(tmp_path)[3:]:
        shutil.rmtree(late)
    resumed = trained_state(CoOpConfig(n_ctx=2), training, eurosat, tokenizer, tmp_path, resume=True)
    assert all(torch.equal(finished[name], resumed[name]) for name in finished)
    with pytest.raises(ValueError, match="another recipe"):
        trained_state(CoOpConfig(n_ctx=2), training.replace(lr=0.1), eurosat, tokenizer, tmp_path, resume=True)


def test_resume_true_without_checkpoints_starts_afresh(eurosat, tokenizer, tmp_path):
    fresh = trained_state(CoOpConfig(n_ctx=2), quick(), eurosat, tokenizer)
    resumed = trained_state(CoOpConfig(n_ctx=2), quick(), eurosat, tokenizer, tmp_path, resume=True)
    assert all(torch.equal(fresh[name], resumed[name]) for name in fresh)


def test_checkpoints_are_safetensors_and_json_only_and_pruned(eurosat, tokenizer, tmp_path):
    trained_state(CoOpConfig(n_ctx=2), quick(checkpoint_every=1, keep_checkpoints=2), eurosat, tokenizer, tmp_path)
    checkpoints = list_checkpoints(tmp_path)
    assert len(checkpoints) == 2
    suffixes = {path.suffix for path in checkpoints[-1].rglob("*") if path.is_file()}
    assert suffixes <= {".json", ".safetensors", ".md"}
    assert not list(tmp_path.glob(".*tmp")), "no temporary folder left behind"


def test_bf16_autocast_trains_float32_prompts(eurosat, tokenizer):
    clip = make_tiny_clip()
    model = get_prompt_model(clip, CoOpConfig(n_ctx=2), tokenizer=tokenizer, classnames=eurosat.classnames)
    before = model.learner.ctx.detach().clone()
    PromptTrainer(model, train_set(eurosat, clip), quick(mixed_precision="bf16")).train()
    assert model.learner.ctx.dtype == torch.float32
    assert not torch.equal(before, model.learner.ctx)
    assert torch.isfinite(model.learner.ctx).all()


def test_training_lowers_the_loss(eurosat, tokenizer):
    clip = make_tiny_clip()
    model = get_prompt_model(clip, CoOpConfig(n_ctx=4), tokenizer=tokenizer, classnames=eurosat.classnames)
    dataset = train_set(eurosat, clip)
    first = PromptTrainer(model, dataset, quick(epochs=1, warmup_epochs=1, warmup_lr=0.0)).train().loss
    last = PromptTrainer(model, dataset, quick(epochs=8, warmup_epochs=0, lr=0.5, scheduler="constant")).train().loss
    assert last < first


def test_learning_rate_is_constant_warmup_then_cosine_per_epoch():
    config = TrainingConfig(epochs=4, lr=0.1, warmup_epochs=1, warmup_lr=1e-5)
    assert learning_rate(config, 0) == 1e-5
    assert learning_rate(config, 1) == pytest.approx(0.1)
    assert learning_rate(config, 3) == pytest.approx(0.05 * (1 + math.cos(math.pi * 2 / 4)))
    assert learning_rate(config.replace(scheduler="constant"), 3) == 0.1


@pytest.mark.parametrize(
    "field, value",
    [("epochs", 0), ("lr", -1.0), ("optimizer", "lamb"), ("mixed_precision", "fp8"), ("objective", "mse")],
)
def test_bad_training_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"TrainingConfig.{field}"):
        TrainingConfig(**{field: value})


def test_trainer_refuses_bad_setups_before_training(eurosat, tokenizer):
    clip = make_tiny_clip()
    dataset = train_set(eurosat, clip)
    model = get_prompt_model(clip, CoOpConfig(n_ctx=2), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="set_classnames"):
        PromptTrainer(model, dataset, quick())
    model.set_classnames(eurosat.classnames)
    with pytest.raises(ValueError, match="empty"):
        PromptTrainer(model, PromptDataset([], dataset.transform), quick())
    with pytest.raises(ValueError, match="output_dir"):
        PromptTrainer(model, dataset, quick(checkpoint_every=3))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="bf16"):
            PromptTrainer(model, dataset, quick(mixed_precision="fp16"))


# -- recipes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_recipes())
@pytest.mark.parametrize("protocol", ["base_to_novel", "few_shot", "cross_dataset"])
def test_every_recipe_builds_on_a_small_clip_after_depth_scaling(name, protocol, tokenizer):
    recipe = get_recipe(name, protocol)
    clip = make_tiny_clip()
    config = scale_to_clip(recipe.config, ClipShape.from_clip_config(clip.config))
    model = get_prompt_model(clip, config, tokenizer=tokenizer, classnames=["cat", "dog"])
    assert model.get_nb_trainable_parameters()[0] > 0
    assert recipe.training.epochs >= 1 and recipe.source


def test_recipes_carry_the_published_numbers():
    maple = get_recipe("maple")
    assert (maple.config.depth, maple.training.lr, maple.training.epochs) == (9, 0.0035, 5)
    assert get_recipe("maple", "cross_dataset").config.depth == 3
    assert get_recipe("bmip").training.optimizer == "adam"
    assert get_recipe("promptsrc").training.objective == "promptsrc"
    assert get_recipe("coop", "few_shot", dataset="ImageNet").training.epochs == 50
    with pytest.raises(ValueError, match="No recipe named 'nope'"):
        get_recipe("nope")


def test_scale_to_clip_keeps_relative_sizes(vit_b16_clip):
    def shape(layers: int, image_size: int = 32) -> ClipShape:
        return dataclasses.replace(
            ClipShape.from_clip_config(make_tiny_clip().config),
            text_layers=layers,
            vision_layers=layers,
            image_size=image_size,
        )

    assert scale_to_clip(get_recipe("maple").config, shape(4)).depth == 3
    bloom = scale_to_clip(get_recipe("bloom").config, shape(3))
    assert (bloom.insert_start, bloom.insert_end) == (0, 3)
    assert scale_to_clip(get_recipe("vp").config, shape(3, image_size=32)).pad_size == 4
    for name in list_recipes():  # the published recipes are untouched on ViT-B/16 itself
        recipe = get_recipe(name)
        assert scale_to_clip(recipe.config, ClipShape.from_clip_config(vit_b16_clip.config)) == recipe.config
    assert set(DEPTH_FIELDS) <= set(list_recipes())


def test_accelerate_launch_settings_do_not_leak_into_the_trainer(eurosat, tokenizer, monkeypatch):
    expected = trained_state(CoOpConfig(n_ctx=2), quick(), eurosat, tokenizer)
    # what `accelerate launch --mixed_precision bf16 --gradient_accumulation_steps 4` exports to each process
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    got = trained_state(CoOpConfig(n_ctx=2), quick(), eurosat, tokenizer)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_checkpoints_of_another_run_are_never_mixed_in(eurosat, tokenizer, tmp_path):
    trained_state(CoOpConfig(n_ctx=2), quick(), eurosat, tokenizer, tmp_path)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        trained_state(CoOpConfig(n_ctx=2), quick(), eurosat, tokenizer, tmp_path)
    with pytest.raises(ValueError, match="weight_decay"):
        trained_state(CoOpConfig(n_ctx=2), quick(weight_decay=0.1), eurosat, tokenizer, tmp_path, resume=True)
    # cosmetic fields may change on resume
    trained_state(CoOpConfig(n_ctx=2), quick(keep_checkpoints=3), eurosat, tokenizer, tmp_path, resume=True)
