"""CoCoOp: per-image text prompts from a meta-net, encoded as one batch."""

from __future__ import annotations

import pytest
import torch

from prompt_clip import Prompts, get_prompt_model
from prompt_clip.methods.cocoop import CoCoOpConfig

from .conftest import CLASSNAMES
from .helpers import build, sgd_steps


def trained(tokenizer, images, **config):
    """A CoCoOp model after a few steps, so that the meta-net's shift is far from its initial value."""
    model = build(CoCoOpConfig(meta_net_reduction=4, **config), tokenizer)
    sgd_steps(model, images, steps=2)
    return model.eval()


def test_logits_of_an_image_do_not_depend_on_the_rest_of_the_batch(tokenizer, images):
    model = trained(tokenizer, images)
    torch.manual_seed(5)
    others = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        first = model(images).logits[0]
        with_other_company = model(torch.cat([images[:1], others])).logits[0]
    torch.testing.assert_close(with_other_company, first, atol=1e-5, rtol=1e-5)


def test_changing_the_image_changes_its_text_features(tokenizer, images):
    model = trained(tokenizer, images)
    with torch.no_grad():
        text = model(images).text_embeds
    assert text.shape == (images.shape[0], len(CLASSNAMES), model.shape.projection_dim)
    # Each image conditions its own class prompts: no two images share their text features.
    for a in range(images.shape[0]):
        for b in range(a + 1, images.shape[0]):
            assert not torch.allclose(text[a], text[b], atol=1e-4)


def test_batched_text_encoding_equals_encoding_each_image_alone(tokenizer, images):
    model = trained(tokenizer, images)
    learner = model.learner
    with torch.no_grad():
        output = model(images)
        image_features = model.encode_image(images)
        shift = learner.meta_net(image_features / image_features.norm(dim=-1, keepdim=True))
        for index in range(images.shape[0]):
            context = learner.ctx + shift[index]  # the same shift for every context vector
            alone = model.encode_text(model.class_tokens, Prompts(text={0: context}))
            torch.testing.assert_close(output.text_embeds[index], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.image_embeds, image_features)


def test_meta_net_sees_the_l2_normalised_image_feature(tokenizer, images):
    model = trained(tokenizer, images)
    with torch.no_grad():
        features = model.encode_image(images)
        torch.testing.assert_close(
            model.learner.conditioned_context(3.0 * features), model.learner.conditioned_context(features)
        )


def test_zero_meta_net_output_is_zero_shot_clip_with_the_init_phrase(tokenizer, images):
    # ctx from "a photo of a" and a shift of zero: exactly the hand-written prompt for every image.
    model = build(CoCoOpConfig(), tokenizer).eval()
    with torch.no_grad():
        model.learner.meta_net.linear2.weight.zero_()
        model.learner.meta_net.linear2.bias.zero_()
        logits = model(images).logits
        ids = tokenizer([f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES], padding=True).input_ids
        zero_shot = model.clip(input_ids=torch.tensor(ids), pixel_values=images).logits_per_image
    torch.testing.assert_close(logits, zero_shot, atol=1e-5, rtol=1e-5)


def test_only_the_text_encoder_builds_a_graph(tokenizer, images):
    # The image feature only feeds the meta-net: the frozen image encoder needs no backward pass.
    model = build(CoCoOpConfig(meta_net_reduction=4), tokenizer).train()
    output = model(images, labels=torch.tensor([0, 1, 2]))
    assert not output.image_embeds.requires_grad
    output.loss.backward()
    assert model.learner.meta_net.linear1.weight.grad.abs().sum() > 0
    assert model.learner.ctx.grad.abs().sum() > 0


def test_meta_net_reduction_beyond_the_projection_is_refused(tokenizer):
    with pytest.raises(ValueError, match="meta_net_reduction"):
        build(CoCoOpConfig(meta_net_reduction=32), tokenizer)  # tiny CLIP: projection_dim 24
    with pytest.raises(ValueError, match="CoCoOpConfig.meta_net_reduction"):
        CoCoOpConfig(meta_net_reduction=0)


def test_vit_b16_trainable_parameter_count(tokenizer, vit_b16_clip):
    model = get_prompt_model(vit_b16_clip, CoCoOpConfig(), tokenizer=tokenizer, classnames=CLASSNAMES)
    try:
        # ctx 4 x 512 + Linear(512 -> 32) + Linear(32 -> 512)
        assert model.get_nb_trainable_parameters()[0] == 4 * 512 + (512 * 32 + 32) + (32 * 512 + 512) == 35_360
    finally:
        model.unload()  # the CLIP is shared by the session
