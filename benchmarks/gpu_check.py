"""GPU check of every method on ViT-B/16 shapes: CUDA, autocast, a half-precision CLIP, save/load, step time.

For each method (ViT-B/16 config, random weights, 10 classes, batch 32 at 224x224) it runs, on the given device:

- a training step under bf16 autocast and under fp16 autocast (finite loss, gradients only in the prompts,
  prompt parameters still float32);
- a forward pass with the CLIP's weights cast to bfloat16 (the learner stays float32; the hooks cast);
- save -> load on the device -> identical eval logits;
- the median time of a bf16-autocast training step, and the peak memory.

    python benchmarks/gpu_check.py --device cuda --tokenizer-dir <folder with vocab.json and merges.txt>
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from clip_shapes import vit_b16_config
from transformers import CLIPModel, CLIPTokenizer

from prompt_clip import (
    AMMPLConfig,
    BloomConfig,
    BMIPConfig,
    CoCoOpConfig,
    CoOpConfig,
    DLPConfig,
    IVLPConfig,
    MaPLeConfig,
    PromptModel,
    UPTConfig,
    VPConfig,
    VPTConfig,
    get_prompt_model,
)

CONFIGS = {
    "coop": CoOpConfig(n_ctx=4, ctx_init="a photo of a"),
    "cocoop": CoCoOpConfig(),
    "vpt": VPTConfig(n_tokens=8, depth=12),
    "vp": VPConfig(),
    "ivlp": IVLPConfig(),
    "dlp": DLPConfig(),
    "maple": MaPLeConfig(),
    "upt": UPTConfig(),
    "bmip": BMIPConfig(),
    "bloom": BloomConfig(),
    "ammpl": AMMPLConfig(mask_mode="shared"),
}


def train_step(model: PromptModel, images, labels, dtype: torch.dtype) -> float:
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=dtype):
        loss = model(images, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss), f"loss is {loss}"
    assert all(p.grad is None for p in model.clip.parameters()), "a CLIP weight received a gradient"
    for name, p in model.learner.named_parameters():
        assert p.dtype == torch.float32, f"{name} is {p.dtype}"
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name} has no finite gradient"
    return loss.item()


def check(name: str, config, clip_state, tokenizer, device: torch.device, batch: int, repeats: int) -> str:
    classnames = [f"class {index}" for index in range(10)]
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, generator=generator).to(device)
    labels = torch.randint(10, (batch,), generator=generator).to(device)

    clip = CLIPModel(vit_b16_config())
    clip.load_state_dict(clip_state)
    model = get_prompt_model(clip.to(device).eval(), config, tokenizer=tokenizer, classnames=classnames)
    bf16_loss = train_step(model, images, labels, torch.bfloat16)
    fp16_loss = train_step(model, images, labels, torch.float16)

    torch.cuda.synchronize(device) if device.type == "cuda" else None
    torch.cuda.reset_peak_memory_stats(device) if device.type == "cuda" else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        train_step(model, images, labels, torch.bfloat16)
        torch.cuda.synchronize(device) if device.type == "cuda" else None
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    model.eval()
    with torch.no_grad():
        expected = model(images[:4]).logits
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        model.unload()
        loaded = PromptModel.from_pretrained(clip, folder, tokenizer=tokenizer).eval()
        with torch.no_grad():
            same = torch.equal(loaded(images[:4]).logits, expected)
        loaded.unload()
    assert same, "save/load changed the logits"

    half_clip = clip.to(torch.bfloat16)
    half = get_prompt_model(half_clip, config, tokenizer=tokenizer, classnames=classnames).eval()
    with torch.no_grad():
        half_logits = half(images[:4].to(torch.bfloat16)).logits
    assert torch.isfinite(half_logits).all()
    half.unload()
    return (
        f"| {name} | {bf16_loss:.4f} | {fp16_loss:.4f} | ok | ok | {1000 * statistics.median(times):.1f} "
        f"| {peak:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tokenizer-dir", required=True, help="folder with vocab.json and merges.txt")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="*", default=sorted(CONFIGS))
    args = parser.parse_args()

    device = torch.device(args.device)
    tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer_dir, pad_token="<|endoftext|>")
    torch.manual_seed(0)
    clip_state = CLIPModel(vit_b16_config()).state_dict()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch} at 224x224, 10 classes\n")
    print("| method | bf16 loss | fp16 loss | save/load identical | bf16-weight CLIP | bf16 step (ms) | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    failures = 0
    for method in args.methods:
        try:
            row = check(method, CONFIGS[method], clip_state, tokenizer, device, args.batch, args.repeats)
        except Exception as error:  # report every method, then fail at the end
            failures += 1
            row = f"| {method} | FAILED: {type(error).__name__}: {error} |"
        print(row, flush=True)
    if failures:
        raise SystemExit(f"{failures} method(s) failed")


if __name__ == "__main__":
    main()
