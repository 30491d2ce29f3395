"""Training throughput of every recipe, and the share of a training step spent in CLIP's text encoder.

Run:  python benchmarks/bench_training.py [--quick] [--threads N] [--only small|ViT-B/16] [--methods coop,maple]
      [--classes 10] [--batch-size N]

For every recipe of `prompt_clip.recipes.list_recipes()` (the method's published config, its optimiser, and for
`promptsrc` the PromptSRC objective), on two randomly initialised CLIPs built from a `CLIPConfig` (no download,
`benchmarks/clip_shapes.py`):

    small      the test suite's tiny CLIP (text 32 wide, vision 48 wide, 3 layers each, 32x32 images, patch 8),
               batch 8. Per-call overheads (hooks, Python) dominate here.
    ViT-B/16   `openai/clip-vit-base-patch16`'s shape (text 512 x 12 layers, vision 768 x 12 layers, 224x224,
               patch 16), batch 4 (batch 1 with --quick). The arithmetic dominates; these are the numbers to read.

The recipes' layer counts (written for 12 layers) and VP's frame (30 of 224 pixels) are rescaled to the CLIP with
`prompt_clip.recipes.scale_to_clip`, as `ProtocolRunner` does (no change on ViT-B/16). 10 classes (--classes):
EuroSAT's class names, so the class prompts have realistic lengths. The text encoder's work grows with the number of
classes (one prompt per class; one per image and class for CoCoOp and AMMPL), the image encoder's with the batch.
Every method gets the same batch size on a shape (not its recipe's batch: CoCoOp and AMMPL train with batch 1, CoOp
and UPT with 32), so images/s compare the methods' cost per image.

What one step is: the inner loop of `PromptTrainer` without its data pipeline. The images and labels are tensors made
once (no image decoding, augmentation, DataLoader or collation), there is no accelerate wrapper (one CPU process) and
no progress bar. Each step re-seeds torch (as the trainer does), runs the recipe's objective (`CrossEntropyObjective`,
or `PromptSRCObjective` for promptsrc: prompted pass + frozen image pass + KL/L1 terms), `backward()`, the recipe's
optimiser step (`prompt_clip.training.build_optimizer`) and `zero_grad(set_to_none=True)`, in fp32. PromptSRC's
Gaussian prompt aggregation runs once per epoch, not per step, and is left out.

Before timing, each method runs one forward pass without gradients (it fills the caches a real run fills in its first
step: the frozen text features of VPT and VP, PromptSRC's 60-template text ensemble), then `warmup` full steps.
Then `reps` rounds of one plain step and one instrumented step, in alternating order. "images/s" = batch / median
plain-step time; "ms/step" is that median; "x CoOp" = images/s divided by CoOp's images/s of the same run (ratios are
only compared within one run). With --quick on ViT-B/16 there is no plain step: images/s come from the instrumented
step (in the default run the two differ on ViT-B/16 by no more than the machine's noise, see "probe" below).

How the text share is measured (the instrumented step). "Text encoder" means `clip.text_model` plus
`clip.text_projection`, including the prompt-injection hooks that run inside them.

- Forward: a pre-hook and a post-hook on both modules add up the wall time of every call.
- Backward: each autograd node records the thread's autograd sequence number at its creation. The pre-hook and the
  post-hook read that counter (by creating one throw-away node), so every node created inside a text forward has a
  number in one of the recorded intervals. After the forward pass, the graph is walked from the loss; each node
  whose number lies in a text interval gets a node pre-hook and post-hook (`Node.register_prehook`/`register_hook`)
  that add up the wall time of its backward function. This is exact attribution, node by node: the backward of text
  layers counts as text even when the autograd engine interleaves it with vision nodes (MaPLe, BMIP and Bloom pass
  tensors between the towers), and vision work never counts as text. On CPU the engine runs the nodes one at a time
  on the calling thread, so the intervals do not overlap.
- "text %" = (text forward + text backward) / (instrumented step time - the time of the graph walk). The forward of
  text prompts computed once and cached (frozen text of VPT and VP) falls in the warm-up, so their share is ~0, as in
  a real run. What is not counted as text: the learner computing prompts (e.g. CoCoOp's meta-net, MaPLe's
  projections), the cosine logits, the loss and the optimiser step.
- "probe" = instrumented step time / plain step time - 1: what the hooks cost (the walk is excluded from both the
  share and this number). It is a few percent on the small CLIP, where a step is milliseconds, and noise on ViT-B/16.

Timing and load: the benchmark prints the load average. When other processes hold the CPUs, multi-threaded torch
stalls on its thread barriers (2 threads can be 2-3x slower than one), so by default (--threads auto) it keeps
torch's thread count on an idle machine and uses one thread when the load average is 0.5 or more. Each method runs
its steps one after another (methods are not interleaved: they share one CLIP, into which one method at a time is
injected), so a change of load between methods shows up in "x CoOp"; rerun on a quiet machine to compare closely.
Default run: about 8 minutes on 2 busy cores with one thread (AMMPL takes about half of it: it encodes every image
once per class, 40 image passes per ViT-B/16 step); --quick: about a minute.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from bench_threads import add_threads_argument, set_threads
from clip_shapes import random_clip, tiny_config, vit_b16_config
from transformers import CLIPConfig, CLIPModel

from prompt_clip import ClipShape, PromptConfig, PromptModel, get_prompt_model
from prompt_clip.data import get_dataset_info
from prompt_clip.objectives import Objective
from prompt_clip.recipes import get_recipe, list_recipes, scale_to_clip
from prompt_clip.tokenization import openai_clip_tokenizer
from prompt_clip.training import TrainingConfig, build_objective, build_optimizer

#: EuroSAT's 10 class names as the field's loaders rename them ("Annual Crop Land", ...).
CLASSNAMES = list(get_dataset_info("EuroSAT").renames.values())


def classnames(count: int) -> list[str]:
    """`count` distinct class names of realistic length: EuroSAT's, then numbered copies of them."""
    return [CLASSNAMES[i % 10] + (f" {i // 10}" if i >= 10 else "") for i in range(count)]


@dataclass
class Shape:
    """A CLIP shape and how much to measure on it.

    Args:
        name (`str`): the name shown in the table.
        config (`CLIPConfig`): the CLIP's shape.
        batch (`int`): images per step.
        warmup (`int`): untimed full steps per method (after the no-gradient forward pass).
        reps (`int`): rounds of (plain step, instrumented step).
        plain (`bool`): time plain steps; `False` takes images/s from the instrumented steps.
    """

    name: str
    config: CLIPConfig
    batch: int
    warmup: int
    reps: int
    plain: bool = True


def shapes(quick: bool) -> list[Shape]:
    if quick:
        return [
            Shape("small", tiny_config(), batch=8, warmup=2, reps=5),
            Shape("ViT-B/16", vit_b16_config(), batch=1, warmup=0, reps=1, plain=False),
        ]
    return [
        Shape("small", tiny_config(), batch=8, warmup=3, reps=15),
        Shape("ViT-B/16", vit_b16_config(), batch=4, warmup=1, reps=2),
    ]


# -- the text-encoder probe --------------------------------------------------------------------------------------


class TextEncoderProbe:
    """Adds up the wall time of the text encoder's forward calls and of the backward of the autograd nodes they
    created (see the module docstring for the method).

    Args:
        clip (`CLIPModel`): the CLIP whose `text_model` and `text_projection` are timed.
    """

    def __init__(self, clip: CLIPModel) -> None:
        self.active = False
        self._leaf = torch.zeros((), requires_grad=True)
        self._handles = []
        for module in (clip.text_model, clip.text_projection):
            self._handles.append(module.register_forward_pre_hook(self._before_forward))
            self._handles.append(module.register_forward_hook(self._after_forward))
        self.reset()

    def reset(self) -> None:
        """Starts a new step."""
        self.forward_s = 0.0
        self.backward_s = 0.0
        self.walk_s = 0.0
        self.nodes = 0
        self._intervals: list[tuple[int, int]] = []
        self._first: int | None = None
        self._forward_start = 0.0
        self._node_start = 0.0

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    @property
    def text_s(self) -> float:
        return self.forward_s + self.backward_s

    def _sequence_nr(self) -> int:
        # A new node takes the next number of this thread's autograd counter; every later node gets a larger one.
        # (`Node._sequence_nr()` is what the autograd engine and torch.profiler use to pair backward with forward.)
        return (self._leaf * 1).grad_fn._sequence_nr()

    def _before_forward(self, module: torch.nn.Module, args: tuple) -> None:
        if not self.active:
            return
        grad = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        self._first = self._sequence_nr() if grad else None
        self._forward_start = time.perf_counter()

    def _after_forward(self, module: torch.nn.Module, args: tuple, output: object) -> None:
        if not self.active:
            return
        self.forward_s += time.perf_counter() - self._forward_start
        if self._first is not None:
            self._intervals.append((self._first, self._sequence_nr()))

    def _node_before(self, grad_outputs: tuple) -> None:
        self._node_start = time.perf_counter()

    def _node_after(self, grad_inputs: tuple, grad_outputs: tuple) -> None:
        self.backward_s += time.perf_counter() - self._node_start

    def attach(self, loss: torch.Tensor) -> None:
        """Hooks the backward of every node a text forward created; call it between the forward and `backward()`."""
        start = time.perf_counter()
        if self._intervals and loss.grad_fn is not None:
            oldest = min(first for first, _ in self._intervals)
            seen: set = set()
            stack = [loss.grad_fn]
            while stack:
                node = stack.pop()
                if node is None or node in seen:
                    continue
                seen.add(node)
                number = node._sequence_nr()
                # A node's inputs are older than the node: below the first text interval nothing can be text.
                # (AccumulateGrad nodes of the parameters carry the largest number and have no inputs.)
                if number < oldest:
                    continue
                if any(first <= number < end for first, end in self._intervals):
                    node.register_prehook(self._node_before)
                    node.register_hook(self._node_after)
                    self.nodes += 1
                stack.extend(next_node for next_node, _ in node.next_functions)
        self.walk_s += time.perf_counter() - start


# -- one method ---------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One method's measurements on one shape (times in seconds, medians over the timed steps)."""

    method: str
    config: str
    trainable: int
    step_s: float
    probe_s: float
    text_share: float
    text_forward_s: float
    text_backward_s: float
    text_nodes: int
    batch: int

    @property
    def images_per_s(self) -> float:
        return self.batch / self.step_s


def make_step(
    model: PromptModel, objective: Objective, parameters: list[torch.nn.Parameter], training: TrainingConfig
) -> Callable[[torch.Tensor, torch.Tensor, int, TextEncoderProbe | None], None]:
    """One `PromptTrainer` step without data loading: seed, objective, backward, optimiser step, zero_grad."""
    optimizer = build_optimizer(parameters, training)

    def step(pixel_values: torch.Tensor, labels: torch.Tensor, seed: int, probe: TextEncoderProbe | None) -> None:
        torch.manual_seed(seed)  # the trainer re-seeds every step (methods that sample: AMMPL's masks, Bloom)
        output = objective(model, pixel_values, labels)
        if probe is not None:
            probe.attach(output.loss)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def describe(config: PromptConfig) -> str:
    """The fields of a config that differ from its class's defaults."""
    defaults = type(config)()
    changed = {k: v for k, v in config.to_dict().items() if k != "method" and getattr(defaults, k, None) != v}
    return f"{type(config).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"


def bench_method(
    name: str, shape: Shape, clip: CLIPModel, tokenizer: Any, probe: TextEncoderProbe, names: list[str]
) -> Row:
    """Injects one recipe into `clip`, times its steps, and unloads it again."""
    recipe = get_recipe(name)
    config = scale_to_clip(recipe.config, ClipShape.from_clip_config(clip.config))
    model = get_prompt_model(clip, config, tokenizer=tokenizer, classnames=names)
    try:
        model.train()
        parameters = [p for p in model.parameters() if p.requires_grad]
        objective = build_objective(recipe.training)
        step = make_step(model, objective, parameters, recipe.training)
        generator = torch.Generator().manual_seed(0)
        size = shape.config.vision_config.image_size
        pixel_values = torch.randn(shape.batch, 3, size, size, generator=generator)
        labels = torch.arange(shape.batch) % len(names)
        with torch.no_grad():  # fills the caches of the first real step (frozen text features)
            objective(model, pixel_values, labels)
        seed = 0
        for _ in range(shape.warmup):
            step(pixel_values, labels, seed, None)
            seed += 1
        plain, instrumented, shares, forwards, backwards, nodes = [], [], [], [], [], []
        for rep in range(shape.reps):
            order = ("plain", "probe") if rep % 2 == 0 else ("probe", "plain")
            for kind in order:
                if kind == "plain" and not shape.plain:
                    continue
                probe.reset()
                probe.active = kind == "probe"
                start = time.perf_counter()
                step(pixel_values, labels, seed, probe if kind == "probe" else None)
                elapsed = time.perf_counter() - start
                probe.active = False
                seed += 1
                if kind == "plain":
                    plain.append(elapsed)
                    continue
                elapsed -= probe.walk_s
                instrumented.append(elapsed)
                shares.append(probe.text_s / elapsed)
                forwards.append(probe.forward_s)
                backwards.append(probe.backward_s)
                nodes.append(probe.nodes)
        trainable, _ = model.get_nb_trainable_parameters()
    finally:
        model.unload()
    probe_step = statistics.median(instrumented)
    return Row(
        method=name,
        config=describe(config),
        trainable=trainable,
        step_s=statistics.median(plain) if plain else probe_step,
        probe_s=probe_step,
        text_share=statistics.median(shares),
        text_forward_s=statistics.median(forwards),
        text_backward_s=statistics.median(backwards),
        text_nodes=max(nodes),
        batch=shape.batch,
    )


# -- report -------------------------------------------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def table(shape: Shape, rows: list[Row]) -> str:
    reference = next((row for row in rows if row.method == "coop"), None)
    header = "| method | images/s | x CoOp | ms/step | text % | text fwd ms | text bwd ms | probe | trainable params |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        relative = f"{row.images_per_s / reference.images_per_s:.2f}" if reference else "-"
        probe = f"{row.probe_s / row.step_s - 1:+.0%}" if shape.plain else "-"
        cells = [row.method, f"{row.images_per_s:.2f}", relative, fmt_ms(row.step_s), f"{100 * row.text_share:.1f}"]
        cells += [fmt_ms(row.text_forward_s), fmt_ms(row.text_backward_s), probe, f"{row.trainable:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps; ViT-B/16 at batch 1, instrumented only")
    add_threads_argument(parser)
    parser.add_argument("--only", choices=["small", "ViT-B/16"], default=None, help="run one shape only")
    parser.add_argument("--methods", default=None, help="comma-separated recipe names (default: every recipe)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step on every shape")
    parser.add_argument(
        "--classes", type=int, default=10, help="classes per step (default 10); the text encoder's work grows with it"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the random CLIP weights")
    args = parser.parse_args()

    methods = list_recipes()
    if args.methods:
        methods = [name.strip().lower() for name in args.methods.split(",") if name.strip()]
        unknown = sorted(set(methods) - set(list_recipes()))
        if unknown:
            parser.error(f"unknown recipe(s) {unknown}; choose from {', '.join(list_recipes())}")
        if "coop" not in methods:
            print("note: without coop in --methods the 'x CoOp' column is empty")
    threads, why, load = set_threads(args.threads)

    start = time.perf_counter()
    print(
        f"torch {torch.__version__}, {threads} thread(s) ({why}), {os.cpu_count()} CPUs, load average {load:.2f}"
        f"{', quick' if args.quick else ''}; {args.classes} classes, fp32, pre-made tensors (no data pipeline)"
    )
    with tempfile.TemporaryDirectory() as cache_dir:
        tokenizer = openai_clip_tokenizer(cache_dir)
    names = classnames(args.classes)
    results: dict[str, tuple[Shape, list[Row]]] = {}
    for shape in shapes(args.quick):
        if args.only and shape.name != args.only:
            continue
        if args.batch_size:
            shape.batch = args.batch_size
        clip = random_clip(shape.config, args.seed)
        probe = TextEncoderProbe(clip)
        rows = []
        print(f"\n{shape.name}: batch {shape.batch}, {shape.warmup} warm-up step(s), {shape.reps} round(s)")
        for name in methods:
            row = bench_method(name, shape, clip, tokenizer, probe, names)
            rows.append(row)
            print(
                f"  {name:<10} {row.images_per_s:8.2f} images/s  {fmt_ms(row.step_s):>8} ms/step  text "
                f"{100 * row.text_share:5.1f}%  ({row.text_nodes} text nodes)  {row.config}",
                flush=True,
            )
        probe.remove()
        results[shape.name] = (shape, rows)
        del clip

    for name, (shape, rows) in results.items():
        print(f"\n### {name} (batch {shape.batch}, {len(names)} classes, {threads} thread(s))\n")
        print(table(shape, rows))
    print(f"\ntotal {time.perf_counter() - start:.0f} s, load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
