"""Overhead of `PromptModel` over a bare CLIP at inference, and speed-up of the text cut in training.

Run:  python benchmarks/bench_inference.py [--quick] [--threads N] [--only tiny|ViT-B/16] [--profile]

Everything runs on CPU with randomly initialised CLIPs built from a `CLIPConfig` (no download), in two shapes:
"tiny" (the test suite's CLIP: widths 32/48, 3 layers, 32x32 images), where a constant per-call overhead is most
visible, and "ViT-B/16" (text 512 wide x 12 layers x 8 heads, vision 768 wide x 12 layers x 12 heads, 224x224
images, patch 16, projection 512), where the model's arithmetic dominates. 10 classes; 4 images per inference call
and per training step on ViT-B/16 (2 with --quick), 8 on the tiny CLIP. The tokenizer is OpenAI's real CLIP
tokenizer, built offline. Default run: about 3 minutes with one free core; --quick: under a minute.

(a) Inference (model.eval(), torch.inference_mode). `CoOpConfig(n_ctx=4, ctx_init="a photo of a")` before any
    training gives prompts equal to the plain text "a photo of a {classname}.", so the bare CLIP computes exactly
    the same logits from that text (checked to 1e-4 before timing; the max difference is printed). Scenarios:

    cached text      The bare CLIP encodes the class texts once, keeps the normalised features, and per batch only
                     encodes the images, normalises and multiplies (what a user does). The PromptModel relies on its
                     own eval-mode text cache (hit on every timed call).
    text every call  Both encode the class texts in every batch: the bare CLIP calls `CLIPModel.forward(input_ids,
                     attention_mask, pixel_values)` with the tokenizer's output (padding=True); the PromptModel gets
                     `model._text_cache = None` before each call, so its cache never hits (setting an attribute
                     costs nothing measurable). Both encode sequences of the same width.
    MaPLe (info)     `MaPLeConfig(n_ctx=2, depth=9)` (depth 3 on the 3-layer tiny CLIP), cached text, against the
                     bare CLIP with cached text. Its logits differ (2 extra vision tokens through 9 layers, prompts
                     projected from the text prompts on every call), so this is information, not held to the target.

    "ratio" = PromptModel time / bare CLIP time. Target: ratio <= 1.05.

(b) One training step (model.train(), forward + cross-entropy + backward + SGD step) of CoOp (as above) and MaPLe,
    with and without the text cut. prompt_clip tokenises the class prompts padded to the longest prompt of the class
    list and cuts the sequences after the last end-of-text token of the batch (`cut_after_end_of_text`), so the
    text encoder runs on `width` positions (printed). "without cut" is what the original CoOp/MaPLe code does: every
    class prompt padded to the full 77 positions (with the tokenizer's pad token) and
    `prompt_clip.model.cut_after_end_of_text` patched to the identity, so the text encoder runs on all 77 positions.
    Everything else (image side, loss, optimizer) is identical. The logits of both are checked to be equal first
    (the cut is exact under the causal mask). "speed-up" = time without cut / time with cut. It grows with the
    number of classes per image in the step, since only the text side gets shorter: CoOp's image tower runs
    without autograd, MaPLe's runs forward and backward (its vision prompts need gradients), so MaPLe gains less.

How it is timed: the functions compared are called in turn inside one loop (interleaved, order rotated every
repetition), so slow drifts of the machine (other processes, clock frequency) hit both sides alike. Inference is
warmed up by the correctness checks (each function runs once before timing), training by untimed rounds. The
"bare CLIP" / "PromptModel" / "with cut" / "without cut" columns are median times per call. "ratio" and "speed-up"
are the median over repetitions of the ratio of the two times measured side by side in that repetition; "IQR" is
the interquartile range of those per-repetition ratios (min-max with fewer than 4 repetitions): a verdict whose IQR
straddles 1.05 is within noise, and with --quick (one ViT-B/16 repetition) the ViT-B/16 ratios are a smoke test.
The load average is printed: when other processes hold the CPUs, multi-threaded torch stalls on its thread
barriers (tiny calls become 5-10x slower) and even the ratios become noise: so by default (--threads auto) the
benchmark keeps torch's thread count on an idle machine and uses one thread when the load average is 0.5 or more.
With one thread, "cpu ratio" / "cpu" give the same ratios from the process's CPU time instead of wall-clock time:
time spent descheduled while other processes run does not count, so on a busy machine they are the steadier
cross-check (they still include the slowdown of sharing caches and cores). Verdicts use the wall-clock ratio.

--profile adds a breakdown of where the PromptModel's extra time goes on the tiny CLIP (cached text): the wrapper
around the CLIP (image tower replaced by a stub on both sides), its parts, and the cost of one hook.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bench_threads import add_threads_argument, set_threads
from clip_shapes import tiny_config, vit_b16_config
from transformers import CLIPConfig, CLIPModel

import prompt_clip.model as prompt_model_module
from prompt_clip import CoOpConfig, MaPLeConfig, PromptModel, get_prompt_model
from prompt_clip.text import ClassTokens
from prompt_clip.tokenization import openai_clip_tokenizer

TARGET = 1.05
TEMPLATE = "a photo of a {}."
CLASSNAMES = [
    "cat",
    "golden retriever",
    "sea lion",
    "airplane",
    "great white shark",
    "espresso maker",
    "red-breasted merganser",
    "cheeseburger",
    "tree frog",
    "container ship",
]


@dataclass
class Shape:
    name: str
    config: CLIPConfig
    infer_batch: int  # images per inference call
    train_batch: int  # images per training step
    infer_reps: int
    train_reps: int
    train_warmup: int  # untimed rounds of training steps (inference is warmed up by its correctness checks)
    inner: int  # calls per timed repetition (>1 for the tiny model, whose calls take about a millisecond)


def shapes(quick: bool) -> list[Shape]:
    if quick:
        return [
            Shape("tiny", tiny_config(), 8, 8, infer_reps=21, train_reps=11, train_warmup=1, inner=5),
            Shape("ViT-B/16", vit_b16_config(), 2, 2, infer_reps=1, train_reps=1, train_warmup=0, inner=1),
        ]
    return [
        Shape("tiny", tiny_config(), 8, 8, infer_reps=61, train_reps=31, train_warmup=1, inner=5),
        # 4 images x 5 repetitions resolves the ratio better than 8 x 3 in less time (the overhead is per call).
        Shape("ViT-B/16", vit_b16_config(), 4, 4, infer_reps=5, train_reps=2, train_warmup=1, inner=1),
    ]


# -- timing ------------------------------------------------------------------------------------------------------


def interleaved(functions: dict[str, Callable[[], object]], reps: int, inner: int, warmup: int = 1) -> dict:
    """Seconds per call of each function per repetition, measured in turns (order rotated each repetition).

    `times[name]` is wall-clock time, `times[name + " cpu"]` the process's CPU time over the same calls.
    """
    names = list(functions)
    times: dict[str, list[float]] = {key: [] for name in names for key in (name, f"{name} cpu")}
    for rep in range(warmup + reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(inner):
                functions[name]()
            if rep >= warmup:
                times[name].append((time.perf_counter() - start) / inner)
                times[f"{name} cpu"].append((time.process_time() - start_cpu) / inner)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratios(times: dict[str, list[float]], numerator: str, denominator: str) -> list[float]:
    """Per repetition, the ratio of two functions' times measured next to each other."""
    return [a / b for a, b in zip(times[numerator], times[denominator], strict=True)]


def cpu_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> str:
    """Median paired ratio of CPU times; only meaningful with one thread (else threads' CPU times add up)."""
    if torch.get_num_threads() != 1:
        return "-"
    return f"{median(paired_ratios(times, f'{numerator} cpu', f'{denominator} cpu')):.3f}"


def summary(ratios: list[float]) -> tuple[float, str]:
    """Median of the paired ratios and their interquartile range (min-max below 4 repetitions)."""
    if len(ratios) >= 4:
        low, _, high = statistics.quantiles(ratios, n=4)
    else:
        low, high = min(ratios), max(ratios)
    return statistics.median(ratios), f"{low:.3f}-{high:.3f}"


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f} ms" if seconds < 10 else f"{seconds:9.2f} s "


def verdict(ratio: float) -> str:
    return "ok" if ratio <= TARGET else f"ABOVE {TARGET}"


# -- models --------------------------------------------------------------------------------------------------------


def features(output) -> torch.Tensor:
    """Projected features from get_text/image_features (a tensor, or a model output in transformers >= 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@contextlib.contextmanager
def without_text_cut(model: PromptModel) -> Iterator[None]:
    """Class prompts padded to all 77 positions and no cut: the text encoder runs on the full sequence length."""
    tokens = model._class_tokens
    positions = model.shape.text_positions
    pad = model.tokenizer.pad_token_id
    padded = torch.full((tokens.input_ids.shape[0], positions), pad, dtype=torch.long)
    padded[:, : tokens.input_ids.shape[1]] = tokens.input_ids
    original_cut = prompt_model_module.cut_after_end_of_text
    model._class_tokens = ClassTokens(padded, tokens.ctx_positions)
    prompt_model_module.cut_after_end_of_text = lambda input_ids, eos_token_id: input_ids
    try:
        yield
    finally:
        prompt_model_module.cut_after_end_of_text = original_cut
        model._class_tokens = tokens


def maple_config(clip_config: CLIPConfig) -> MaPLeConfig:
    depth = min(9, clip_config.text_config.num_hidden_layers, clip_config.vision_config.num_hidden_layers)
    return MaPLeConfig(n_ctx=2, depth=depth, ctx_init="a photo of a")


# -- (a) inference -------------------------------------------------------------------------------------------------


def bench_inference(shape: Shape, clip: CLIPModel, tokenizer) -> dict[str, tuple[float, str]]:
    bare = copy.deepcopy(clip).eval()
    coop = get_prompt_model(
        copy.deepcopy(bare), CoOpConfig(n_ctx=4, ctx_init="a photo of a"), tokenizer, CLASSNAMES
    ).eval()
    maple_cfg = maple_config(shape.config)
    maple = get_prompt_model(copy.deepcopy(bare), maple_cfg, tokenizer, CLASSNAMES).eval()
    vision = shape.config.vision_config
    pixels = torch.randn(shape.infer_batch, 3, vision.image_size, vision.image_size)
    texts = tokenizer([TEMPLATE.format(name) for name in CLASSNAMES], padding=True, return_tensors="pt")
    assert torch.equal(texts["input_ids"], coop._class_tokens.input_ids), "CoOp prompt tokens differ from the text"

    with torch.inference_mode():
        text_features = F.normalize(features(bare.get_text_features(**texts)), dim=-1)
        scale = bare.logit_scale.exp()

        def bare_cached():
            image_features = F.normalize(features(bare.get_image_features(pixel_values=pixels)), dim=-1)
            return scale * image_features @ text_features.t()

        def bare_every_call():
            return bare(**texts, pixel_values=pixels).logits_per_image

        def coop_cached():
            return coop(pixels).logits

        def coop_every_call():
            coop._text_cache = None
            return coop(pixels).logits

        def maple_cached():
            return maple(pixels).logits

        # Same logits (to 1e-4) before timing anything; these calls (one of each function) are also the warm-up.
        reference = bare_every_call()
        checks = {"bare cached": bare_cached(), "CoOp cached": coop_cached(), "CoOp every call": coop_every_call()}
        for name, logits in checks.items():
            torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4, msg=f"{name}: logits differ")
        max_diff = max((logits - reference).abs().max().item() for logits in checks.values())
        maple_cached()

        cached = {"bare cached": bare_cached, "CoOp cached": coop_cached, "MaPLe cached": maple_cached}
        every_call = {"bare every call": bare_every_call, "CoOp every call": coop_every_call}
        times = interleaved(cached, reps=shape.infer_reps, inner=shape.inner, warmup=0)
        times.update(interleaved(every_call, reps=shape.infer_reps, inner=shape.inner, warmup=0))

    rows = [
        ("cached text", "CoOp", "bare cached", "CoOp cached", True),
        ("text every call", "CoOp", "bare every call", "CoOp every call", True),
        ("cached text (info)", f"MaPLe depth {maple_cfg.depth}", "bare cached", "MaPLe cached", False),
    ]
    print(
        f"\n[{shape.name}] (a) inference: {shape.infer_batch} images, {len(CLASSNAMES)} classes, prompt width "
        f"{texts['input_ids'].shape[1]} tokens, median of {shape.infer_reps} x {shape.inner} calls; "
        f"CoOp vs bare max |logit diff| = {max_diff:.1e}"
    )
    print(
        f"  {'scenario':<20} {'model':<14} {'bare CLIP':>12} {'PromptModel':>12} {'ratio':>7} {'ratio IQR':>12} "
        f"{'cpu ratio':>9}  target"
    )
    ratios = {}
    for scenario, model_name, bare_key, model_key, held in rows:
        ratio, spread = summary(paired_ratios(times, model_key, bare_key))
        cpu = cpu_ratio(times, model_key, bare_key)
        ratios[f"{shape.name} {scenario} {model_name}"] = (ratio, cpu)
        print(
            f"  {scenario:<20} {model_name:<14} {fmt_time(median(times[bare_key]))} "
            f"{fmt_time(median(times[model_key]))} {ratio:7.3f} {spread:>12} {cpu:>9}  "
            f"{verdict(ratio) if held else '(info)'}"
        )
    return ratios


# -- (b) training step ---------------------------------------------------------------------------------------------


def time_training_steps(model: PromptModel, pixels: torch.Tensor, labels: torch.Tensor, shape: Shape) -> dict:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        loss = model(pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def step_without_cut():
        with without_text_cut(model):
            step()

    steps = {"with cut": step, "without cut": step_without_cut}
    return interleaved(steps, reps=shape.train_reps, inner=shape.inner, warmup=shape.train_warmup)


def bench_training(shape: Shape, clip: CLIPModel, tokenizer) -> dict[str, tuple[float, str]]:
    vision = shape.config.vision_config
    pixels = torch.randn(shape.train_batch, 3, vision.image_size, vision.image_size)
    labels = torch.arange(shape.train_batch) % len(CLASSNAMES)
    configs = {"CoOp": CoOpConfig(n_ctx=4, ctx_init="a photo of a"), "MaPLe": maple_config(shape.config)}
    print(
        f"\n[{shape.name}] (b) training step (forward + backward + SGD): {shape.train_batch} images, "
        f"{len(CLASSNAMES)} classes, median of {shape.train_reps} x {shape.inner} steps"
    )
    print(
        f"  {'method':<14} {'with cut':>12} {'without cut':>12} {'speed-up':>9} {'IQR':>12} {'cpu':>7}  "
        "text positions (with / without)"
    )
    speedups = {}
    for method, config in configs.items():
        model = get_prompt_model(copy.deepcopy(clip), config, tokenizer, CLASSNAMES).train()
        width = model._class_tokens.input_ids.shape[1]

        # The cut is exact: same logits with and without it (checked once, before any step).
        with torch.no_grad():
            with_cut = model(pixels).logits
            with without_text_cut(model):
                full = model(pixels).logits
        torch.testing.assert_close(with_cut, full, atol=1e-4, rtol=1e-4, msg=f"{method}: the text cut changed logits")

        times = time_training_steps(model, pixels, labels, shape)
        with_time, without_time = median(times["with cut"]), median(times["without cut"])
        speedup, spread = summary(paired_ratios(times, "without cut", "with cut"))
        cpu = cpu_ratio(times, "without cut", "with cut")
        speedups[f"{shape.name} {method}"] = (speedup, cpu)
        positions = model.shape.text_positions
        print(
            f"  {method:<14} {fmt_time(with_time)} {fmt_time(without_time)} {speedup:8.2f}x {spread:>12} {cpu:>7}  "
            f"{width} / {positions}"
        )
    return speedups


# -- optional profile --------------------------------------------------------------------------------------------


def best_per_call_us(functions: dict[str, Callable[[], object]], calls: int, rounds: int = 9) -> dict[str, float]:
    """Microseconds per call of each function: fastest block of `calls // rounds` calls, rounds interleaved."""
    for function in functions.values():
        for _ in range(20):
            function()
    block, best = max(1, calls // rounds), dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(block):
                function()
            best[name] = min(best[name], (time.perf_counter() - start) / block * 1e6)
    return best


def profile_tiny(tokenizer, seed: int, calls: int = 1800) -> None:
    """Where the PromptModel's time goes beyond the bare CLIP: tiny CLIP, CoOp, cached text, eval mode.

    The image tower is replaced by a stub returning fixed features (on both sides) to time the wrapper alone; the
    hooks, which only run inside the real tower, are timed on the hooked `pre_layrnorm` against the bare one.
    """
    from prompt_clip.model import PromptModelOutput

    torch.manual_seed(seed)
    shape = shapes(quick=True)[0]
    bare = CLIPModel(shape.config).eval()
    model = get_prompt_model(
        copy.deepcopy(bare), CoOpConfig(n_ctx=4, ctx_init="a photo of a"), tokenizer, CLASSNAMES
    ).eval()
    vision = shape.config.vision_config
    pixels = torch.randn(shape.infer_batch, 3, vision.image_size, vision.image_size)
    texts = tokenizer([TEMPLATE.format(name) for name in CLASSNAMES], padding=True, return_tensors="pt")
    hidden = torch.randn(1, 1, vision.hidden_size)  # a cheap LayerNorm call, so the hook's cost stands out
    hooks_per_image_forward = 2 + vision.num_hidden_layers - 1  # pixel pre-hook, pre_layrnorm, layers 1..L-1
    with torch.inference_mode():
        text_features = F.normalize(features(bare.get_text_features(**texts)), dim=-1)
        scale = bare.logit_scale.exp()
        prompts = model.learner.prompts()
        image_features = model.encode_image(pixels, prompts)
        cached = model.class_text_features(prompts)

        def bare_call(image_tower):
            return scale * F.normalize(features(image_tower(pixel_values=pixels)), dim=-1) @ text_features.t()

        def stub(pixel_values):
            return image_features

        def hooked_layer_norm():
            with model.injector.vision({}):
                return model.clip.vision_model.pre_layrnorm(hidden)

        rows = {
            "bare CLIP, cached text (whole call)": lambda: bare_call(bare.get_image_features),
            "PromptModel forward (whole call)": lambda: model(pixels),
            "  learner.prompts()": model.learner.prompts,
            "  class_text_features (cache hit: key of versions)": lambda: model.class_text_features(prompts),
            "  bare: scale * normalize(image) @ text.T": lambda: (
                scale * F.normalize(image_features, dim=-1) @ text_features.t()
            ),
            "  PromptModel.cosine_logits": lambda: model.cosine_logits(image_features, cached),
            "  PromptModelOutput(logits=...)": lambda: PromptModelOutput(loss=None, logits=image_features),
            "  bare pre_layrnorm (1 token)": lambda: bare.vision_model.pre_layrnorm(hidden),
            "  hooked pre_layrnorm (1 token, vision context on)": hooked_layer_norm,
        }
        results = best_per_call_us(rows, calls)
        model.clip.get_image_features = stub  # an instance attribute shadows the method
        stubbed = {
            "bare CLIP call, image tower stubbed": lambda: bare_call(stub),
            "PromptModel forward, image tower stubbed": lambda: model(pixels),
            "  encode_image, image tower stubbed": lambda: model.encode_image(pixels, prompts),
        }
        results.update(best_per_call_us(stubbed, calls))
        del model.clip.get_image_features
    whole = results["PromptModel forward (whole call)"] - results["bare CLIP, cached text (whole call)"]
    wrapper = results["PromptModel forward, image tower stubbed"] - results["bare CLIP call, image tower stubbed"]
    per_hook = results["  hooked pre_layrnorm (1 token, vision context on)"] - results["  bare pre_layrnorm (1 token)"]
    bare_time = results["bare CLIP, cached text (whole call)"]
    print(
        f"\n[profile] tiny CLIP, CoOp, cached text, {shape.infer_batch} images: microseconds per call (best of 9 "
        f"interleaved blocks of {calls // 9})"
    )
    order = list(rows)[:2] + list(stubbed)[:2] + list(rows)[2:3] + list(stubbed)[2:] + list(rows)[3:]
    for name in order:
        print(f"  {name:<54} {results[name]:9.1f} us")
    print(
        f"  -> PromptModel - bare, whole call: {whole:.0f} us ({whole / bare_time:+.1%}); wrapper outside the "
        f"image tower: {wrapper:.0f} us ({wrapper / bare_time:+.1%}); hooks: {hooks_per_image_forward} run per "
        f"image forward at about {per_hook:.1f} us = {hooks_per_image_forward * per_hook:.0f} us "
        f"({hooks_per_image_forward * per_hook / bare_time:+.1%}; on ViT-B/16 13 hooks against a forward of seconds)"
    )


# -- main --------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and smaller ViT-B/16 batches")
    add_threads_argument(parser)
    parser.add_argument("--only", choices=["tiny", "ViT-B/16"], default=None, help="run one shape only")
    parser.add_argument("--profile", action="store_true", help="also time the parts of the tiny CoOp forward")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threads, why, load = set_threads(args.threads)

    start = time.perf_counter()
    print(
        f"torch {torch.__version__}, {threads} thread(s) ({why}), {os.cpu_count()} CPUs, load average {load:.2f}"
        f"{', quick' if args.quick else ''}"
    )
    if load >= 0.5 and threads > 1:
        print("  note: other processes are running; with several threads timings stall (try --threads 1)")
    with tempfile.TemporaryDirectory() as cache_dir:
        tokenizer = openai_clip_tokenizer(cache_dir)
    ratios, speedups = {}, {}
    for shape in shapes(args.quick):
        if args.only and shape.name != args.only:
            continue
        torch.manual_seed(args.seed)
        clip = CLIPModel(shape.config).eval()  # random weights; every model below gets its own copy
        ratios.update(bench_inference(shape, clip, tokenizer))
        speedups.update(bench_training(shape, clip, tokenizer))
    if args.profile:
        profile_tiny(tokenizer, args.seed)

    print(f"\nSummary (target: PromptModel / bare CLIP <= {TARGET} with the same logits)")
    for name, (ratio, cpu) in ratios.items():
        held = "(info)" if "(info)" in name else verdict(ratio)
        print(f"  inference {name:<48} ratio {ratio:6.3f} (cpu {cpu:>5})  {held}")
    for name, (speedup, cpu) in speedups.items():
        print(f"  training step {name:<44} text cut speed-up {speedup:5.2f}x (cpu {cpu:>5})")
    print(f"total {time.perf_counter() - start:.0f} s, load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
