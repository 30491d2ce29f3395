"""Shared fixtures: a tiny random CLIP (any shape must work) and OpenAI's real CLIP tokenizer, built offline."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from prompt_clip.tokenization import openai_clip_tokenizer

CLASSNAMES = ["cat", "dog", "golden_retriever", "sea lion"]

# The tests' CLIPs are tiny: intra-op threads bring nothing, and on a busy 2-core machine every hand-off between
# threads can wait a scheduler slice (measured here: a 2-epoch tiny training run took 0.28 s on one thread and
# 19.8 s on two while other jobs ran).
torch.set_num_threads(1)


def tiny_clip_config(**overrides) -> CLIPConfig:
    """Text and vision widths differ on purpose, so a mix-up of the two fails loudly."""
    text = dict(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=77,
    )
    vision = dict(
        hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=8
    )
    text.update(overrides.pop("text", {}))
    vision.update(overrides.pop("vision", {}))
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=24, **overrides)


def make_tiny_clip(seed: int = 0, **overrides) -> CLIPModel:
    torch.manual_seed(seed)
    return CLIPModel(tiny_clip_config(**overrides)).eval()


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return openai_clip_tokenizer(tmp_path_factory.mktemp("clip_tokenizer"))


@pytest.fixture
def clip():
    return make_tiny_clip()


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32)


@pytest.fixture(scope="session")
def vit_b16_clip():
    """A CLIP built from the ViT-B/16 config (random weights give the real model's parameter counts).

    Shared by the whole session: every test that injects into it must `unload()` its model.
    """
    config = CLIPConfig(
        text_config={"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8, "num_hidden_layers": 12},
        vision_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "image_size": 224,
            "patch_size": 16,
        },
        projection_dim=512,
    )
    return CLIPModel(config).eval()
