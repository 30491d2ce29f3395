"""AMMPL-specific behaviour: straight-through masks, padding of masked patches, batched per-class images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prompt_clip import PromptModel, get_prompt_model
from prompt_clip.methods.ammpl import AMMPLConfig
from prompt_clip.prompts import Prompts

from .conftest import CLASSNAMES, make_tiny_clip
from .helpers import build, labels_for, sgd_steps

C = len(CLASSNAMES)
GRID = 32 // 8  # tiny CLIP: image 32, patch 8


def small(**changes) -> AMMPLConfig:
    return AMMPLConfig(mask_init_mean=0.6, hidden_dim=8, **changes)


def test_gradient_reaches_the_probability_matrix(tokenizer, images):
    model = build(small(), tokenizer).train()
    model(images, labels=labels_for(images)).loss.backward()
    grad = model.learner.mask_probs.grad
    assert grad is not None and grad.shape == (C, GRID, GRID)
    # Straight-through: every entry gets a gradient, kept and masked patches alike.
    assert (grad != 0).all()


def test_training_masks_are_random_and_follow_the_global_seed(tokenizer, images):
    model = build(small(), tokenizer).train()
    with torch.no_grad():
        torch.manual_seed(5)
        first = model(images).logits
        second = model(images).logits
        torch.manual_seed(5)
        again = model(images).logits
    assert not torch.equal(first, second)
    assert torch.equal(first, again)


@pytest.mark.parametrize("eval_mask", ["threshold", "expected", "sampled"])
def test_evaluation_is_deterministic(eval_mask, tokenizer, images):
    model = build(small(eval_mask=eval_mask, eval_samples=3), tokenizer)
    sgd_steps(model, images, steps=1)
    model.eval()
    with torch.no_grad():
        first = model(images).logits
        torch.rand(10)  # moving the global RNG must not matter
        second = model(images).logits
    assert torch.equal(first, second)


def test_eval_masks(tokenizer):
    model = build(small(), tokenizer)
    probs = model.learner.mask_probs
    masks = model.learner.masks()
    assert masks.shape == (C, GRID, GRID)
    assert torch.equal(masks, (probs.detach().clamp(0, 1) >= 0.5).float())

    shared = build(small(mask_mode="shared", eval_mask="expected"), tokenizer)
    assert torch.equal(shared.learner.masks(), shared.learner.mask_probs.detach().clamp(0, 1))
    assert shared.learner.masks().shape == (1, GRID, GRID)


def _count_vision_passes(model: PromptModel) -> tuple[list[int], list[int]]:
    """Calls of clip.vision_model, and the batch size entering the patch embedding on each."""
    calls, batches = [], []
    vision = model.clip.vision_model
    vision.register_forward_pre_hook(lambda module, args: calls.append(1))
    vision.embeddings.patch_embedding.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    return calls, batches


@pytest.mark.parametrize("training", [True, False])
def test_class_specific_images_run_as_one_batch(training, tokenizer, images):
    model = build(small(), tokenizer).train(training)
    calls, batches = _count_vision_passes(model)
    model(images)
    n = images.shape[0]
    # The unprompted first pass (interaction), then one batch of the C prompted versions of every image.
    assert len(calls) == 2 and batches == [n, n * C]
    assert model.learner.prompted_images_per_image == C
    assert model.learner.image_passes_per_image == C + 1


def test_shared_without_interaction_encodes_each_image_once(tokenizer, images):
    model = build(small(mask_mode="shared", interaction=False), tokenizer)
    calls, batches = _count_vision_passes(model)
    output = model(images)
    assert len(calls) == 1 and batches == [images.shape[0]]
    assert model.learner.image_passes_per_image == 1
    assert output.logits.shape == (images.shape[0], C)


def test_masked_first_order_encodes_masked_images_first(tokenizer, images):
    model = build(small(interaction_order="masked_first"), tokenizer)
    calls, batches = _count_vision_passes(model)
    model(images)
    n = images.shape[0]
    assert len(calls) == 2 and batches == [n * C, n * C]
    assert model.learner.image_passes_per_image == 2 * C


def _pixels_entering_the_encoder(model: PromptModel, images: torch.Tensor) -> torch.Tensor:
    seen = []
    model.clip.vision_model.embeddings.patch_embedding.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().clone())
    )
    with torch.no_grad():
        model(images)
    return seen[-1].view(images.shape[0], C, *images.shape[1:])


def _text_delta(model: PromptModel) -> torch.Tensor:
    """E = f_T(z) with z the text features of the plain context prompts."""
    learner = model.learner
    with torch.no_grad():
        z = model.encode_text(model.class_tokens, Prompts(text={0: learner.ctx}))
        return learner.text_net(F.normalize(z, dim=-1)).view(C, 3, 8, 8)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("padding", [True, False])
def test_masked_patches_get_the_padding(training, padding, tokenizer, images):
    model = build(small(padding=padding), tokenizer).train(training)
    learner = model.learner
    cls, row, col = 2, 1, 3
    with torch.no_grad():
        learner.mask_probs.fill_(1.0)
        learner.mask_probs[cls, row, col] = 0.0  # Bernoulli(0) = 0 and below the 0.5 threshold: masked
    pixels = _pixels_entering_the_encoder(model, images)

    expected = images[:, None].repeat(1, C, 1, 1, 1)
    fill = _text_delta(model)[cls] + (learner.padding[cls].detach() if padding else 0)
    expected[:, cls, :, row * 8 : (row + 1) * 8, col * 8 : (col + 1) * 8] = fill
    torch.testing.assert_close(pixels, expected, atol=1e-6, rtol=1e-6)


def test_without_interaction_or_padding_masked_patches_are_zero(tokenizer, images):
    model = build(small(padding=False, interaction=False), tokenizer)
    with torch.no_grad():
        model.learner.mask_probs.fill_(1.0)
        model.learner.mask_probs[0, 0, 0] = 0.0
    pixels = _pixels_entering_the_encoder(model, images)
    assert (pixels[:, 0, :, :8, :8] == 0).all()
    torch.testing.assert_close(pixels[:, 1], images)


def test_text_prompts_depend_on_the_image(tokenizer, images):
    model = build(small(), tokenizer).eval()
    with torch.no_grad():
        output = model(images)
    assert output.text_embeds.shape == (images.shape[0], C, 24)
    assert output.image_embeds.shape == (images.shape[0], C, 24)
    assert not torch.allclose(output.text_embeds[0], output.text_embeds[1])


def test_class_specific_cannot_change_the_class_count(tokenizer):
    model = build(small(), tokenizer)
    with pytest.raises(ValueError, match="mask_mode='shared'"):
        model.set_classnames(["cat", "dog"])
    with pytest.raises(ValueError, match="other classes"):  # same count, other classes: refused too
        model.set_classnames(["a", "b", "c", "d"])


def test_shared_version_transfers_to_new_classes(tokenizer, images):
    model = build(small(mask_mode="shared"), tokenizer)
    sgd_steps(model, images, steps=1)
    model.set_classnames(["zebra", "truck"])
    model.eval()
    with torch.no_grad():
        assert model(images).logits.shape == (images.shape[0], 2)


@pytest.mark.parametrize("config", [small(), small(mask_mode="shared")], ids=["class-specific", "shared"])
def test_training_continues_after_load_with_the_same_seed(config, tokenizer, images, tmp_path):
    # The generic test draws the masks of the two runs from different points of the global RNG; seeded, they match.
    model = build(config, tokenizer)
    sgd_steps(model, images, steps=2)
    model.save_pretrained(tmp_path)
    loaded = PromptModel.from_pretrained(make_tiny_clip(), tmp_path, tokenizer=tokenizer)
    torch.manual_seed(7)
    next_losses = sgd_steps(model, images, steps=2)
    torch.manual_seed(7)
    next_losses_after_load = sgd_steps(loaded, images, steps=2)
    assert next_losses == pytest.approx(next_losses_after_load, abs=1e-6)
    assert next_losses[1] != next_losses[0]


def test_bf16_autocast_with_the_same_masks(tokenizer, images):
    model = build(small(mask_mode="shared", interaction=False), tokenizer).train()
    torch.manual_seed(3)
    with torch.no_grad():
        reference = model(images).logits
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(images, labels=labels_for(images))
    output.loss.backward()
    torch.testing.assert_close(output.logits.float(), reference, atol=0.6, rtol=0.05)


@pytest.mark.parametrize(
    "field, value",
    [
        ("mask_init_mean", 0.0),
        ("mask_init_mean", 1.2),
        ("mask_mode", "per_image"),
        ("interaction_order", "both"),
        ("eval_mask", "median"),
        ("eval_samples", 0),
        ("hidden_dim", 0),
        ("n_ctx", 0),
    ],
)
def test_bad_config_values_are_refused(field, value):
    with pytest.raises(ValueError, match=f"AMMPLConfig.{field}"):
        AMMPLConfig(**{field: value})


# -- ViT-B/16 parameter counts -----------------------------------------------------------------------------------


# Per class: ctx 4 x 512 + P 14 x 14 + N 3 x 16 x 16 = 3,012. Interaction nets (hidden 512 // 16 = 32):
# f_T 512*32+32 + 32*768+768 = 41,760; f_I 512*32+32 + 32+1 = 16,449; together 58,209.
@pytest.mark.parametrize(
    "mask_mode, n_classes, expected",
    [
        ("class_specific", 10, 3_012 * 10 + 58_209),
        ("class_specific", 1000, 3_012 * 1000 + 58_209),
        ("shared", 10, 3_012 + 58_209),
        ("shared", 1000, 3_012 + 58_209),
    ],
)
def test_vit_b16_trainable_parameter_counts(mask_mode, n_classes, expected, vit_b16_clip, tokenizer):
    classnames = [f"class {i}" for i in range(n_classes)]
    model = get_prompt_model(
        vit_b16_clip, AMMPLConfig(mask_mode=mask_mode), tokenizer=tokenizer, classnames=classnames
    )
    try:
        assert model.get_nb_trainable_parameters()[0] == expected
    finally:
        model.unload()
