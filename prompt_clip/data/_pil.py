"""Lazy access to Pillow, which is an optional dependency (extra `data`)."""

from __future__ import annotations

from types import ModuleType


def require_pil() -> ModuleType:
    """Returns the `PIL.Image` module, or raises an `ImportError` that says how to install it."""
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - exercised only without Pillow
        raise ImportError(
            'Reading images needs Pillow, which is not installed. Install it with: pip install "prompt-clip[data]"'
        ) from error
    return Image
