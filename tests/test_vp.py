"""VP: a learned frame added to the pixels, nothing else prompted."""

from __future__ import annotations

import pytest
import torch

from prompt_clip import get_prompt_model
from prompt_clip.methods.vp import VPConfig

from .conftest import CLASSNAMES
from .helpers import build, labels_for, sgd_steps

PAD = 4


def seen_pixels(model, images) -> torch.Tensor:
    """The pixel values the CLIP's vision embeddings actually receive."""
    seen = []

    def capture(module, args, kwargs):
        seen.append((args[0] if args else kwargs["pixel_values"]).detach().clone())

    handle = model.clip.vision_model.embeddings.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


def border_mask(size: int, pad: int) -> torch.Tensor:
    mask = torch.ones(size, size, dtype=torch.bool)
    mask[pad : size - pad, pad : size - pad] = False
    return mask


def test_only_the_frame_changes_the_pixels(tokenizer, images):
    model = build(VPConfig(pad_size=PAD), tokenizer)
    sgd_steps(model, images, steps=2)  # the frame after training, not only at init
    model.eval()
    pixels = seen_pixels(model, images)

    inner = (slice(None), slice(None), slice(PAD, 32 - PAD), slice(PAD, 32 - PAD))
    assert torch.equal(pixels[inner], images[inner])
    delta = pixels - images
    border = border_mask(32, PAD)
    assert (delta[..., border] != 0).all()
    # Added, the same frame for every image.
    torch.testing.assert_close(delta, model.learner.frame().expand_as(delta))


def test_frame_layout_follows_the_reference_pad_prompter(tokenizer):
    learner = build(VPConfig(pad_size=PAD), tokenizer).learner
    frame = learner.frame()
    assert frame.shape == (3, 32, 32)
    assert torch.equal(frame[:, :PAD], learner.pad_top)
    assert torch.equal(frame[:, -PAD:], learner.pad_bottom)
    assert torch.equal(frame[:, PAD:-PAD, :PAD], learner.pad_left)
    assert torch.equal(frame[:, PAD:-PAD, -PAD:], learner.pad_right)
    assert not frame[:, PAD:-PAD, PAD:-PAD].any()


def test_gradient_reaches_every_side_of_the_frame(tokenizer, images):
    model = build(VPConfig(pad_size=PAD), tokenizer).train()
    model(images, labels=labels_for(images)).loss.backward()
    for name in ("pad_top", "pad_bottom", "pad_left", "pad_right"):
        grad = getattr(model.learner, name).grad
        assert grad is not None and (grad != 0).all(), name


def test_text_is_the_template_encoded_once(tokenizer, images):
    model = build(VPConfig(pad_size=PAD), tokenizer)
    calls = []
    model.clip.text_model.register_forward_hook(lambda *args: calls.append(1))
    sgd_steps(model, images, steps=2)
    model.eval()
    with torch.no_grad():
        text = model(images).text_embeds
        ids = tokenizer([f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES], padding=True).input_ids
        expected = model.clip.get_text_features(input_ids=torch.tensor(ids))
    assert len(calls) == 2  # once for the three forward passes, once for `expected`
    expected = getattr(expected, "pooler_output", expected)
    torch.testing.assert_close(text, expected, atol=1e-5, rtol=1e-5)


def test_images_of_another_size_are_refused(tokenizer):
    model = build(VPConfig(pad_size=PAD), tokenizer)
    with pytest.raises(ValueError, match="32x32"):
        model(torch.randn(2, 3, 48, 48))


@pytest.mark.parametrize("pad_size", [16, 40])
def test_frame_covering_the_whole_image_is_refused(pad_size, tokenizer):
    with pytest.raises(ValueError, match="pad_size"):
        build(VPConfig(pad_size=pad_size), tokenizer)


def test_largest_frame_leaves_a_centre(tokenizer, images):
    model = build(VPConfig(pad_size=15), tokenizer)  # 32 - 2 * 15 = 2 pixels of centre
    assert model(images).logits.shape == (3, len(CLASSNAMES))


def test_pad_size_must_be_positive():
    with pytest.raises(ValueError, match="VPConfig.pad_size"):
        VPConfig(pad_size=0)


def test_vit_b16_trainable_parameter_count(tokenizer, vit_b16_clip):
    model = get_prompt_model(vit_b16_clip, VPConfig(), tokenizer=tokenizer, classnames=CLASSNAMES)
    try:
        # 2 x (3 x 30 x 224) + 2 x (3 x 164 x 30): the 69.8K of Bahng et al.
        assert model.get_nb_trainable_parameters()[0] == 69_840
    finally:
        model.unload()  # the CLIP is shared by the session
