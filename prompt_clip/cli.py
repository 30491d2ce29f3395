"""The `prompt-clip` command line: train, evaluate, run a protocol, render tables, push an adapter.

Every default comes from the method's published recipe (`prompt_clip.recipes`); flags override single fields.
Run `prompt-clip <command> --help` for the options of each command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EPILOG = """examples:
  prompt-clip list
  prompt-clip train --method maple --clip openai/clip-vit-base-patch16 --data-root DATA --dataset EuroSAT \\
      --subset base --shots 16 --seed 1 --output-dir runs/maple-eurosat
  prompt-clip evaluate --adapter runs/maple-eurosat/adapter --clip openai/clip-vit-base-patch16 \\
      --data-root DATA --dataset EuroSAT --subset novel
  prompt-clip protocol base-to-novel --methods zeroshot,coop,maple --datasets EuroSAT,DTD \\
      --clip openai/clip-vit-base-patch16 --data-root DATA --output-dir results
  prompt-clip table results --plot results/base_to_novel.svg
  prompt-clip push --adapter runs/maple-eurosat/adapter --repo-id me/maple-eurosat
"""

PROTOCOL_COMMANDS = ("base-to-novel", "open-world", "few-shot", "cross-dataset", "domain-generalisation")


# -- argument groups ----------------------------------------------------------------------------------------------


def _add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--clip",
        required=True,
        help="a Hugging Face CLIP id or local folder (e.g. openai/clip-vit-base-patch16)",
    )
    group.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    group.add_argument("--local-files-only", action="store_true", help="never contact the Hub (use the cache)")


def _add_data_arguments(parser: argparse.ArgumentParser, subset: bool = True) -> None:
    group = parser.add_argument_group("data")
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset", help="a dataset of the field, by name (see `prompt-clip list`); needs --data-root"
    )
    source.add_argument("--image-folder", help="a folder of class sub-folders (root/<class>/<image>)")
    group.add_argument("--data-root", help="the folder holding the datasets in the CoOp layout")
    if subset:
        group.add_argument(
            "--subset",
            choices=("all", "base", "novel"),
            default="all",
            help="classes to use: all, the base half or the novel half (default: all)",
        )


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    from .training import OBJECTIVES, OPTIMIZERS, PRECISIONS

    group = parser.add_argument_group("training (defaults: the method's recipe)")
    group.add_argument("--epochs", type=int)
    group.add_argument("--batch-size", type=int)
    group.add_argument("--lr", type=float)
    group.add_argument("--optimizer", choices=OPTIMIZERS)
    group.add_argument("--weight-decay", type=float)
    group.add_argument("--warmup-epochs", type=int)
    group.add_argument("--mixed-precision", choices=PRECISIONS, help="autocast dtype; prompts stay float32")
    group.add_argument("--gradient-accumulation-steps", type=int)
    group.add_argument("--max-grad-norm", type=float)
    group.add_argument("--objective", choices=OBJECTIVES, help="ce or promptsrc")
    group.add_argument("--num-workers", type=int)
    group.add_argument("--checkpoint-every", type=int, help="also checkpoint every N optimiser steps")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field, e.g. --set depth=3 --set ctx_init=null (JSON values); with several methods, "
        "--set maple.depth=3 sets one method's field",
    )


_TRAINING_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "warmup_epochs",
    "mixed_precision",
    "gradient_accumulation_steps",
    "max_grad_norm",
    "objective",
    "num_workers",
    "checkpoint_every",
)


def _training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {name: getattr(args, name) for name in _TRAINING_FLAGS if getattr(args, name) is not None}
    if args.no_progress:
        overrides["progress"] = False
    return overrides


def _config_overrides(assignments: Sequence[str]) -> dict[str, Any]:
    overrides = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise SystemExit(f"error: --set expects FIELD=VALUE, got {assignment!r}")
        name, text = assignment.split("=", 1)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare word is a string: --set ctx_init=a photo of a
        overrides[name.strip()] = value
    return overrides


def _per_method_overrides(assignments: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`--set field=value` applies to every method, `--set maple.depth=3` to one."""
    overrides: dict[str, dict[str, Any]] = {method: {} for method in methods}
    for name, value in _config_overrides(assignments).items():
        method, _, field = name.rpartition(".")
        for target in [method] if method else methods:
            if target not in overrides:
                raise SystemExit(f"error: --set {name}=...: {target!r} is not one of --methods ({', '.join(methods)})")
            overrides[target][field] = value
    return overrides


# -- loading ------------------------------------------------------------------------------------------------------


def _device(name: str | None) -> Any:
    import os

    import torch

    if name:
        return torch.device(name)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    # Under `accelerate launch` / torchrun each process owns the GPU of its local rank.
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def _load_clip(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The CLIP, its tokenizer and (when the folder has one) its image processor."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    kwargs = {"local_files_only": args.local_files_only}
    clip = CLIPModel.from_pretrained(args.clip, **kwargs).eval().to(_device(args.device))
    tokenizer = CLIPTokenizer.from_pretrained(args.clip, **kwargs)
    try:
        processor = CLIPImageProcessor.from_pretrained(args.clip, **kwargs)
    except OSError:
        processor = None  # fall back to the CLIP config's image size and OpenAI's statistics
    return clip, tokenizer, processor


def _load_splits(args: argparse.Namespace) -> Any:
    from .data import load_dataset, load_image_folder, select_classes

    if args.dataset:
        if not args.data_root:
            raise SystemExit("error: --dataset needs --data-root (the folder holding the dataset folders)")
        splits = load_dataset(args.dataset, args.data_root)
    else:
        splits = load_image_folder(args.image_folder)
    return select_classes(splits, getattr(args, "subset", "all"))


def _transforms(clip: Any, processor: Any) -> tuple[Any, Any]:
    from .data import ImageTransform

    return (
        ImageTransform.for_model(clip.config, processor, train=True),
        ImageTransform.for_model(clip.config, processor, train=False),
    )


def _print_json(values: dict[str, Any]) -> None:
    print(json.dumps(values, indent=2))


# -- commands -----------------------------------------------------------------------------------------------------


def command_list(args: argparse.Namespace) -> int:
    from .data import list_datasets
    from .recipes import get_recipe, list_recipes
    from .registry import list_methods

    print("methods:  " + ", ".join(list_methods()))
    print("datasets: " + ", ".join(list_datasets()))
    print("recipes (base-to-novel defaults):")
    for name in list_recipes():
        recipe = get_recipe(name)
        t = recipe.training
        print(f"  {name:<10} {t.optimizer} lr {t.lr}, batch {t.batch_size}, {t.epochs} epochs  ({recipe.source})")
    return 0


def command_train(args: argparse.Namespace) -> int:
    from .data import PromptDataset, few_shot_splits
    from .evaluation import predict
    from .learner import ClipShape
    from .model import get_prompt_model
    from .recipes import get_recipe, scale_to_clip
    from .training import PromptTrainer, seed_everything

    splits = _load_splits(args)
    recipe = get_recipe(args.method, "few_shot" if args.subset == "all" else "base_to_novel", splits.name)
    clip, tokenizer, processor = _load_clip(args)
    # The recipes are written for ViT-B/16: rescale layer counts (and VP's frame) to this CLIP, then apply --set.
    config = scale_to_clip(recipe.config, ClipShape.from_clip_config(clip.config))
    config = config.replace(template=splits.template, **_config_overrides(args.set))
    training = recipe.training.replace(seed=args.seed, **_training_overrides(args))
    train_splits = few_shot_splits(splits, args.shots, args.seed, cache_dir=Path(args.output_dir) / "few_shot")
    train_transform, test_transform = _transforms(clip, processor)
    seed_everything(args.seed)
    model = get_prompt_model(clip, config, tokenizer=tokenizer, classnames=train_splits.classnames)
    model.print_trainable_parameters()
    dataset = PromptDataset(train_splits.train, train_transform, image_loader=train_splits.image_loader)
    trainer = PromptTrainer(model, dataset, training, output_dir=Path(args.output_dir) / "checkpoints")
    output = trainer.train(resume_from_checkpoint=args.resume)
    model = trainer.model
    if not trainer.accelerator.is_main_process:
        return 0
    adapter_dir = Path(args.output_dir) / "adapter"
    model.save_pretrained(adapter_dir)
    metrics: dict[str, Any] = {
        "method": recipe.name,
        "dataset": splits.name,
        "subset": args.subset,
        "shots": args.shots,
        "seed": args.seed,
        "train_loss": output.loss,
        "train_accuracy": output.accuracy,
        "train_time_s": output.train_time_s,
        "train_images_per_s": output.images_per_second,
        "adapter": str(adapter_dir),
    }
    if splits.test and not args.skip_eval:
        test = PromptDataset(splits.test, test_transform, image_loader=splits.image_loader)
        metrics["test_accuracy"] = predict(model, test, mixed_precision=training.mixed_precision).accuracy()
    (Path(args.output_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    _print_json(metrics)
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from .data import PromptDataset
    from .evaluation import predict
    from .methods import CoOpConfig
    from .model import PromptModel, get_prompt_model

    if not args.adapter and not args.zero_shot:
        raise SystemExit("error: give --adapter PATH_OR_REPO, or --zero-shot for the CLIP without prompts")
    splits = _load_splits(args)
    clip, tokenizer, processor = _load_clip(args)
    _, test_transform = _transforms(clip, processor)
    if args.zero_shot:
        model = get_prompt_model(clip, CoOpConfig(n_ctx=1, template=splits.template), tokenizer=tokenizer)
    else:
        model = PromptModel.from_pretrained(clip, args.adapter, tokenizer=tokenizer, revision=args.revision)
    model.set_classnames(splits.classnames)
    samples = getattr(splits, args.split)
    if not samples:
        raise SystemExit(f"error: the {args.split} split of {splits.name} is empty")
    dataset = PromptDataset(samples, test_transform, image_loader=splits.image_loader)
    predictions = predict(
        model, dataset, args.batch_size, args.mixed_precision, zero_shot=args.zero_shot, progress=True
    )
    _print_json(
        {
            "adapter": args.adapter,
            "dataset": splits.name,
            "subset": args.subset,
            "split": args.split,
            "images": len(samples),
            "classes": splits.num_classes,
            "accuracy": predictions.accuracy(),
        }
    )
    return 0


def command_protocol(args: argparse.Namespace) -> int:
    from .protocols import DOMAIN_GENERALISATION_TARGETS, ProtocolRunner
    from .reporting import load_results, render_tables

    clip, tokenizer, processor = _load_clip(args)
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    config_overrides = _per_method_overrides(args.set, methods)
    runner = ProtocolRunner(
        clip,
        tokenizer,
        data_root=args.data_root,
        output_dir=args.output_dir,
        seeds=args.seeds,
        shots=args.shots,
        image_processor=processor,
        training_overrides=_training_overrides(args),
        config_overrides=config_overrides,
        reuse_results=not args.overwrite,
        progress=not args.no_progress,
    )
    datasets = [name.strip() for name in (args.datasets or "").split(",") if name.strip()]
    for method in methods:
        if args.protocol in ("base-to-novel", "open-world"):
            if not datasets:
                raise SystemExit("error: --datasets is required for this protocol")
            for dataset in datasets:
                runner.base_to_novel(method, dataset)  # its records carry the open-world numbers too
        elif args.protocol == "few-shot":
            if not datasets:
                raise SystemExit("error: --datasets is required for this protocol")
            for dataset in datasets:
                runner.few_shot(method, dataset, shots=args.shot_list)
        elif args.protocol == "cross-dataset":
            runner.cross_dataset(method, source=args.source, targets=datasets or None)
        else:
            runner.domain_generalisation(method, source=args.source, targets=datasets or DOMAIN_GENERALISATION_TARGETS)
    # Every record of the folder (earlier sweeps included), as results.json holds them.
    tables = render_tables(load_results(args.output_dir))
    (Path(args.output_dir) / "tables.md").write_text(tables, encoding="utf-8")
    print(tables)
    return 0


def command_table(args: argparse.Namespace) -> int:
    from .reporting import load_results, plot_base_to_novel_svg, render_tables

    records = load_results(args.results)
    print(render_tables(records))
    if args.plot:
        print(f"plot written to {plot_base_to_novel_svg(records, args.plot, title=args.title or '')}")
    return 0


def command_push(args: argparse.Namespace) -> int:
    from .hub import push_adapter_folder

    url = push_adapter_folder(
        args.adapter,
        args.repo_id,
        token=args.token,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
    )
    print(url)
    return 0


# -- parser -------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The `prompt-clip` argument parser."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="prompt-clip",
        description="Prompt learning for Hugging Face CLIP: train, evaluate and share small adapters.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"prompt_clip {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list methods, recipes and datasets")
    listing.set_defaults(run=command_list)

    train = commands.add_parser("train", help="train one method on one dataset and save its adapter")
    train.add_argument("--method", required=True, help="a method or recipe name (coop, maple, promptsrc, ...)")
    _add_clip_arguments(train)
    _add_data_arguments(train)
    train.add_argument("--shots", type=int, default=16, help="training images per class (-1: all; default 16)")
    train.add_argument("--seed", type=int, default=1, help="seeds the few-shot draw and the training (default 1)")
    train.add_argument("--output-dir", required=True, help="receives adapter/, checkpoints/ and metrics.json")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    train.add_argument("--skip-eval", action="store_true", help="do not measure test accuracy after training")
    _add_training_arguments(train)
    train.set_defaults(run=command_train)

    evaluate = commands.add_parser("evaluate", help="measure the accuracy of an adapter (or zero-shot CLIP)")
    evaluate.add_argument("--adapter", help="a saved adapter folder or Hub repo id")
    evaluate.add_argument("--revision", help="Hub revision of the adapter")
    evaluate.add_argument("--zero-shot", action="store_true", help="evaluate the CLIP with the dataset's template")
    _add_clip_arguments(evaluate)
    _add_data_arguments(evaluate)
    evaluate.add_argument("--split", choices=("test", "val", "train"), default="test")
    evaluate.add_argument("--batch-size", type=int, default=100)
    evaluate.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no")
    evaluate.set_defaults(run=command_evaluate)

    protocol = commands.add_parser(
        "protocol",
        help="run a protocol of the field over methods, datasets and seeds",
        description="Runs a protocol and writes results.json, results.csv and tables.md to --output-dir. "
        "Finished runs are reused when the command is repeated (use --overwrite to train again).",
    )
    protocol.add_argument("protocol", choices=PROTOCOL_COMMANDS)
    protocol.add_argument("--methods", required=True, help="comma-separated, e.g. zeroshot,coop,maple")
    protocol.add_argument("--datasets", help="comma-separated dataset names (targets for the transfer protocols)")
    protocol.add_argument("--source", default="ImageNet", help="training dataset of the transfer protocols")
    protocol.add_argument("--data-root", required=True, help="the folder holding the datasets in the CoOp layout")
    protocol.add_argument("--output-dir", required=True)
    protocol.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    protocol.add_argument("--shots", type=int, default=16, help="shots of base-to-novel and transfer (default 16)")
    protocol.add_argument("--shot-list", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="few-shot K values")
    protocol.add_argument("--overwrite", action="store_true", help="train again even when a run's record exists")
    _add_clip_arguments(protocol)
    _add_training_arguments(protocol)
    protocol.set_defaults(run=command_protocol)

    table = commands.add_parser("table", help="render the paper-style tables from results.json")
    table.add_argument("results", help="a results.json file or the folder holding it")
    table.add_argument("--plot", help="also write the base/novel/HM bar chart to this .svg file")
    table.add_argument("--title", help="title of the plot")
    table.set_defaults(run=command_table)

    push = commands.add_parser("push", help="upload a saved adapter folder to the Hugging Face Hub")
    push.add_argument("--adapter", required=True, help="the folder written by save_pretrained / train")
    push.add_argument("--repo-id", required=True, help="e.g. me/maple-eurosat")
    push.add_argument("--token", help="a Hub token (default: the logged-in one)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", help="branch to push to")
    push.add_argument("--commit-message")
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    push.set_defaults(run=command_push)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `prompt-clip` (and `python -m prompt_clip`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, KeyError, FileNotFoundError, ImportError) as error:
        # Errors of ours name the problem and the fix; a traceback would only hide the message.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
