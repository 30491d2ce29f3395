"""The CLIP shapes used by the benchmarks, the examples and the docs scripts, built from a `CLIPConfig` (no download).

Random weights give the real model's parameter counts and compute, so timings and trainable-parameter counts on
these shapes hold for the pretrained checkpoints of the same shape; accuracies do not.

```python
from clip_shapes import random_clip, tiny_config, vit_b16_config   # from a script in benchmarks/
clip = random_clip(vit_b16_config(), seed=0)                       # openai/clip-vit-base-patch16's shape
folder = save_random_clip("tiny-clip", tiny_config())              # + OpenAI's tokenizer, loadable by from_pretrained
```

Import it as `clip_shapes` from a script in `benchmarks/` (Python puts the script's folder on `sys.path`), or as
`benchmarks.clip_shapes` with the repository root on `sys.path`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPConfig, CLIPModel

#: OpenAI CLIP's vocabulary and context length: the tokenizer built by `openai_clip_tokenizer` needs them.
VOCAB_SIZE = 49408
TEXT_POSITIONS = 77


def tiny_config(**overrides: Any) -> CLIPConfig:
    """The test suite's tiny CLIP: text 32 wide, vision 48 wide, 3 layers each, 32x32 images, patch 8.

    The two widths differ on purpose, so that a mix-up of text and vision dimensions fails loudly.

    Args:
        overrides: `text={...}` / `vision={...}` update the text / vision sub-configs; other keys go to `CLIPConfig`.
    """
    text = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=TEXT_POSITIONS,
    )
    vision = dict(
        hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=8
    )
    text.update(overrides.pop("text", {}))
    vision.update(overrides.pop("vision", {}))
    return CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=overrides.pop("projection_dim", 24), **overrides
    )


def vit_b16_config() -> CLIPConfig:
    """`openai/clip-vit-base-patch16`'s shape: text 512 wide x 12 layers x 8 heads, vision 768 wide x 12 layers x
    12 heads, 224x224 images, patch 16, projection 512."""
    text = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=8,
        max_position_embeddings=TEXT_POSITIONS,
    )
    vision = dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)


def random_clip(config: CLIPConfig, seed: int = 0) -> CLIPModel:
    """A `CLIPModel` with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return CLIPModel(config).eval()


def save_random_clip(folder: str | os.PathLike, config: CLIPConfig | None = None, seed: int = 0) -> Path:
    """Saves a random CLIP, OpenAI's CLIP tokenizer and an image processor of the right size into `folder`.

    The folder then loads like a Hub checkpoint (`CLIPModel.from_pretrained(folder)`,
    `CLIPTokenizer.from_pretrained(folder)`, `prompt-clip ... --clip folder`), offline. The tokenizer is built
    from the BPE file of `open-clip-torch` (`prompt_clip.tokenization.openai_clip_tokenizer`).

    Args:
        folder (`str` or `os.PathLike`): where to write (created if needed).
        config (`CLIPConfig`, *optional*): the shape; defaults to `tiny_config()`.
        seed (`int`, defaults to 0): seeds the random weights.

    Returns:
        `Path`: `folder`.
    """
    from transformers import CLIPImageProcessor

    from prompt_clip.tokenization import openai_clip_tokenizer

    folder = Path(folder)
    config = config if config is not None else tiny_config()
    random_clip(config, seed).save_pretrained(folder)
    with tempfile.TemporaryDirectory() as vocabulary_dir:
        openai_clip_tokenizer(vocabulary_dir).save_pretrained(folder)
    size = config.vision_config.image_size
    # The image processor makes the folder complete: prompt_clip takes the image size and statistics from it.
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(folder)
    return folder


__all__ = ["VOCAB_SIZE", "TEXT_POSITIONS", "tiny_config", "vit_b16_config", "random_clip", "save_random_clip"]
