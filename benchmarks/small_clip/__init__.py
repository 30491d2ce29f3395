"""A small CLIP pretrained here on real offline images, and distribution-shifted downstream tasks in CoOp's layout.

- `sources`: Fashion-MNIST (Debian package) and scikit-learn's digits, split into pretraining / downstream parts.
- `pretrain`: `pretrain_small_clip()` trains (or reuses from the cache) a `transformers.CLIPModel`.
- `tasks`: `build_shifted_tasks()` writes the downstream tasks (PNG files + `split_zhou_*.json`).
"""
