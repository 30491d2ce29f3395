"""Regenerates the methods table of README.md and docs/methods_table.md.

The trainable parameter counts are computed by the library on a CLIP built from the ViT-B/16 config (random
weights give the same count as the real model); the reported accuracies are the papers' (METHODS.md).

    python docs/make_methods_table.py
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from transformers import CLIPModel

from prompt_clip import (
    AMMPLConfig,
    BloomConfig,
    BMIPConfig,
    CoCoOpConfig,
    CoOpConfig,
    DLPConfig,
    IVLPConfig,
    MaPLeConfig,
    UPTConfig,
    VPConfig,
    VPTConfig,
    get_prompt_model,
)
from prompt_clip.tokenization import openai_clip_tokenizer

ROOT = Path(__file__).resolve().parent.parent
# The ViT-B/16 shape is defined once, in benchmarks/clip_shapes.py (shared with the benchmarks and examples).
sys.path.insert(0, str(ROOT))
from benchmarks.clip_shapes import vit_b16_config  # noqa: E402

N_CLASSES = 10  # only matters for class-specific parameters (AMMPL's default)

# (name, config, prompted, depth, image-conditioned text, reported "base / novel / HM" (source))
ROWS = [
    ("CoOp", CoOpConfig(n_ctx=4, ctx_init="a photo of a"), "text", "1", "no", "82.69 / 63.22 / 71.66 (a)"),
    ("CoCoOp", CoCoOpConfig(), "text", "1", "yes", "80.47 / 71.69 / 75.83 (a)"),
    ("VPT (deep)", VPTConfig(n_tokens=8, depth=12), "vision", "12", "no", "80.17 / 73.60 / 76.47 (a)"),
    ("VP", VPConfig(), "pixels", "input", "no", ""),
    (
        "IVLP",
        IVLPConfig(n_text_ctx=2, n_vision_ctx=2, text_depth=12, vision_depth=12),
        "text + vision",
        "12",
        "no",
        "",
    ),
    ("DLP", DLPConfig(), "text", "9", "no", ""),
    ("MaPLe", MaPLeConfig(), "text -> vision", "9", "no", "82.28 / 75.14 / 78.55 (a)"),
    ("UPT", UPTConfig(), "shared -> text + vision", "1", "no", ""),
    ("BMIP", BMIPConfig(), "text <-> vision", "9", "no", "HM 79.04, open-world (b)"),
    ("Bloom", BloomConfig(), "text <-> vision", "12", "no", "83.24 / 76.87 / 79.68 (a)"),
    ("AMMPL (class-specific)", AMMPLConfig(), "pixels + text", "input", "yes", ""),
    ("AMMPL (shared)", AMMPLConfig(mask_mode="shared"), "pixels + text", "input", "yes", ""),
    (
        "PromptSRC objective + IVLP 4+4",
        IVLPConfig(n_text_ctx=4, n_vision_ctx=4, text_depth=9, vision_depth=9),
        "text + vision",
        "9",
        "no",
        "84.26 / 76.10 / 79.97 (c)",
    ),
]


def vit_b16_clip() -> CLIPModel:
    return CLIPModel(vit_b16_config()).eval()


def render() -> str:
    clip = vit_b16_clip()
    tokenizer = openai_clip_tokenizer(tempfile.mkdtemp(prefix="clip_tokenizer_"))
    classnames = [f"class {index}" for index in range(N_CLASSES)]
    lines = [
        "| method | config (`prompt_clip`) | prompts | depth | text depends on image | ViT-B/16 trainable params "
        "| reported base / novel / HM |",
        "|---|---|---|---|---|---:|---|",
        "| zero-shot CLIP | `with model.disable_adapter():` | - | - | - | 0 | 69.34 / 74.22 / 71.70 (a) |",
    ]
    for name, config, prompted, depth, conditioned, reported in ROWS:
        model = get_prompt_model(clip, config, tokenizer=tokenizer, classnames=classnames)
        trainable, _ = model.get_nb_trainable_parameters()
        model.unload()
        shown = f"`{type(config).__name__}({_changed_fields(config)})`"
        lines.append(f"| {name} | {shown} | {prompted} | {depth} | {conditioned} | {trainable:,d} | {reported} |")
    lines += [
        "",
        "Counts computed by `python docs/make_methods_table.py` (AMMPL class-specific with 10 classes: it grows by "
        "3,012 per class). Reported accuracies are averages over 11 datasets, base-to-novel, 16 shots, ViT-B/16: "
        "(a) Bloom Table 1, (b) BMIP Table 1, (c) PromptSRC paper. Tested for every method: save/load with identical "
        "logits, training continued after a load, `unload()` bit-identical, `disable_adapter()`, bf16 autocast, "
        "gradient checkpointing, any CLIP shape. The Hub round trip is tested with CoOp and MaPLe (the same files "
        "for every method) and `transformers.Trainer` with CoOp. Class-specific variants "
        "(CoOp `class_specific=True`, AMMPL class-specific) cannot predict classes they were not trained on; "
        "all others transfer to new class names.",
    ]
    return "\n".join(lines)


def _changed_fields(config) -> str:
    """The fields that differ from the config class's defaults, as keyword arguments."""
    defaults = type(config)()
    changed = {k: v for k, v in config.to_dict().items() if k != "method" and getattr(defaults, k) != v}
    return ", ".join(f"{key}={value!r}" for key, value in changed.items())


def main() -> None:
    table = render()
    (ROOT / "docs" / "methods_table.md").write_text("# Methods\n\n" + table + "\n")
    readme = ROOT / "README.md"
    text = readme.read_text()
    pattern = re.compile(r"(<!-- methods-table:start -->\n).*?(<!-- methods-table:end -->)", re.S)
    readme.write_text(pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text))
    print(table)


if __name__ == "__main__":
    main()
