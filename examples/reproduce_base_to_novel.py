"""Reproduce the field's base-to-novel table (ViT-B/16, 16 shots, seeds 1-3, 11 datasets) for any methods.

    python examples/reproduce_base_to_novel.py --data-root DATA --output-dir results/b2n
    python examples/reproduce_base_to_novel.py --data-root DATA --output-dir results/b2n \\
        --methods zeroshot,coop,maple --datasets EuroSAT,DTD

What it needs: a GPU (one ViT-B/16 run of the recipes takes from minutes to about an hour on one GPU, depending on
the method and the dataset), `openai/clip-vit-base-patch16` (downloaded from the Hub, or in the local cache with
`--local-files-only`), and the datasets in CoOp's layout under `--data-root` (see docs/data.md: `eurosat/`,
`dtd/`, `imagenet/`, ... with CoOp's `split_zhou_*.json` files). Every dataset is loaded and validated before the
first run trains, so a missing file fails in seconds.

What it does: for every method (its published recipe from `prompt_clip.recipes`; `zeroshot` is CLIP with the
dataset's template), every dataset and every seed, `ProtocolRunner.base_to_novel` draws 16 shots per base class,
trains on the base classes, and tests base images among the base classes and novel images among the novel classes
(and every test image among all classes, BMIP's open-world protocol). Each run writes its record and
adapter under `<output-dir>/runs/`; rerunning the same command skips finished runs, and an interrupted run resumes
from its last checkpoint. At the end it writes `results.json`, `results.csv`, `tables.md` (the paper-style tables:
the average row is HM(mean base, mean novel), as the papers compute it) and `base_to_novel.svg`, and prints our
average next to the numbers the papers report (METHODS.md).

Smoke run without a GPU or the real CLIP (random tiny CLIP and a generated EuroSAT: the numbers mean nothing):

    python examples/tiny_setup.py --output /tmp/demo
    python examples/reproduce_base_to_novel.py --clip /tmp/demo/clip --data-root /tmp/demo/data \\
        --datasets EuroSAT --seeds 1 --epochs 1 --output-dir /tmp/demo/b2n
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prompt_clip.protocols import CROSS_DATASET_TARGETS

#: The 11 datasets of the base-to-novel table, in the papers' column order.
DATASETS = ("ImageNet", *CROSS_DATASET_TARGETS)

#: Reported averages over the 11 datasets (ViT-B/16, 16 shots, base-to-novel), from METHODS.md:
#: method -> (base, novel, HM, source). BMIP reports only its open-world HM.
REPORTED: dict[str, tuple[float | None, float | None, float | None, str]] = {
    "zeroshot": (69.34, 74.22, 71.70, "Bloom Table 1"),
    "coop": (82.69, 63.22, 71.66, "Bloom Table 1"),
    "cocoop": (80.47, 71.69, 75.83, "Bloom Table 1"),
    "vpt": (80.17, 73.60, 76.47, "Bloom Table 1"),
    "maple": (82.28, 75.14, 78.55, "Bloom Table 1"),
    "promptsrc": (84.26, 76.10, 79.97, "PromptSRC paper"),
    "bmip": (None, None, 79.04, "BMIP Table 1 (open-world HM)"),
    "bloom": (83.24, 76.87, 79.68, "Bloom Table 1"),
}


def default_methods() -> list[str]:
    """Zero-shot CLIP and every built-in recipe."""
    from prompt_clip.protocols import ZERO_SHOT
    from prompt_clip.recipes import list_recipes

    return [ZERO_SHOT, *list_recipes()]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_overrides(assignments: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`["maple.depth=3", "coop.ctx_init=null"]` -> `{"maple": {"depth": 3}, "coop": {"ctx_init": None}}`.

    Values are JSON (`3`, `null`, `true`, `"text"`); anything that is not valid JSON is taken as a string.
    """
    overrides: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        method, dot, field = key.partition(".")
        if not sep or not dot or not method or not field:
            raise SystemExit(f"error: --set expects METHOD.FIELD=VALUE (e.g. maple.depth=3), got {assignment!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides.setdefault(method.strip().lower(), {})[field.strip()] = value
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="the folder holding the datasets in CoOp's layout")
    parser.add_argument("--output-dir", required=True, help="records, adapters, results.json/csv, tables, plot")
    parser.add_argument(
        "--methods", type=_names, default=None, help="comma-separated recipe names (default: zeroshot + all recipes)"
    )
    parser.add_argument(
        "--datasets", type=_names, default=list(DATASETS), help="comma-separated (default: the 11 datasets)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="default: 1 2 3")
    parser.add_argument("--shots", type=int, default=16, help="training images per base class (default 16)")
    parser.add_argument("--clip", default="openai/clip-vit-base-patch16", help="a CLIP on the Hub or on disk")
    parser.add_argument("--local-files-only", action="store_true", help="never contact the Hub (use the cache)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument(
        "--mixed-precision",
        choices=("no", "bf16", "fp16"),
        default=None,
        help="autocast for training and testing (prompts stay float32); default: bf16 on CUDA, no on CPU",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs (smoke runs)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.FIELD=VALUE",
        help="override a field of one method's config, e.g. --set maple.depth=3 (JSON values)",
    )
    parser.add_argument("--overwrite", action="store_true", help="train again even when a finished run exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def comparison_table(records: Sequence[dict[str, Any]], num_datasets: int) -> str:
    """Our average over the datasets next to the papers' reported average (METHODS.md)."""
    from prompt_clip.reporting import base_to_novel_summary, method_label

    ours = base_to_novel_summary(records)
    open_world = base_to_novel_summary(records, prefix="open_world_")

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    lines = [
        "| method | datasets | base | novel | HM | reported base | reported novel | reported HM | source |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for method, item in ours.items():
        base, novel, hm, source = REPORTED.get(method, (None, None, None, "not reported"))
        shown = f"{item['hm']:.2f}"
        if method == "bmip" and method in open_world:  # BMIP reports the open-world HM: compare like with like
            shown += f" (open world {open_world[method]['hm']:.2f})"
        lines.append(
            f"| {method_label(method)} | {len(item['datasets'])}/{num_datasets} | {item['base']:.2f} | "
            f"{item['novel']:.2f} | {shown} | {cell(base)} | {cell(novel)} | {cell(hm)} | {source} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from prompt_clip.protocols import ProtocolRunner
    from prompt_clip.recipes import list_recipes
    from prompt_clip.reporting import plot_base_to_novel_svg, render_tables

    methods = args.methods or default_methods()
    unknown = sorted(set(methods) - set(default_methods()))
    if unknown:
        raise SystemExit(f"error: unknown method(s) {unknown}; choose from zeroshot, {', '.join(list_recipes())}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = args.mixed_precision or ("bf16" if device.type == "cuda" else "no")
    training_overrides: dict[str, Any] = {"mixed_precision": precision}
    if args.epochs is not None:
        training_overrides["epochs"] = args.epochs
    if args.no_progress:
        training_overrides["progress"] = False

    kwargs = {"local_files_only": args.local_files_only}
    clip = CLIPModel.from_pretrained(args.clip, **kwargs).eval().to(device)
    tokenizer = CLIPTokenizer.from_pretrained(args.clip, **kwargs)
    try:
        processor = CLIPImageProcessor.from_pretrained(args.clip, **kwargs)
    except OSError:
        processor = None  # image size from the CLIP's config, OpenAI's statistics
    output_dir = Path(args.output_dir)
    runner = ProtocolRunner(
        clip,
        tokenizer,
        data_root=args.data_root,
        output_dir=output_dir,
        seeds=args.seeds,
        shots=args.shots,
        image_processor=processor,
        training_overrides=training_overrides,
        config_overrides=parse_overrides(args.set),
        reuse_results=not args.overwrite,
        progress=not args.no_progress,
    )
    # Read and validate every dataset first: a missing split file must not surface after hours of training.
    for dataset in args.datasets:
        splits = runner.dataset(dataset)
        print(f"{splits.name}: {splits.num_classes} classes, {len(splits.train)} train / {len(splits.test)} test")
    runs = len(methods) * len(args.datasets) * len(args.seeds)
    plan = f"{len(methods)} methods x {len(args.datasets)} datasets x {len(args.seeds)} seeds"
    print(f"{runs} runs ({plan}) on {device}, mixed precision {precision}")

    start = time.perf_counter()
    for method in methods:  # method by method, so that each method's row is complete as soon as possible
        for dataset in args.datasets:
            records = runner.base_to_novel(method, dataset)
            for record in records:
                print(
                    f"  {method:<10} {record['dataset']:<13} seed {record['seed']}: base {record['base']:.2f} "
                    f"novel {record['novel']:.2f} HM {record['hm']:.2f}  ({record.get('train_time_s', 0):.0f} s)"
                )
    tables = render_tables(runner.records)
    (output_dir / "tables.md").write_text(tables, encoding="utf-8")
    plot = plot_base_to_novel_svg(runner.records, output_dir / "base_to_novel.svg", title="Base-to-novel")
    print("\n" + tables)
    print("### Compared with the reported averages (11 datasets, ViT-B/16, 16 shots)\n")
    print(comparison_table(runner.records, len(args.datasets)))
    print(
        f"\nwritten: {output_dir / 'results.json'}, results.csv, tables.md, {plot.name}; "
        f"{time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
