"""Adapter files: save, load (with checks against the base CLIP) and move them through the Hugging Face Hub.

An adapter folder holds:

- `adapter_config.json`: the method's config fields, plus `base_model_shape` (the CLIP dimensions the adapter
  was trained for), `classnames` and `prompt_clip_version`;
- `adapter_model.safetensors`: the learner's raw parameters (not derived prompts, so training can continue);
- `README.md`: a model card.

Files are written atomically (temporary file, then rename) and read with safetensors only, never unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .learner import ClipShape
from .registry import get_method

if TYPE_CHECKING:
    from .model import PromptModel

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
MODEL_CARD_NAME = "README.md"
_RESERVED_KEYS = ("base_model_shape", "classnames", "prompt_clip_version")


# -- writing ----------------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Calls `write(temporary_path)` next to `path`, then renames it over `path` (all or nothing)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _write_text(path: Path, text: str) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)

    _atomic_write(path, write)


def adapter_config_dict(model: PromptModel) -> dict[str, Any]:
    """What `adapter_config.json` holds for `model`."""
    return {
        **model.config.to_dict(),
        "base_model_shape": model.shape.to_dict(),
        "classnames": model.classnames,
        "prompt_clip_version": __version__,
    }


def model_card(model: PromptModel) -> str:
    """A Hub model card (YAML metadata + usage) for the adapter."""
    config = model.config
    trainable, _ = model.get_nb_trainable_parameters()
    base = config.base_model_name_or_path
    front = ["---", "library_name: prompt_clip"]
    if base:
        front.append(f"base_model: {base}")
    front += ["tags:", "- prompt-learning", "- clip", "- prompt_clip", f"- {config.method}", "---", ""]
    classes = model.classnames or []
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    body = [
        f"# {config.method} prompts for {base or 'a CLIP model'}",
        "",
        f"A [prompt_clip](https://pypi.org/project/prompt-clip) adapter: method `{config.method}`, "
        f"{trainable:,d} trainable parameters, on top of a frozen CLIP.",
        "",
        f"- Base model: `{base or 'unknown'}`",
        f"- Method: `{config.method}`",
        f"- Trainable parameters: {trainable:,d}",
        f"- Classes ({len(classes)}): {shown}",
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import CLIPModel, CLIPTokenizer",
        "from prompt_clip import PromptModel",
        "",
        f'clip = CLIPModel.from_pretrained("{base or "<base model>"}")',
        f'tokenizer = CLIPTokenizer.from_pretrained("{base or "<base model>"}")',
        'model = PromptModel.from_pretrained(clip, "<this repo or folder>", tokenizer=tokenizer)',
        "logits = model(pixel_values=pixel_values).logits",
        "```",
        "",
        "## Configuration",
        "",
        "```json",
        config.to_json_string().strip(),
        "```",
        "",
    ]
    return "\n".join(front + body)


def save_adapter(model: PromptModel, save_directory: str | os.PathLike, model_card_text: str | None = None) -> None:
    """Writes the adapter files of `model` to `save_directory` (created if needed).

    Args:
        model (`PromptModel`): the model whose learner is saved.
        save_directory (`str` or `os.PathLike`): target folder.
        model_card_text (`str`, *optional*): a model card to write instead of the generated one.
    """
    directory = Path(save_directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_pretrained needs a folder, but {directory} is a file. Pick another path.")
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.learner.state_dict().items()}
    # One metadata key only: safetensors writes several in random order, so an unchanged adapter would give a
    # different file (and a needless Hub commit) at every save. Method and version are in adapter_config.json.
    metadata = {"format": "pt"}
    _atomic_write(directory / WEIGHTS_NAME, lambda temporary: save_file(state, temporary, metadata=metadata))
    config_text = json.dumps(adapter_config_dict(model), indent=2, sort_keys=True) + "\n"
    _write_text(directory / CONFIG_NAME, config_text)
    _write_text(directory / MODEL_CARD_NAME, model_card_text if model_card_text is not None else model_card(model))


# -- reading ----------------------------------------------------------------------------------------------------


def _resolve_file(path_or_repo_id: str | os.PathLike, filename: str, **hub_kwargs: Any) -> str:
    """A local file of the adapter folder, or the file downloaded (or taken from the cache) from the Hub."""
    local = Path(path_or_repo_id)
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {local} is not a complete prompt_clip adapter folder.")
        return str(path)
    if local.exists():
        raise NotADirectoryError(f"{local} is a file; pass the adapter folder (with {CONFIG_NAME}) or a Hub repo id.")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError

    try:
        return hf_hub_download(repo_id=str(path_or_repo_id), filename=filename, **hub_kwargs)
    except HFValidationError as error:
        raise FileNotFoundError(
            f"No adapter folder at {str(path_or_repo_id)!r}, and it is not a valid Hub repo id ('owner/name')."
        ) from error
    except LocalEntryNotFoundError:
        raise  # not cached and the Hub cannot be asked: say so, not "not an adapter"
    except EntryNotFoundError as error:
        raise FileNotFoundError(
            f"The Hub repo {path_or_repo_id!r} has no {filename}: it is not a prompt_clip adapter."
        ) from error


def read_adapter_config(path: str) -> dict[str, Any]:
    """Parses `adapter_config.json`, with an error naming the file when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-save or re-download the adapter.") from error
    if not isinstance(values, dict) or "method" not in values:
        raise ValueError(f"{path} has no 'method' field: it is not a prompt_clip adapter config.")
    return values


def read_adapter_weights(path: str) -> dict[str, torch.Tensor]:
    """Reads `adapter_model.safetensors` (never unpickles), with a clear error for a corrupt or truncated file."""
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable safetensors file ({error}); it is corrupt or truncated. Re-download it "
            "(force_download=True for the Hub) or save the adapter again."
        ) from error


def check_base_shape(saved: dict[str, int] | None, actual: ClipShape, source: str, base_name: str | None) -> None:
    """Refuses an adapter trained for a CLIP of another shape, naming every dimension that differs."""
    if not saved:
        return
    expected = actual.to_dict()
    differences = [
        f"{name}: adapter {saved[name]}, this CLIP {expected[name]}"
        for name in expected
        if name in saved and saved[name] != expected[name]
    ]
    if differences:
        raise ValueError(
            f"The adapter {source} was trained for a CLIP of another shape ({'; '.join(differences)}). Load it "
            "onto the base model it was trained on" + (f" ({base_name})." if base_name else ".")
        )


def check_state_dict(expected: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor], source: str) -> None:
    """Refuses missing, unexpected or mis-shaped tensors, listing each."""
    problems = []
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    for name in sorted(set(expected) & set(loaded)):
        if tuple(expected[name].shape) != tuple(loaded[name].shape):
            problems.append(
                f"{name} has shape {tuple(loaded[name].shape)} in the file but {tuple(expected[name].shape)} here"
            )
    if problems:
        raise ValueError(
            f"The weights in {source} do not fit this method and CLIP: " + "; ".join(problems) + ". Was the "
            "adapter saved with a different config or prompt_clip version?"
        )


def load_adapter(
    model_class: type[PromptModel],
    clip: torch.nn.Module,
    path_or_repo_id: str | os.PathLike,
    tokenizer: Any = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> PromptModel:
    """Builds a `PromptModel` on `clip` from a saved adapter.

    Args:
        model_class: `PromptModel` (or a subclass).
        clip (`transformers.CLIPModel`): the base model, of the shape the adapter was trained for.
        path_or_repo_id (`str` or `os.PathLike`): a local adapter folder or a Hub repo id.
        tokenizer: the CLIP's tokenizer.
        revision, token, cache_dir, local_files_only, force_download: passed to `huggingface_hub.hf_hub_download`.

    Raises:
        ValueError: unknown method, another CLIP shape, corrupt weights, missing/unexpected/mis-shaped tensors.
    """
    hub_kwargs = {
        "revision": revision,
        "token": token,
        "cache_dir": cache_dir,
        "local_files_only": local_files_only,
        "force_download": force_download,
    }
    config_path = _resolve_file(path_or_repo_id, CONFIG_NAME, **hub_kwargs)
    values = read_adapter_config(config_path)
    spec = get_method(values["method"])
    extras = {key: values.pop(key, None) for key in _RESERVED_KEYS}
    actual_shape = ClipShape.from_clip_config(clip.config)
    base_name = values.get("base_model_name_or_path")
    check_base_shape(extras["base_model_shape"], actual_shape, str(path_or_repo_id), base_name)
    config = spec.config_class.from_dict(values)
    weights_path = _resolve_file(path_or_repo_id, WEIGHTS_NAME, **hub_kwargs)
    state = read_adapter_weights(weights_path)
    model = model_class(clip, config, tokenizer=tokenizer, classnames=extras["classnames"])
    try:
        check_state_dict(model.learner.state_dict(), state, weights_path)
        model.learner.load_state_dict(state)
    except BaseException:
        model.unload()  # leave the CLIP as it was given
        raise
    return model


# -- the Hub ----------------------------------------------------------------------------------------------------


def push_adapter(
    model: PromptModel,
    repo_id: str,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> str:
    """Uploads the adapter files of `model` to the Hub repo `repo_id` (created if needed).

    Returns:
        `str`: the URL of the commit (or pull request).
    """
    with tempfile.TemporaryDirectory() as folder:
        save_adapter(model, folder)
        return push_adapter_folder(
            folder,
            repo_id,
            token=token,
            private=private,
            revision=revision,
            commit_message=commit_message or f"Upload {model.config.method} adapter with prompt_clip",
            create_pr=create_pr,
        )


def push_adapter_folder(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> str:
    """Uploads a saved adapter folder (`save_pretrained` output) to the Hub, without loading a CLIP.

    The config and the weights are read first, so a corrupt or foreign folder is refused before anything is
    uploaded; only the adapter's own files are sent.

    Returns:
        `str`: the URL of the commit (or pull request).
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} is not a saved adapter: {path.name} is missing (save_pretrained writes it)."
            )
    values = read_adapter_config(str(config_path))
    get_method(values["method"])
    read_adapter_weights(str(weights_path))
    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        revision=revision,
        commit_message=commit_message or f"Upload {values['method']} adapter with prompt_clip",
        create_pr=create_pr,
        allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME],
    )
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
