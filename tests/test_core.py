"""What specific methods compute, parameter counts, the registry, and errors for bad input."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from prompt_clip import (
    AMMPLConfig,
    CoOpConfig,
    MaPLeConfig,
    PromptConfig,
    PromptLearner,
    PromptModel,
    Prompts,
    get_prompt_model,
    list_methods,
    register_method,
)

from .conftest import CLASSNAMES, make_tiny_clip
from .helpers import build, labels_for, sgd_steps
from .method_table import BAD_CONFIG_VALUES, VIT_B16_PARAMETER_COUNTS


def zero_shot_logits(clip, tokenizer, images, template="a photo of a {}."):
    prompts = [template.format(name.replace("_", " ")) for name in CLASSNAMES]
    ids = tokenizer(prompts, padding=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return clip(input_ids=ids, pixel_values=images).logits_per_image


@pytest.mark.parametrize("n_ctx", [4, 2])
def test_coop_initialised_from_words_is_zero_shot_clip(n_ctx, tokenizer, images):
    # n_ctx=2 learns "a photo" and keeps "of a" as literal text: the prompt is still "a photo of a {class}."
    model = build(CoOpConfig(n_ctx=n_ctx, ctx_init="a photo of a"), tokenizer).eval()
    with torch.no_grad():
        logits = model(images).logits
    torch.testing.assert_close(logits, zero_shot_logits(model.clip, tokenizer, images), atol=1e-5, rtol=1e-5)


def test_maple_vision_prompt_is_the_projection_of_the_text_prompt(tokenizer, images):
    model = build(MaPLeConfig(n_ctx=2, depth=3), tokenizer)
    sgd_steps(model, images, steps=1)
    seen_text, seen_vision = {}, {}
    for index in range(1, 3):
        model.clip.text_model.encoder.layers[index].register_forward_pre_hook(
            lambda m, args, i=index: seen_text.__setitem__(i, args[0].detach())
        )
        model.clip.vision_model.encoder.layers[index].register_forward_pre_hook(
            lambda m, args, i=index: seen_vision.__setitem__(i, args[0].detach())
        )
    model.eval()
    with torch.no_grad():
        model(images)
        for index in range(1, 3):
            text_prompt = seen_text[index][0, 1:3]  # positions 1..n after the start token
            projection = model.learner.projections[index]
            torch.testing.assert_close(seen_vision[index][:, -2:], projection(text_prompt).expand(3, -1, -1))
            assert torch.equal(text_prompt, model.learner.text_prompts[index])


@pytest.mark.parametrize("config, expected", VIT_B16_PARAMETER_COUNTS)
def test_vit_b16_trainable_parameter_counts(config, expected, vit_b16_clip, tokenizer):
    model = get_prompt_model(vit_b16_clip, config, tokenizer=tokenizer, classnames=CLASSNAMES)
    try:
        assert model.get_nb_trainable_parameters()[0] == expected
    finally:
        model.unload()


def test_print_trainable_parameters(tokenizer, capsys):
    model = build(CoOpConfig(n_ctx=4), tokenizer)
    model.print_trainable_parameters()
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == 4 * 32
    assert f"trainable params: {trainable:,d} || all params: {total:,d}" in capsys.readouterr().out


# -- the registry ----------------------------------------------------------------------------------------------


@dataclass
class OneTokenConfig(PromptConfig):
    """A third-party method: the hand-written template plus one learned vision token."""

    method: ClassVar[str] = "test_one_token"


class OneTokenLearner(PromptLearner):
    config_class = OneTokenConfig

    def __init__(self, config, shape, embed_phrase):
        super().__init__(config, shape, embed_phrase)
        self.token = self.random_prompt(1, shape.vision_width)

    def prompts(self) -> Prompts:
        return Prompts(vision={0: self.token})


def test_outside_code_can_register_a_method(tokenizer, images, tmp_path):
    register_method(OneTokenConfig, OneTokenLearner)
    assert "test_one_token" in list_methods()
    model = build(OneTokenConfig(), tokenizer)
    assert model.get_nb_trainable_parameters()[0] == 48
    model.save_pretrained(tmp_path)
    loaded = PromptModel.from_pretrained(make_tiny_clip(), tmp_path, tokenizer=tokenizer)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images).logits, model.eval()(images).logits)
    with pytest.raises(ValueError, match="already registered"):
        register_method(OneTokenConfig, PromptLearner)


def test_unknown_method_lists_the_known_ones():
    from prompt_clip import get_method

    with pytest.raises(ValueError, match=r"Unknown prompt method 'nope'.*coop"):
        get_method("nope")


# -- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_class, field, value", BAD_CONFIG_VALUES)
def test_config_values_out_of_range_are_refused(config_class, field, value):
    with pytest.raises(ValueError, match=field):
        config_class(**{field: value})


def test_config_json_round_trip_and_foreign_config():
    config = MaPLeConfig(n_ctx=3, depth=5)
    assert MaPLeConfig.from_dict(json.loads(config.to_json_string())) == config
    with pytest.raises(ValueError, match="for method 'maple', not 'coop'"):
        CoOpConfig.from_dict(config.to_dict())
    with pytest.raises(ValueError, match="Unknown field"):
        MaPLeConfig.from_dict({**config.to_dict(), "n_layers": 3})


@pytest.mark.parametrize(
    "classnames, message",
    [
        ([], "classnames is empty"),
        (["cat", "dog", "cat"], "Duplicate class names \\['cat'\\]"),
        (["cat", "sea_lion", "sea lion"], "Duplicate class names \\['sea lion'\\]"),
        (["cat", "  "], "classnames\\[1\\]"),
        (["cat", "a very long name " * 20], "only 77 positions"),
    ],
)
def test_bad_class_names_are_refused(classnames, message, tokenizer):
    model = build(CoOpConfig(n_ctx=4), tokenizer, classnames=None)
    with pytest.raises(ValueError, match=message):
        model.set_classnames(classnames)
    with pytest.raises(RuntimeError, match="set_classnames"):
        model(torch.randn(1, 3, 32, 32))


def test_depth_beyond_the_clip_is_refused(tokenizer):
    with pytest.raises(ValueError, match="MaPLeConfig.depth=9 but this CLIP's text encoder has only 3 layers"):
        build(MaPLeConfig(depth=9), tokenizer)


def test_ctx_init_shorter_than_n_ctx_is_refused(tokenizer):
    with pytest.raises(ValueError, match="has 2 tokens but n_ctx is 4"):
        build(CoOpConfig(n_ctx=4, ctx_init="a photo"), tokenizer)


def test_class_specific_context_cannot_change_the_class_count(tokenizer):
    model = build(CoOpConfig(n_ctx=2, class_specific=True), tokenizer)
    with pytest.raises(ValueError, match="learned a context for 4 classes and cannot predict 2"):
        model.set_classnames(["cat", "dog"])


@pytest.mark.parametrize(
    "config", [CoOpConfig(n_ctx=2, class_specific=True), AMMPLConfig(n_ctx=2)], ids=["coop", "ammpl"]
)
def test_class_specific_parameters_refuse_other_classes_of_the_same_count(config, tokenizer, images, tmp_path):
    model = build(config, tokenizer)
    model.set_classnames(CLASSNAMES)  # the same classes again: fine
    with pytest.raises(ValueError, match="class 0 is 'cat', not 'dog'"):
        model.set_classnames(["dog", "cat", "golden_retriever", "sea lion"])
    with pytest.raises(ValueError, match="class 3 is 'sea lion', not 'zebra'"):
        model.set_classnames(["cat", "dog", "golden_retriever", "zebra"])
    model.save_pretrained(tmp_path)
    loaded = PromptModel.from_pretrained(make_tiny_clip(), tmp_path, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="other classes"):
        loaded.set_classnames(["a", "b", "c", "d"])
    loaded.set_classnames(CLASSNAMES)
    assert torch.equal(loaded(images).logits, model.eval()(images).logits)


@pytest.fixture
def saved_coop(tokenizer, images, tmp_path):
    model = build(CoOpConfig(n_ctx=4), tokenizer)
    sgd_steps(model, images, steps=1)
    model.save_pretrained(tmp_path)
    return tmp_path


def test_adapter_for_another_clip_shape_is_refused_and_the_clip_left_alone(saved_coop, tokenizer):
    other = make_tiny_clip(text={"hidden_size": 64})
    with pytest.raises(ValueError, match="text_width: adapter 32, this CLIP 64"):
        PromptModel.from_pretrained(other, saved_coop, tokenizer=tokenizer)
    get_prompt_model(other, CoOpConfig(), tokenizer=tokenizer)  # no hook was left on it


def test_adapter_for_another_method_is_refused(saved_coop, tokenizer):
    config_path = saved_coop / "adapter_config.json"
    values = json.loads(config_path.read_text())
    values.update(method="maple", depth=2, n_ctx=4, ctx_init=None)
    values.pop("class_specific"), values.pop("class_token_position")
    config_path.write_text(json.dumps(values))
    clip = make_tiny_clip()
    with pytest.raises(ValueError, match=r"missing tensors \['projections.0.bias'"):
        PromptModel.from_pretrained(clip, saved_coop, tokenizer=tokenizer)
    get_prompt_model(clip, CoOpConfig(), tokenizer=tokenizer)  # the failed load removed its hooks


def test_wrong_tensor_shape_is_named(saved_coop, tokenizer):
    from safetensors.torch import save_file

    save_file({"ctx": torch.zeros(5, 32)}, saved_coop / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=r"ctx has shape \(5, 32\) in the file but \(4, 32\) here"):
        PromptModel.from_pretrained(make_tiny_clip(), saved_coop, tokenizer=tokenizer)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights_file_is_refused(damage, saved_coop, tokenizer):
    path = saved_coop / "adapter_model.safetensors"
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x80\x04pickle?" * 10, "empty": b""}[damage])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        PromptModel.from_pretrained(make_tiny_clip(), saved_coop, tokenizer=tokenizer)


def test_missing_file_and_bad_json_are_named(saved_coop, tokenizer):
    (saved_coop / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json is not valid JSON"):
        PromptModel.from_pretrained(make_tiny_clip(), saved_coop, tokenizer=tokenizer)
    (saved_coop / "adapter_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_config.json does not exist"):
        PromptModel.from_pretrained(make_tiny_clip(), saved_coop, tokenizer=tokenizer)


def test_a_failed_save_keeps_the_previous_adapter(saved_coop, tokenizer, images, monkeypatch):
    before = {p.name: p.read_bytes() for p in saved_coop.iterdir()}
    model = build(CoOpConfig(n_ctx=4), tokenizer, seed=3)

    def broken_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("prompt_clip.hub.save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(saved_coop)
    assert {p.name: p.read_bytes() for p in saved_coop.iterdir()} == before  # intact, no temporary file left


def test_save_to_a_file_path_is_refused(tokenizer, tmp_path):
    target = tmp_path / "adapter.bin"
    target.write_text("x")
    with pytest.raises(NotADirectoryError, match="needs a folder"):
        build(CoOpConfig(n_ctx=4), tokenizer).save_pretrained(target)


def test_not_a_clip_is_refused(tokenizer):
    with pytest.raises(TypeError, match="Expected a transformers CLIPModel"):
        get_prompt_model(torch.nn.Linear(2, 2), CoOpConfig(), tokenizer=tokenizer)


# -- works with transformers.Trainer ---------------------------------------------------------------------------


def test_transformers_trainer_trains_the_prompts(tokenizer, images, tmp_path):
    from transformers import Trainer, TrainingArguments

    model = build(CoOpConfig(n_ctx=4), tokenizer)
    before = model.learner.ctx.detach().clone()
    clip_before = {name: t.clone() for name, t in model.clip.state_dict().items()}
    dataset = [{"pixel_values": image, "labels": label} for image, label in zip(images, labels_for(images))]
    arguments = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=3,
        learning_rate=0.1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_strategy="no",
    )
    Trainer(model=model, args=arguments, train_dataset=dataset).train()
    assert not torch.equal(model.learner.ctx.detach(), before)
    assert all(torch.equal(t, clip_before[name]) for name, t in model.clip.state_dict().items())


# -- regressions found in review -----------------------------------------------------------------------------


def test_eval_cache_sees_in_place_writes_that_skip_version_counters(tokenizer, images):
    # Fused optimizers and writes through `.data` change parameters without bumping their version counter.
    model = build(MaPLeConfig(depth=2), tokenizer).eval()
    with torch.no_grad():
        before = model(images).logits
        model.learner.text_prompts[0].data.add_(0.5)
        after = model(images).logits
    with torch.enable_grad():
        fresh = model(images).logits.detach()
    assert torch.equal(after, fresh) and not torch.equal(after, before)


def test_eval_cache_follows_the_clip_dtype(tokenizer, images):
    model = build(MaPLeConfig(depth=2), tokenizer).eval()
    with torch.no_grad():
        model(images)
        model.clip.to(torch.bfloat16)
        assert model(images.to(torch.bfloat16)).text_embeds.dtype == torch.bfloat16


def test_a_failed_construction_leaves_the_clip_as_it_was(tokenizer):
    clip = make_tiny_clip()
    with pytest.raises(ValueError, match="Duplicate class names"):
        get_prompt_model(clip, CoOpConfig(n_ctx=4), tokenizer=tokenizer, classnames=["cat", "cat"])
    assert all(p.requires_grad for p in clip.parameters())
    get_prompt_model(clip, CoOpConfig(n_ctx=4), tokenizer=tokenizer, classnames=["cat"])  # no hook was left


def test_missing_local_adapter_folder_is_named(tokenizer):
    with pytest.raises(FileNotFoundError, match="No adapter folder at './no/such/adapter'"):
        PromptModel.from_pretrained(make_tiny_clip(), "./no/such/adapter", tokenizer=tokenizer)


@pytest.mark.parametrize(
    "pixels, labels, message",
    [
        (torch.randn(3, 32, 32), None, r"pixel_values must be a \(batch, 3, 32, 32\) tensor, got \(3, 32, 32\)"),
        (torch.randn(2, 32, 32, 3), None, "channels first"),
        (torch.randn(2, 3, 32, 32), torch.tensor([0, 4]), r"labels must be class indices in \[0, 3\]"),
    ],
)
def test_bad_inputs_are_named(pixels, labels, message, tokenizer):
    with pytest.raises(ValueError, match=message):
        build(CoOpConfig(n_ctx=4), tokenizer)(pixels, labels=labels)


def test_a_prompt_longer_than_the_context_is_refused(tokenizer, images):
    class TooLong(OneTokenLearner):
        def prompts(self) -> Prompts:
            return Prompts(text={0: torch.zeros(5, self.shape.text_width)})

    register_method(OneTokenConfig, TooLong, overwrite=True)
    try:
        with pytest.raises(ValueError, match="text prompt of 5 tokens does not fit the 0 context positions"):
            build(OneTokenConfig(), tokenizer)(images)
    finally:
        register_method(OneTokenConfig, OneTokenLearner, overwrite=True)
