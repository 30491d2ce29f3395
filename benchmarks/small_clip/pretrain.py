"""Contrastive pretraining of a small `transformers.CLIPModel` on real offline images (Fashion-MNIST + digits).

Run:  python -m benchmarks.small_clip.pretrain [--cache-dir DIR] [--force] [--steps N] [--threads 2]

The model is a CLIP in miniature: a ViT (32x32 RGB, patch 8, 4 layers of width 128) and a causal text transformer
(4 layers of width 128, OpenAI's BPE vocabulary of 49,408 tokens, 77 positions), trained from scratch with the
symmetric InfoNCE loss on image-caption pairs. Captions are drawn from several dozen templates filled with the class
name ("a low resolution image of a sneaker.", "the digit seven.", ...), so that the model knows every class name of
its data under many phrasings, like a web-scale CLIP, and zero-shot classification works with any reasonable prompt.

With only 20 class names, a batch holds many pairs of the same class; treating them as negatives would push apart
captions that describe the image equally well. So by default every pair of the same class is a positive (the
target is uniform over them, as in UniCL); with unique classes this is exactly CLIP's loss.

The result is cached: `<cache root>/small_clip/<hash of the recipe>/` holds what `save_pretrained` writes for the
model, the tokenizer and the image processor, and `pretrain_info.json` (recipe, data sizes, time, losses, zero-shot
accuracies on the held-out images). The cache root is `$PROMPT_CLIP_CACHE` or `~/.cache/prompt_clip`. Training
writes into a temporary folder that is renamed when complete, so an interrupted run never leaves a half cache.
Results are deterministic for a given seed and thread count.

Measured with the default recipe (torch 2.13 CPU, 2 threads, idle machine): 396 s of training, 6 min 46 s for the whole
command; zero-shot accuracy ("a photo of a {}.") on the held-out images: Fashion-MNIST 82.8%, digits 97.1%. Torch's
threads wait for each other, so when other processes hold the cores the same run can take several times longer
(`pretrain_info.json` records wall and CPU seconds: CPU = threads x wall means the run had its cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from prompt_clip.tokenization import openai_clip_tokenizer

from .captions import templates_for
from .imaging import CLIP_MEAN, CLIP_STD, augment, normalize, to_canvas
from .sources import SourceData, downstream_sources, pretraining_sources
from .zeroshot import DEFAULT_TEMPLATE, zero_shot_accuracy

if TYPE_CHECKING:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

#: Bumped whenever the training code changes in a way the recipe fields do not capture.
RECIPE_VERSION = 1
CACHE_ENV = "PROMPT_CLIP_CACHE"
INFO_FILE = "pretrain_info.json"
BOS_TOKEN_ID, EOS_TOKEN_ID = 49406, 49407


@dataclass(frozen=True)
class PretrainRecipe:
    """Everything that determines the pretrained weights (its hash names the cache folder).

    Args:
        image_size, patch_size (`int`): input side and ViT patch side. Patch 8 (a 4x4 grid, 17 tokens) reached the
            same loss per step as patch 4 (65 tokens) at half the cost, and keeps prompt learning on top of it fast.
        vision_width, vision_layers, vision_heads (`int`): image transformer shape (MLP 4x wider).
        text_width, text_layers, text_heads (`int`): text transformer shape (MLP 4x wider).
        projection_dim (`int`): width of the joint embedding.
        steps, batch_size (`int`): optimisation length, sized for ~7 minutes on 2 CPU threads (1,400 x 128 pairs,
            about 3 passes over Fashion-MNIST); more, smaller steps beat fewer large ones at this budget.
        source_weight_power (`float`): each batch mixes the sources in proportion to their sizes to this power
            (0.5: 113 Fashion-MNIST + 15 digits per 128), so the small digits set is revisited often without
            dominating.
        learning_rate, weight_decay, warmup_fraction, grad_clip (`float`): AdamW with linear warmup then cosine decay.
        same_class_positives (`bool`): pairs of the same class count as positives (see the module docstring).
        augment (`bool`): random shift, horizontal flip (clothes only), brightness and slight tint in pretraining.
            Kept mild: at this budget, stronger geometry (rotation, zoom) cost more accuracy than it gave robustness.
        rotation_degrees, zoom, shift_pixels (`float`): ranges of the random geometry (0 disables one).
        seed (`int`): seeds initialisation, sampling and augmentation.
        eval_templates (`tuple[str, ...]`): templates for the zero-shot accuracies stored in the info file.
    """

    image_size: int = 32
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 2
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 2
    projection_dim: int = 128
    steps: int = 1400
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    source_weight_power: float = 0.5
    same_class_positives: bool = True
    augment: bool = True
    rotation_degrees: float = 0.0
    zoom: float = 0.0
    shift_pixels: float = 2.0
    seed: int = 0
    eval_templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)

    def clip_config(self) -> CLIPConfig:
        """The `transformers.CLIPConfig` of the model."""
        from transformers import CLIPConfig

        text = dict(
            vocab_size=49408,
            hidden_size=self.text_width,
            intermediate_size=4 * self.text_width,
            num_hidden_layers=self.text_layers,
            num_attention_heads=self.text_heads,
            max_position_embeddings=77,
            bos_token_id=BOS_TOKEN_ID,
            eos_token_id=EOS_TOKEN_ID,
            pad_token_id=EOS_TOKEN_ID,
        )
        vision = dict(
            hidden_size=self.vision_width,
            intermediate_size=4 * self.vision_width,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
        )
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=self.projection_dim)


def default_cache_root() -> Path:
    """`$PROMPT_CLIP_CACHE/small_clip`, or `~/.cache/prompt_clip/small_clip`."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/prompt_clip").expanduser() / "small_clip"


def recipe_key(recipe: PretrainRecipe, sources: Sequence[SourceData] | None = None) -> str:
    """Short hash of the recipe, the caption templates, and (for injected data only) the data's bytes."""
    payload = {"version": RECIPE_VERSION, "recipe": dataclasses.asdict(recipe)}
    payload["templates"] = {name: templates_for(name) for name in ("fashion", "digits")}
    if sources is not None:
        digest = hashlib.sha256()
        for source in sources:
            digest.update(f"{source.name}|{'|'.join(source.classnames)}|{source.images.shape}".encode())
            digest.update(source.images.tobytes())
            digest.update(source.labels.tobytes())
        payload["data"] = digest.hexdigest()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def is_complete(folder: Path) -> bool:
    """Whether `folder` holds a finished pretraining (the info file is written last)."""
    needed = (INFO_FILE, "config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json")
    return all((folder / name).is_file() for name in needed)


def pretrain_small_clip(
    cache_dir: str | os.PathLike | None = None,
    *,
    force: bool = False,
    recipe: PretrainRecipe | None = None,
    pretrain_data: Sequence[SourceData] | None = None,
    downstream_data: Sequence[SourceData] | None = None,
    threads: int | None = 2,
    log: Callable[[str], None] | None = print,
    **overrides,
) -> Path:
    """Pretrains the small CLIP (or reuses the cached one) and returns its folder.

    Args:
        cache_dir (`str` or `os.PathLike`, *optional*):
            Folder under which `<recipe hash>/` is created; defaults to `default_cache_root()`.
        force (`bool`, *optional*, defaults to `False`):
            Train again even if a complete folder exists (it is replaced only once the new one is complete).
        recipe (`PretrainRecipe`, *optional*):
            Model and training settings; `PretrainRecipe()` by default.
        pretrain_data, downstream_data (`Sequence[SourceData]`, *optional*):
            Injected images instead of Fashion-MNIST + digits (tests); must be given together. Their content is
            part of the cache key.
        threads (`int`, *optional*, defaults to 2):
            `torch.set_num_threads` during training (restored afterwards); `None` leaves it unchanged.
        log (`Callable[[str], None]`, *optional*, defaults to `print`):
            Progress messages; `None` for silence.
        overrides:
            Fields of `PretrainRecipe` to replace, e.g. `steps=100`.

    Returns:
        `Path`: a folder that `CLIPModel.from_pretrained`, `CLIPTokenizer.from_pretrained` and
        `CLIPImageProcessor.from_pretrained` load.
    """
    recipe = dataclasses.replace(recipe or PretrainRecipe(), **overrides)
    if (pretrain_data is None) != (downstream_data is None):
        raise ValueError("pretrain_data and downstream_data must be given together")
    log = log or (lambda message: None)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    key = recipe_key(recipe, None if pretrain_data is None else [*pretrain_data, *downstream_data])
    final = root / key
    if is_complete(final) and not force:
        log(f"small CLIP: reusing {final}")
        return final
    started = time.perf_counter()
    if pretrain_data is None:
        pretrain_data, downstream_data = pretraining_sources(), downstream_sources()
    root.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = root / "tokenizer"
    tokenizer = openai_clip_tokenizer(tokenizer_dir)
    temporary = root / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        info = _train_and_save(recipe, pretrain_data, downstream_data, tokenizer, temporary, threads, log)
        # transformers 5 saves only tokenizer.json; the slow tokenizer of 4.x needs these two files.
        for name in ("vocab.json", "merges.txt"):
            if not (temporary / name).exists():
                shutil.copyfile(tokenizer_dir / name, temporary / name)
        info["key"] = key
        info["total_seconds"] = round(time.perf_counter() - started, 1)  # with data loading, evaluation, saving
        info["summary"] = summarize(info)
        # Written last: its presence marks the folder complete.
        (temporary / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        _publish(temporary, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    log(f"small CLIP: saved to {final}")
    return final


def summarize(info: dict) -> str:
    """One line describing a pretraining from its `pretrain_info.json` content (accuracies are fractions there)."""
    recipe = info["recipe"]
    accuracies = ", ".join(f"{name} {value:.1%}" for name, value in info["zero_shot_accuracy"].items())
    return (
        f"ViT {recipe['image_size']}px patch {recipe['patch_size']}, vision {recipe['vision_layers']}x"
        f"{recipe['vision_width']}, text {recipe['text_layers']}x{recipe['text_width']}, "
        f"{info['parameters'] / 1e6:.1f} M parameters; {recipe['steps']} steps x {recipe['batch_size']} pairs in "
        f"{info['train_seconds']:.0f} s on {info['threads']} threads; zero-shot on held-out images: {accuracies}"
    )


def _publish(temporary: Path, final: Path) -> None:
    """Moves the finished folder into place; an older folder of the same key is replaced."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    try:
        temporary.rename(final)
    except OSError:
        if not is_complete(final):  # not another process that finished first
            raise
    shutil.rmtree(old, ignore_errors=True)


def _train_and_save(
    recipe: PretrainRecipe,
    pretrain_data: Sequence[SourceData],
    downstream_data: Sequence[SourceData],
    tokenizer: CLIPTokenizer,
    folder: Path,
    threads: int | None,
    log: Callable[[str], None],
) -> dict:
    """Trains a fresh model, measures its zero-shot accuracy, saves everything into `folder`; returns the info."""
    from transformers import CLIPImageProcessor, CLIPModel

    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(recipe.seed)
        clip = CLIPModel(recipe.clip_config())
        start, cpu_start = time.perf_counter(), time.process_time()
        losses = train_contrastive(clip, tokenizer, pretrain_data, recipe, log)
        # CPU time over wall time shows whether other processes competed for the cores during training.
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        clip.eval()
        accuracies = {
            source.name: zero_shot_accuracy(
                clip,
                tokenizer,
                to_canvas(source.images, recipe.image_size, _content_size(recipe)),
                source.labels,
                source.classnames,
                recipe.eval_templates,
            )
            for source in downstream_data
        }
    finally:
        torch.set_num_threads(previous_threads)
    log("small CLIP zero-shot on held-out images: " + ", ".join(f"{k} {v:.1%}" for k, v in accuracies.items()))
    folder.mkdir(parents=True)
    clip.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    size = {"height": recipe.image_size, "width": recipe.image_size}
    CLIPImageProcessor(
        size={"shortest_edge": recipe.image_size}, crop_size=size, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)
    ).save_pretrained(folder)
    tail = losses[-max(1, len(losses) // 20) :]
    return {
        "recipe": dataclasses.asdict(recipe),
        "parameters": sum(p.numel() for p in clip.parameters()),
        "pretrain_sizes": {source.name: len(source) for source in pretrain_data},
        "downstream_sizes": {source.name: len(source) for source in downstream_data},
        "classnames": {source.name: list(source.classnames) for source in pretrain_data},
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "threads": threads if threads is not None else previous_threads,
        "final_loss": float(np.mean(tail)),
        "loss_curve": [
            round(float(np.mean(chunk)), 4) for chunk in np.array_split(np.asarray(losses), 20) if len(chunk)
        ],
        "zero_shot_accuracy": {name: round(value, 4) for name, value in accuracies.items()},
        "zero_shot_templates": list(recipe.eval_templates),
        "versions": {"torch": torch.__version__, "transformers": _transformers_version()},
    }


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _content_size(recipe: PretrainRecipe) -> int:
    # The 28/32 framing of Fashion-MNIST, kept for other input sizes.
    return round(recipe.image_size * 28 / 32)


class _CaptionBank:
    """All captions of one source, tokenised once: `ids[template, class]` padded with the end token."""

    def __init__(self, tokenizer: CLIPTokenizer, source: SourceData) -> None:
        templates = templates_for(source.name)
        texts = [template.format(name) for template in templates for name in source.classnames]
        encoded = tokenizer(texts, padding=True, return_tensors="pt")
        self.ids = encoded["input_ids"].view(len(templates), len(source.classnames), -1)
        self.lengths = encoded["attention_mask"].sum(-1).view(len(templates), len(source.classnames))
        self.num_templates = len(templates)


class _CyclingSampler:
    """Endless stream of indices of one source: a fresh permutation on every pass (from the shared generator)."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator = size, generator
        self.order, self.position = torch.randperm(size, generator=generator), 0

    def take(self, count: int) -> torch.Tensor:
        chunks = []
        while count > 0:
            if self.position == self.size:
                self.order, self.position = torch.randperm(self.size, generator=self.generator), 0
            chunk = self.order[self.position : self.position + count]
            self.position += len(chunk)
            count -= len(chunk)
            chunks.append(chunk)
        return torch.cat(chunks)


def batch_shares(sizes: Sequence[int], batch_size: int, power: float = 0.5) -> list[int]:
    """Images per batch from each source, proportional to its size to the `power` (largest remainders)."""
    weights = np.asarray(sizes, dtype=float) ** power
    exact = batch_size * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts))[: batch_size - counts.sum()]:
        counts[index] += 1
    return counts.tolist()


def contrastive_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, groups: torch.Tensor | None
) -> torch.Tensor:
    """Symmetric InfoNCE on normalised embeddings; pairs with equal `groups` (class ids) are all positives.

    Args:
        image_embeds, text_embeds (`torch.Tensor`): `(B, D)`, L2-normalised; row `i` of both is a pair.
        logit_scale (`torch.Tensor`): log of the temperature's inverse (CLIP's parameter), clamped at 100.
        groups (`torch.Tensor`, *optional*): `(B,)` class ids; `None` gives CLIP's loss (only the diagonal).
    """
    logits = logit_scale.exp().clamp(max=100) * image_embeds @ text_embeds.T
    if groups is None:
        targets = torch.arange(len(logits))
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    positives = (groups[:, None] == groups[None, :]).float()
    targets = positives / positives.sum(-1, keepdim=True)  # symmetric mask: the same targets serve both directions
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _optimizer(clip: torch.nn.Module, recipe: PretrainRecipe) -> torch.optim.Optimizer:
    # No decay on biases, norms, embeddings and the temperature: only on the matrices of the layers.
    decay, no_decay = [], []
    for name, parameter in clip.named_parameters():
        is_matrix = parameter.ndim >= 2 and "embedding" not in name
        (decay if is_matrix else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel is several times faster on CPU (most of the parameters are the token embedding)
        return torch.optim.AdamW(groups, lr=recipe.learning_rate, betas=(0.9, 0.98), eps=1e-6, fused=True)
    except (RuntimeError, TypeError):  # torch builds without a fused CPU AdamW
        return torch.optim.AdamW(groups, lr=recipe.learning_rate, betas=(0.9, 0.98), eps=1e-6)


def _lr_factor(step: int, recipe: PretrainRecipe) -> float:
    warmup = max(1, round(recipe.warmup_fraction * recipe.steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, recipe.steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def train_contrastive(
    clip: CLIPModel,
    tokenizer: CLIPTokenizer,
    sources: Sequence[SourceData],
    recipe: PretrainRecipe,
    log: Callable[[str], None] = print,
) -> list[float]:
    """Trains `clip` in place on image-caption pairs of `sources`; returns the loss of every step.

    Args:
        clip (`CLIPModel`): the model (freshly initialised).
        tokenizer (`CLIPTokenizer`): OpenAI's tokenizer.
        sources (`Sequence[SourceData]`): pretraining images; captions come from `templates_for(source.name)`.
        recipe (`PretrainRecipe`): steps, batch size, optimiser and augmentation settings.
        log (`Callable[[str], None]`): progress messages (about 10 per run).
    """
    generator = torch.Generator().manual_seed(recipe.seed)
    canvases = [to_canvas(source.images, recipe.image_size, _content_size(recipe)) for source in sources]
    labels = [torch.as_tensor(source.labels) for source in sources]
    banks = [_CaptionBank(tokenizer, source) for source in sources]
    samplers = [_CyclingSampler(len(source), generator) for source in sources]
    shares = batch_shares([len(source) for source in sources], recipe.batch_size, recipe.source_weight_power)
    offsets = np.cumsum([0] + [len(source.classnames) for source in sources]).tolist()
    flippable = [source.name != "digits" for source in sources]  # a mirrored digit is not a digit
    optimizer = _optimizer(clip, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, recipe))
    clip.train()
    losses, start = [], time.perf_counter()
    for step in range(recipe.steps):
        images, ids, lengths, groups, flips = [], [], [], [], []
        for index, count in enumerate(shares):
            chosen = samplers[index].take(count)
            chosen_labels = labels[index][chosen]
            template = torch.randint(banks[index].num_templates, (count,), generator=generator)
            images.append(canvases[index][chosen])
            ids.append(banks[index].ids[template, chosen_labels])
            lengths.append(banks[index].lengths[template, chosen_labels])
            groups.append(chosen_labels + offsets[index])
            flips.append(torch.full((count,), flippable[index]))
        pixels = torch.cat(images)
        if recipe.augment:
            pixels = augment(
                pixels,
                torch.cat(flips),
                generator,
                max_rotation=recipe.rotation_degrees,
                scale=(1 - recipe.zoom, 1 + recipe.zoom),
                max_shift=recipe.shift_pixels,
            )
        lengths = torch.cat(lengths)
        width = int(lengths.max())  # the causal mask makes the padding after the end token irrelevant: cut it
        input_ids = torch.cat([bank_ids[:, :width] for bank_ids in _pad_to(ids, width)])
        attention_mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        output = clip(input_ids=input_ids, attention_mask=attention_mask, pixel_values=normalize(pixels))
        loss = contrastive_loss(
            output.image_embeds,
            output.text_embeds,
            clip.logit_scale,
            torch.cat(groups) if recipe.same_class_positives else None,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clip.parameters(), recipe.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if log and (step + 1) % max(1, recipe.steps // 10) == 0:
            recent = np.mean(losses[-max(1, recipe.steps // 10) :])
            log(f"  step {step + 1}/{recipe.steps}  loss {recent:.3f}  {time.perf_counter() - start:.0f}s")
    return losses


def _pad_to(ids: list[torch.Tensor], width: int) -> list[torch.Tensor]:
    """Right-pads each id block with the end token to at least `width` columns."""
    return [F.pad(block, (0, max(0, width - block.shape[1])), value=EOS_TOKEN_ID) for block in ids]


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: pretrain (or find in the cache) the small CLIP and print its folder and zero-shot accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="folder of the cached models (default: $PROMPT_CLIP_CACHE/small_clip or ~/.cache/prompt_clip/small_clip)",
    )
    parser.add_argument("--force", action="store_true", help="train even if a cached model exists")
    parser.add_argument("--steps", type=int, default=PretrainRecipe.steps)
    parser.add_argument("--batch-size", type=int, default=PretrainRecipe.batch_size)
    parser.add_argument("--learning-rate", type=float, default=PretrainRecipe.learning_rate)
    parser.add_argument("--seed", type=int, default=PretrainRecipe.seed)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    args = parser.parse_args(argv)
    folder = pretrain_small_clip(
        args.cache_dir,
        force=args.force,
        threads=args.threads,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    info = json.loads((folder / INFO_FILE).read_text())
    print(f"folder: {folder}")
    print(
        f"train: {info['train_seconds']} s wall ({info['train_cpu_seconds']} s CPU) on {info['threads']} threads, "
        f"final loss {info['final_loss']:.3f}"
    )
    print("zero-shot accuracy: " + ", ".join(f"{k} {v:.1%}" for k, v in info["zero_shot_accuracy"].items()))


if __name__ == "__main__":
    main()
