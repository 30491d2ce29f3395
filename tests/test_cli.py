"""The `prompt-clip` command line, run on a tiny CLIP saved to disk and a dataset in the field's layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import hf_hub_download

from prompt_clip import PromptModel
from prompt_clip.cli import PROTOCOL_COMMANDS, build_parser, main
from prompt_clip.hub import CONFIG_NAME, WEIGHTS_NAME

from .conftest import make_tiny_clip
from .data_helpers import make_eurosat
from .test_hub import TOKEN, hub  # noqa: F401  (the stand-in Hub fixture)

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = ["--epochs", "2", "--warmup-epochs", "0", "--no-progress"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("tiny_clip")
    make_tiny_clip().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_eurosat(tmp_path_factory.mktemp("data"))


def run_cli(*args: str) -> int:
    return main([str(arg) for arg in args])


def model_args(clip_dir) -> list[str]:
    return ["--clip", str(clip_dir), "--local-files-only", "--device", "cpu"]


@pytest.mark.parametrize("command", ["", "list", "train", "evaluate", "protocol", "table", "push"])
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"] if command else ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: prompt-clip" in text
    if command == "protocol":
        assert all(name in text for name in PROTOCOL_COMMANDS)


def test_list_shows_methods_recipes_and_datasets(capsys):
    assert run_cli("list") == 0
    text = capsys.readouterr().out
    for name in ("maple", "promptsrc", "EuroSAT", "ImageNetR", "Adam"):
        assert name.lower() in text.lower()


def test_train_then_evaluate_the_saved_adapter(clip_dir, data_root, tmp_path, capsys, tokenizer):
    out = tmp_path / "run"
    args = ["train", "--method", "coop", *model_args(clip_dir), "--data-root", data_root, "--dataset", "EuroSAT"]
    assert run_cli(*args, "--subset", "base", "--shots", "2", "--output-dir", out, *FAST) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out[-len(json.dumps(metrics, indent=2)) - 1 :]) == metrics
    assert metrics["method"] == "coop" and metrics["subset"] == "base"
    assert (out / "adapter" / WEIGHTS_NAME).is_file()
    model = PromptModel.from_pretrained(make_tiny_clip(), out / "adapter", tokenizer=tokenizer)
    assert model.config.template == "a centered satellite photo of {}."

    evaluate = ["evaluate", "--adapter", out / "adapter", *model_args(clip_dir), "--data-root", data_root]
    assert run_cli(*evaluate, "--dataset", "EuroSAT", "--subset", "base") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run_cli(*evaluate, "--dataset", "EuroSAT", "--subset", "novel") == 0
    assert json.loads(capsys.readouterr().out)["classes"] == 5


def test_train_resume_and_config_overrides(clip_dir, data_root, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--method", "maple", *model_args(clip_dir), "--data-root", data_root, "--dataset", "EuroSAT"]
    args = [*base, "--shots", "1", "--output-dir", out, *FAST, "--set", "depth=2", "--set", "n_ctx=1"]
    assert run_cli(*args) == 0
    config = json.loads((out / "adapter" / CONFIG_NAME).read_text())
    assert (config["depth"], config["n_ctx"]) == (2, 1)
    assert run_cli(*args, "--resume") == 0  # every epoch is checkpointed: resuming a finished run trains nothing
    assert "error" not in capsys.readouterr().err


def test_protocol_and_table_commands(clip_dir, data_root, tmp_path, capsys):
    out = tmp_path / "results"
    args = ["protocol", "base-to-novel", "--methods", "zeroshot,coop", "--datasets", "EuroSAT"]
    code = run_cli(
        *args,
        *model_args(clip_dir),
        "--data-root",
        data_root,
        "--output-dir",
        out,
        "--seeds",
        "1",
        "2",
        "--shots",
        "2",
        *FAST,
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Zero-shot CLIP |" in printed and "Open-world" in printed
    assert (out / "tables.md").read_text() in printed
    assert len(json.loads((out / "results.json").read_text())) == 4
    assert run_cli("table", out, "--plot", tmp_path / "plot.svg") == 0
    assert "| CoOp |" in capsys.readouterr().out
    assert (tmp_path / "plot.svg").read_text().startswith("<svg")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "EuroSAT"], "--data-root"),
        (["--dataset", "EuroSAT", "--data-root", "{missing}"], "does not exist"),
        (["--dataset", "EuroSAT", "--data-root", "{empty}"], "holds 'eurosat/'"),
        (["--dataset", "NoSuchSet", "--data-root", "{data}"], "NoSuchSet"),
    ],
)
def test_bad_data_arguments_give_a_clear_error(args, message, clip_dir, data_root, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [arg.format(missing=tmp_path / "nowhere", empty=tmp_path / "empty", data=data_root) for arg in args]
    code = None
    try:
        code = run_cli("train", "--method", "coop", *model_args(clip_dir), *args, "--output-dir", tmp_path / "o")
    except SystemExit as error:  # argparse-level errors exit with a message
        code = error.code
        assert message in str(error.code)
    else:
        assert message in capsys.readouterr().err
    assert code not in (0, None)


def test_push_uploads_a_saved_adapter_folder(hub, clip_dir, data_root, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    args = ["train", "--method", "coop", *model_args(clip_dir), "--data-root", data_root, "--dataset", "EuroSAT"]
    assert run_cli(*args, "--shots", "1", "--output-dir", out, *FAST, "--skip-eval") == 0
    (out / "adapter" / "notes.txt").write_text("not part of the adapter")
    assert run_cli("push", "--adapter", out / "adapter", "--repo-id", "me/cli-adapter", "--token", TOKEN) == 0
    downloaded = hf_hub_download("me/cli-adapter", WEIGHTS_NAME, token=TOKEN)
    assert Path(downloaded).read_bytes() == (out / "adapter" / WEIGHTS_NAME).read_bytes()
    repo = hub.repos["me/cli-adapter"]
    assert sorted(repo.commits[repo.branches["main"]].files) == sorted([CONFIG_NAME, WEIGHTS_NAME, "README.md"])


def test_push_refuses_a_folder_that_is_not_an_adapter(tmp_path, capsys):
    assert run_cli("push", "--adapter", tmp_path, "--repo-id", "me/x") == 2
    assert "adapter_config.json is missing" in capsys.readouterr().err


def test_two_cpu_processes_with_accelerate_launch(clip_dir, data_root, tmp_path, tokenizer):
    """DDP over two CPU processes (gloo): both processes see the same prompts, the main one saves the adapter."""
    out = tmp_path / "ddp"
    command = [
        # accelerate's torchrun-style multi-process launch is named --multi_gpu; `--device cpu` keeps it on the CPU
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "prompt_clip", "train", "--method", "coop", *model_args(clip_dir), "--data-root", str(data_root),
        "--dataset", "EuroSAT", "--shots", "2", "--output-dir", str(out), *FAST, "--batch-size", "2",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 100
    state = json.loads(next(out.glob("checkpoints/checkpoint-*/trainer_state.json")).read_text())
    # 20 images, batch 2 per process, 2 processes: 5 steps per epoch and process
    assert state["global_step"] == 10
    model = PromptModel.from_pretrained(make_tiny_clip(), out / "adapter", tokenizer=tokenizer)
    assert torch.isfinite(model.learner.ctx).all()
