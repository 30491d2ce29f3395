"""Training a `PromptModel`: the field's optimiser and schedule, mixed precision, accumulation and exact resume.

```python
from prompt_clip.training import PromptTrainer, TrainingConfig

trainer = PromptTrainer(model, train_dataset, TrainingConfig(lr=0.0035, epochs=5), output_dir="runs/maple")
trainer.train()                      # or trainer.train(resume_from_checkpoint=True) after an interruption
```

The loop runs on one device or, through `accelerate`, on several processes (`accelerate launch`), including CPU
processes. Randomness is a function of (seed, epoch, step): the data order and augmentations come from
`prompt_clip.data.EpochSampler`, and the global torch generator is re-seeded before every step (for methods that
sample, such as AMMPL's masks or Bloom's routing). A run resumed from any checkpoint therefore ends with exactly
the prompts of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import check_choice, check_float, check_int
from .objectives import CrossEntropyObjective, GaussianPromptAggregation, Objective, PromptSRCObjective

if TYPE_CHECKING:
    from .model import PromptModel

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
AGGREGATION_NAME = "aggregation.safetensors"
ADAPTER_FOLDER = "adapter"

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("cosine", "constant")
PRECISIONS = ("no", "bf16", "fp16")
OBJECTIVES = ("ce", "promptsrc")

#: Fields that may differ between a checkpoint and the run that resumes it (they do not change the result).
RESUME_FREE_FIELDS = ("progress", "num_workers", "checkpoint_every", "keep_checkpoints")


@dataclass
class TrainingConfig:
    """How to train: the field's defaults (SGD, momentum 0.9, weight decay 5e-4, cosine, one warm-up epoch).

    Args:
        epochs (`int`, defaults to 5): passes over the training set.
        batch_size (`int`, defaults to 4): images per step and process (before accumulation).
        lr (`float`, defaults to 0.0035): peak learning rate.
        optimizer (`str`, defaults to `"sgd"`): `"sgd"` (with `momentum`), `"adam"` or `"adamw"`.
        momentum (`float`, defaults to 0.9): SGD momentum.
        weight_decay (`float`, defaults to 5e-4): L2 penalty applied to every prompt parameter.
        scheduler (`str`, defaults to `"cosine"`): `"cosine"` over `epochs` or `"constant"`. Stepped per epoch.
        warmup_epochs (`int`, defaults to 1): epochs at the constant `warmup_lr` before the schedule starts, as
            in the reference code (Dassl's constant warm-up followed by cosine annealing with `T_max = epochs`).
        warmup_lr (`float`, defaults to 1e-5): learning rate of the warm-up epochs.
        mixed_precision (`str`, defaults to `"no"`): `"bf16"` or `"fp16"` runs the CLIP under autocast while
            the prompt parameters stay float32 (fp16 uses a gradient scaler and needs a GPU).
        gradient_accumulation_steps (`int`, defaults to 1): batches per optimiser step.
        max_grad_norm (`float`, *optional*): clip the gradient norm to this value.
        seed (`int`, defaults to 1): seeds the data order, the augmentations and the model's own sampling.
        objective (`str`, defaults to `"ce"`): `"ce"` (cross-entropy) or `"promptsrc"` (PromptSRC's
            self-regulating loss plus Gaussian prompt aggregation over the epochs).
        aggregation_mean (`float`, *optional*): the 1-based epoch at the peak of the Gaussian aggregation;
            defaults to `0.75 * epochs` (PromptSRC: 15 of 20).
        aggregation_std (`float`, defaults to 1.0): its standard deviation in epochs.
        num_workers (`int`, defaults to 0): data-loading worker processes.
        checkpoint_every (`int`, defaults to 0): also save a checkpoint every this many optimiser steps (always
            at the end of every epoch when there is an `output_dir`). Needs `output_dir`.
        keep_checkpoints (`int`, defaults to 1): how many recent checkpoints to keep.
        progress (`bool`, defaults to `True`): show a progress bar with the running loss and accuracy.
    """

    epochs: int = 5
    batch_size: int = 4
    lr: float = 0.0035
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    scheduler: str = "cosine"
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    mixed_precision: str = "no"
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = None
    seed: int = 1
    objective: str = "ce"
    aggregation_mean: float | None = None
    aggregation_std: float = 1.0
    num_workers: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks every field, naming the field, the value and what is allowed."""
        check_int(self, "epochs", low=1)
        check_int(self, "batch_size", low=1)
        check_float(self, "lr", low=0.0, low_inclusive=False)
        check_choice(self, "optimizer", OPTIMIZERS)
        check_float(self, "momentum", low=0.0, high=1.0, high_inclusive=False)
        check_float(self, "weight_decay", low=0.0)
        check_choice(self, "scheduler", SCHEDULERS)
        check_int(self, "warmup_epochs", low=0)
        check_float(self, "warmup_lr", low=0.0)
        check_choice(self, "mixed_precision", PRECISIONS)
        check_int(self, "gradient_accumulation_steps", low=1)
        if self.max_grad_norm is not None:
            check_float(self, "max_grad_norm", low=0.0, low_inclusive=False)
        check_int(self, "seed", low=0)
        check_choice(self, "objective", OBJECTIVES)
        if self.aggregation_mean is not None:
            check_float(self, "aggregation_mean")
        check_float(self, "aggregation_std", low=0.0, low_inclusive=False)
        check_int(self, "num_workers", low=0)
        check_int(self, "checkpoint_every", low=0)
        check_int(self, "keep_checkpoints", low=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        """Builds a config from `to_dict()` output, refusing unknown fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown TrainingConfig field(s) {unknown}; it accepts {sorted(known)}.")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def learning_rate(config: TrainingConfig, epoch: int) -> float:
    """The learning rate of a 0-based epoch: constant warm-up, then cosine annealing stepped once per epoch."""
    if epoch < config.warmup_epochs:
        return config.warmup_lr
    if config.scheduler == "constant":
        return config.lr
    progress = (epoch - config.warmup_epochs) / config.epochs
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * progress))


def step_seed(seed: int, global_step: int, process_index: int = 0) -> int:
    """The seed of the torch generator for one step (distinct per process, reproducible on resume)."""
    from .data import derive_seed

    return derive_seed(seed, global_step, process_index)


def seed_everything(seed: int) -> None:
    """Seeds the torch generators so that a method's prompts start from the same values on every run.

    Call it right before `get_prompt_model`: random prompt initialisation draws from the global generator.
    """
    from .data import derive_seed

    torch.manual_seed(derive_seed(seed, 0x5EED))


def build_optimizer(parameters: list[nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    """The optimiser named by `config.optimizer`, over the prompt parameters."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    optimizer_class = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(parameters, lr=config.lr, weight_decay=config.weight_decay)


def build_objective(config: TrainingConfig) -> Objective:
    """The objective named by `config.objective`."""
    return PromptSRCObjective() if config.objective == "promptsrc" else CrossEntropyObjective()


@dataclass
class TrainOutput:
    """Summary of a finished `PromptTrainer.train()` call.

    Args:
        global_step (`int`): batches processed in total (including those before a resume).
        epochs (`int`): epochs completed.
        loss (`float`, *optional*): mean training loss of the last epoch (None when this call trained no batch,
            e.g. resuming a finished run).
        accuracy (`float`, *optional*): training accuracy (%) of the last epoch (None likewise).
        train_time_s (`float`): wall-clock seconds of this call.
        images_per_second (`float`): training throughput of this call, all processes together.
    """

    global_step: int
    epochs: int
    loss: float | None
    accuracy: float | None
    train_time_s: float
    images_per_second: float


# -- checkpoint files -------------------------------------------------------------------------------------------


def _flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Splits an optimiser state_dict into tensors (for safetensors) and JSON values; no pickle involved."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _checkpoint_step(path: Path) -> int:
    """The global step in a checkpoint folder's name (`checkpoint-<step>`)."""
    return int(path.name[len(CHECKPOINT_PREFIX) :])


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first (a checkpoint is complete once its folder is renamed)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [
        path
        for path in folder.iterdir()
        if path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and (path / TRAINER_STATE_NAME).is_file()
    ]
    return sorted(found, key=_checkpoint_step)


class PromptTrainer:
    """Trains a `PromptModel` on a dataset with one of the field's recipes.

    Args:
        model (`PromptModel`): the prompted CLIP, with its training classes set (`model.set_classnames`).
        train_dataset (`prompt_clip.data.PromptDataset`): training images; indexed with `(index, aug_seed)`.
        config (`TrainingConfig`): the recipe.
        output_dir (`str` or `os.PathLike`, *optional*): where checkpoints go (`checkpoint-<step>/`).
        objective (`Objective`, *optional*): overrides `config.objective`.
        accelerator (`accelerate.Accelerator`, *optional*): built from the environment when omitted (one process,
            or the processes started by `accelerate launch`).
    """

    def __init__(
        self,
        model: PromptModel,
        train_dataset: torch.utils.data.Dataset,
        config: TrainingConfig | None = None,
        output_dir: str | os.PathLike | None = None,
        objective: Objective | None = None,
        accelerator: Any = None,
    ) -> None:
        from accelerate import Accelerator

        self.config = config if config is not None else TrainingConfig()
        if model.classnames is None:
            raise ValueError("The model has no classes: call model.set_classnames(train_classnames) first.")
        if len(train_dataset) == 0:
            raise ValueError("The training dataset is empty; check the split and the few-shot sampling.")
        if self.config.checkpoint_every and output_dir is None:
            raise ValueError("TrainingConfig.checkpoint_every needs an output_dir to write checkpoints to.")
        if self.config.mixed_precision == "fp16" and not torch.cuda.is_available():
            raise ValueError("mixed_precision='fp16' needs a CUDA GPU; use 'bf16' on the CPU.")
        self.model = model
        self.train_dataset = train_dataset
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.objective = objective if objective is not None else build_objective(self.config)
        # accelerate only places the model, shards the batches and wraps DDP. Autocast (accelerate's would patch
        # the model's forward in place) and accumulation (grouped per epoch, so that a resumed run groups batches
        # identically) are done here; precision is fixed to "no" and backward called directly, so that ACCELERATE_*
        # variables exported by `accelerate launch` cannot add a second autocast, scaling or loss division. A model
        # on the CPU stays there: several launched processes then form a gloo group.
        self.accelerator = accelerator or Accelerator(
            mixed_precision="no", rng_types=[], cpu=model.device.type == "cpu"
        )
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError("The model has no trainable parameter; was the adapter disabled or unloaded?")
        self.optimizer = build_optimizer(self.parameters, self.config)
        self.scaler = torch.amp.GradScaler("cuda") if self.config.mixed_precision == "fp16" else None
        self.aggregation = None
        if self.config.objective == "promptsrc" or isinstance(self.objective, PromptSRCObjective):
            mean = self.config.aggregation_mean
            mean = 0.75 * self.config.epochs if mean is None else mean
            self.aggregation = GaussianPromptAggregation(self.config.epochs, mean, self.config.aggregation_std)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.optimizer_steps = 0

    # -- data ----------------------------------------------------------------------------------------------------

    def _loader(self) -> tuple[Any, Any]:
        from .data import EpochSampler

        sampler = EpochSampler(len(self.train_dataset), seed=self.config.seed)
        batches = torch.utils.data.BatchSampler(sampler, self.config.batch_size, drop_last=False)
        loader = torch.utils.data.DataLoader(
            self.train_dataset, batch_sampler=batches, num_workers=self.config.num_workers
        )
        return self.accelerator.prepare_data_loader(loader), sampler

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.mixed_precision)
        return torch.autocast(self.accelerator.device.type, dtype=dtype, enabled=dtype is not None)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Writes `checkpoint-<global_step>/` atomically (a temporary folder renamed when complete)."""
        if self.output_dir is None:
            raise ValueError("PromptTrainer has no output_dir to save checkpoints to.")
        model = self.accelerator.unwrap_model(self.model)
        final = self.output_dir / f"{CHECKPOINT_PREFIX}{self.global_step}"
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            temporary = self.output_dir / f".{final.name}.tmp"
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir()
            model.save_pretrained(temporary / ADAPTER_FOLDER)
            tensors, optimizer_meta = _flatten_optimizer_state(self.optimizer.state_dict())
            save_file(tensors, str(temporary / OPTIMIZER_NAME), metadata={"format": "pt"})
            state = {
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step,
                "optimizer_steps": self.optimizer_steps,
                "num_processes": self.accelerator.num_processes,
                "training_config": self.config.to_dict(),
                "optimizer": optimizer_meta,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "classnames": list(model.classnames),
            }
            if self.aggregation is not None:
                aggregation = self.aggregation.state_dict()
                sums = {name: tensor.contiguous() for name, tensor in aggregation.pop("sums").items()}
                save_file(sums, str(temporary / AGGREGATION_NAME), metadata={"format": "pt"})
                state["aggregation"] = aggregation
            (temporary / TRAINER_STATE_NAME).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
            previous = None
            if final.exists():  # the same step saved twice (end of epoch right after a periodic save)
                previous = final.with_name(f".{final.name}.old")
                shutil.rmtree(previous, ignore_errors=True)
                os.replace(final, previous)
            os.replace(temporary, final)
            if previous is not None:
                shutil.rmtree(previous, ignore_errors=True)
            self._prune_checkpoints()
        self.accelerator.wait_for_everyone()
        return final

    def _prune_checkpoints(self) -> None:
        """Keeps the newest `keep_checkpoints` of this run; drops later-numbered ones of an abandoned timeline
        (left behind when the run resumed from an older checkpoint)."""
        found = list_checkpoints(self.output_dir)
        stale = [path for path in found if _checkpoint_step(path) > self.global_step]
        current = [path for path in found if _checkpoint_step(path) <= self.global_step]
        for path in stale + current[: -self.config.keep_checkpoints]:
            shutil.rmtree(path, ignore_errors=True)

    def load_checkpoint(self, checkpoint: str | os.PathLike) -> None:
        """Restores prompts, optimiser, scaler, aggregation and position from a checkpoint folder."""
        folder = Path(checkpoint)
        state_path = folder / TRAINER_STATE_NAME
        if not state_path.is_file():
            raise FileNotFoundError(f"{folder} is not a checkpoint: {TRAINER_STATE_NAME} is missing.")
        state = json.loads(state_path.read_text(encoding="utf-8"))
        model = self.accelerator.unwrap_model(self.model)
        if list(state["classnames"]) != list(model.classnames):
            raise ValueError(
                f"The checkpoint {folder} was trained on other classes ({len(state['classnames'])} classes, first "
                f"{state['classnames'][:3]}); set the same classes before resuming."
            )
        saved_config = TrainingConfig.from_dict(state["training_config"]).to_dict()
        changed = {
            name: (saved_config[name], value)
            for name, value in self.config.to_dict().items()
            if name not in RESUME_FREE_FIELDS and saved_config[name] != value
        }
        if changed:
            raise ValueError(
                f"The checkpoint {folder} was written with another recipe ({changed}, as (saved, now)); resume with "
                "the same TrainingConfig or start a new run in another output_dir."
            )
        from .hub import WEIGHTS_NAME, check_state_dict, read_adapter_weights

        weights_path = str(folder / ADAPTER_FOLDER / WEIGHTS_NAME)
        weights = read_adapter_weights(weights_path)
        check_state_dict(model.learner.state_dict(), weights, weights_path)
        model.learner.load_state_dict(weights)
        optimizer_state = _unflatten_optimizer_state(load_file(str(folder / OPTIMIZER_NAME)), state["optimizer"])
        self.optimizer.load_state_dict(optimizer_state)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.aggregation is not None and "aggregation" in state:
            aggregation = dict(state["aggregation"], sums=load_file(str(folder / AGGREGATION_NAME)))
            self.aggregation.load_state_dict(aggregation)
        processes = int(state.get("num_processes", 1))
        if processes != self.accelerator.num_processes:
            raise ValueError(
                f"The checkpoint {folder} was written by {processes} process(es) but this run has "
                f"{self.accelerator.num_processes}: the batches would not line up. Resume with {processes}."
            )
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.optimizer_steps = int(state["optimizer_steps"])

    def _resolve_resume(self, resume_from_checkpoint: bool | str | os.PathLike | None) -> Path | None:
        if resume_from_checkpoint is None or resume_from_checkpoint is False:
            if self.output_dir is not None and list_checkpoints(self.output_dir):
                raise ValueError(
                    f"{self.output_dir} already holds checkpoints of an earlier run. Pass "
                    "resume_from_checkpoint=True (--resume) to continue it, or use another output_dir (or delete "
                    "them) to start afresh; starting over them would mix two runs."
                )
            return None
        if resume_from_checkpoint is True:
            if self.output_dir is None:
                raise ValueError("resume_from_checkpoint=True needs an output_dir to look for checkpoints in.")
            found = list_checkpoints(self.output_dir)
            return found[-1] if found else None  # nothing saved yet: start from scratch
        return Path(resume_from_checkpoint)

    # -- the loop ------------------------------------------------------------------------------------------------

    def _batches(self, loader: Any, sampler: Any, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        sampler.set_epoch(epoch)
        if self.step_in_epoch:
            loader = self.accelerator.skip_first_batches(loader, self.step_in_epoch)
        # accelerate's loaders re-seed their sampler with their own iteration counter: give them the epoch.
        loader.set_epoch(epoch)
        yield from loader

    def train(self, resume_from_checkpoint: bool | str | os.PathLike | None = None) -> TrainOutput:
        """Runs the training loop.

        Args:
            resume_from_checkpoint (`bool`, `str` or `os.PathLike`, *optional*): `True` resumes from the newest
                checkpoint in `output_dir` (or starts afresh when there is none); a path resumes from that
                checkpoint.

        Returns:
            `TrainOutput`.
        """
        from tqdm.auto import tqdm

        checkpoint = self._resolve_resume(resume_from_checkpoint)
        config = self.config
        loader, sampler = self._loader()
        # Placed first, so that the optimiser state loaded next lands on this process's device.
        model = self.accelerator.prepare_model(self.model, device_placement=True)
        self.model = model
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        steps_per_epoch = len(loader)
        start_time, images_seen = time.perf_counter(), 0
        loss_sum = correct = seen = 0.0
        bar = tqdm(
            total=config.epochs * steps_per_epoch,
            initial=self.epoch * steps_per_epoch + self.step_in_epoch,
            disable=not (config.progress and self.accelerator.is_local_main_process),
            desc="train",
            dynamic_ncols=True,
        )
        model.train()
        accumulation = config.gradient_accumulation_steps
        while self.epoch < config.epochs:
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(config, self.epoch)
            loss_sum = correct = seen = 0.0
            for batch in self._batches(loader, sampler, self.epoch):
                torch.manual_seed(step_seed(config.seed, self.global_step, self.accelerator.process_index))
                pixel_values, labels = batch["pixel_values"], batch["labels"]
                # Accumulation groups restart every epoch, so a checkpoint taken after an optimiser step holds no
                # pending gradient and the resumed run groups batches exactly as the uninterrupted one.
                group_start = self.step_in_epoch - self.step_in_epoch % accumulation
                group_size = min(accumulation, steps_per_epoch - group_start)  # the epoch's last group may be short
                self.step_in_epoch += 1
                sync = self.step_in_epoch % accumulation == 0 or self.step_in_epoch == steps_per_epoch
                with contextlib.nullcontext() if sync else self.accelerator.no_sync(model):
                    with self._autocast():
                        output = self.objective(model, pixel_values, labels)
                    loss = output.loss / group_size
                    # Plain backward: accelerate's would divide again by ACCELERATE_GRADIENT_ACCUMULATION_STEPS.
                    (loss if self.scaler is None else self.scaler.scale(loss)).backward()
                if sync:
                    self._optimizer_step()
                    self.optimizer_steps += 1
                self.global_step += 1
                images_seen += len(labels) * self.accelerator.num_processes
                loss_sum += float(output.loss.detach()) * len(labels)
                correct += float((output.logits.detach().argmax(-1) == labels.to(output.logits.device)).sum())
                seen += len(labels)
                bar.update(1)
                bar.set_postfix(
                    epoch=self.epoch + 1,
                    loss=f"{loss_sum / seen:.4f}",
                    acc=f"{100 * correct / seen:.1f}",
                    refresh=False,
                )
                if sync and config.checkpoint_every and self.optimizer_steps % config.checkpoint_every == 0:
                    self.save_checkpoint()
            if self.aggregation is not None:
                self.aggregation.update(self.accelerator.unwrap_model(model), self.epoch)
            self.epoch += 1
            self.step_in_epoch = 0
            if self.output_dir is not None:
                self.save_checkpoint()
        bar.close()
        unwrapped = self.accelerator.unwrap_model(model)
        if self.aggregation is not None:
            self.aggregation.apply(unwrapped)
        unwrapped.eval()
        self.model = unwrapped
        elapsed = time.perf_counter() - start_time
        return TrainOutput(
            global_step=self.global_step,
            epochs=self.epoch,
            loss=loss_sum / seen if seen else None,
            accuracy=100.0 * correct / seen if seen else None,
            train_time_s=elapsed,
            images_per_second=images_seen / elapsed if elapsed > 0 else float("nan"),
        )

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


__all__ = [
    "TrainingConfig",
    "TrainOutput",
    "PromptTrainer",
    "learning_rate",
    "seed_everything",
    "build_optimizer",
    "build_objective",
    "list_checkpoints",
]
