"""The field's evaluation protocols: few-shot, base-to-novel (with HM), open-world, cross-dataset and domain
generalisation, over methods, datasets and seeds.

```python
runner = ProtocolRunner(clip, tokenizer, data_root="DATA", output_dir="results", seeds=(1, 2, 3))
for method in ("zeroshot", "coop", "maple"):
    runner.base_to_novel(method, "EuroSAT")  # with the open-world numbers
print(render_tables(runner.records))
```

Every run writes its raw record (and its adapter) under `output_dir/runs/...`; a later call with the same recipe,
data and CLIP reuses the record instead of training again, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .data import (
    DatasetSplits,
    ImageTransform,
    PromptDataset,
    few_shot_splits,
    load_dataset,
    sample_key,
    select_classes,
)
from .evaluation import Predictions, harmonic_mean, open_world_metrics, predict
from .learner import ClipShape
from .methods import CoOpConfig
from .model import PromptModel, get_prompt_model
from .recipes import Recipe, get_recipe, scale_to_clip
from .reporting import save_results
from .training import RESUME_FREE_FIELDS, PromptTrainer, seed_everything

#: The method name of the zero-shot CLIP baseline (no training; the dataset's hand-written template).
ZERO_SHOT = "zeroshot"

#: Targets of the cross-dataset protocol (the source, ImageNet by default, is left out when it is listed here).
CROSS_DATASET_TARGETS = (
    "Caltech101",
    "OxfordPets",
    "StanfordCars",
    "Flowers102",
    "Food101",
    "FGVCAircraft",
    "SUN397",
    "DTD",
    "EuroSAT",
    "UCF101",
)

#: Targets of the domain-generalisation protocol.
DOMAIN_GENERALISATION_TARGETS = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")

#: Shots of the few-shot protocol.
FEW_SHOT_SHOTS = (1, 2, 4, 8, 16)


def _fingerprint(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ProtocolRunner:
    """Runs the field's protocols for any method on any dataset, one CLIP loaded once.

    Args:
        clip (`transformers.CLIPModel`): the frozen base model (moved to the device you want to train on). Each run
            injects its method and unloads it afterwards, so the CLIP is shared by all runs.
        tokenizer: the CLIP's tokenizer.
        data_root (`str` or `os.PathLike`, *optional*): the folder holding the datasets in the CoOp layout; needed
            when datasets are given by name.
        output_dir (`str` or `os.PathLike`, *optional*): where raw records, adapters, `results.json/csv` and the
            few-shot draws go. Without it nothing is written and nothing is reused.
        seeds (`Sequence[int]`, defaults to `(1, 2, 3)`): the field's three seeds.
        shots (`int`, defaults to 16): training images per class (base-to-novel, cross-dataset).
        image_processor (`transformers.CLIPImageProcessor`, *optional*): gives the image size and statistics;
            read from the CLIP's config (OpenAI statistics) when omitted.
        training_overrides (`dict`, *optional*): `TrainingConfig` fields forced on every recipe (e.g.
            `{"mixed_precision": "bf16"}` or a short `epochs` for a smoke test).
        config_overrides (`dict[str, dict]`, *optional*): per-method `PromptConfig` fields, e.g.
            `{"maple": {"depth": 3}}`.
        eval_batch_size (`int`, defaults to 100): the field's test batch.
        reuse_results (`bool`, defaults to `True`): reuse a finished run's record when its fingerprint matches.
        save_adapters (`bool`, defaults to `True`): save each trained adapter beside its record.
        scale_depth (`bool`, defaults to `True`): rescale the recipes' layer counts and VP's frame (written for
            ViT-B/16) to the CLIP's shape with `prompt_clip.recipes.scale_to_clip`; no change for ViT-B/16 shapes.
        progress (`bool`, defaults to `True`): show progress bars.
        **train_transform_kwargs: passed to the training `ImageTransform` (e.g. `scale=(0.5, 1.0)` instead of the
            field's random-resized-crop scale (0.08, 1)).
    """

    def __init__(
        self,
        clip: torch.nn.Module,
        tokenizer: Any,
        data_root: str | os.PathLike | None = None,
        output_dir: str | os.PathLike | None = None,
        seeds: Sequence[int] = (1, 2, 3),
        shots: int = 16,
        image_processor: Any = None,
        training_overrides: dict[str, Any] | None = None,
        config_overrides: dict[str, dict[str, Any]] | None = None,
        eval_batch_size: int = 100,
        reuse_results: bool = True,
        save_adapters: bool = True,
        scale_depth: bool = True,
        progress: bool = True,
        **train_transform_kwargs: Any,
    ) -> None:
        if not seeds:
            raise ValueError("ProtocolRunner needs at least one seed, e.g. seeds=(1, 2, 3).")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Every process would evaluate everything and write the same run files: refuse rather than race.
            raise ValueError(
                "ProtocolRunner runs in one process, but this one was started with WORLD_SIZE="
                f"{os.environ['WORLD_SIZE']} (accelerate launch / torchrun). Run it with plain `python` (one GPU), "
                "or split a sweep across GPUs by starting one process per GPU with other methods or datasets."
            )
        self.clip = clip
        self.tokenizer = tokenizer
        self.data_root = Path(data_root) if data_root is not None else None
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.seeds = tuple(seeds)
        self.shots = shots
        self.training_overrides = dict(training_overrides or {})
        self.config_overrides = {key.lower(): dict(value) for key, value in (config_overrides or {}).items()}
        self.eval_batch_size = eval_batch_size
        self.reuse_results = reuse_results
        self.save_adapters = save_adapters
        self.scale_depth = scale_depth
        self.progress = progress
        self.train_transform = ImageTransform.for_model(
            clip.config, image_processor, train=True, **train_transform_kwargs
        )
        self.test_transform = ImageTransform.for_model(clip.config, image_processor, train=False)
        self.records: list[dict[str, Any]] = []
        self._datasets: dict[str, DatasetSplits] = {}
        self._clip_digest_value: str | None = None

    # -- inputs --------------------------------------------------------------------------------------------------

    def dataset(self, dataset: str | DatasetSplits) -> DatasetSplits:
        """A dataset by catalog name (read once from `data_root`, validated before any training) or as given."""
        if isinstance(dataset, DatasetSplits):
            return dataset
        if dataset not in self._datasets:
            if self.data_root is None:
                raise ValueError(f"Dataset {dataset!r} given by name but the ProtocolRunner has no data_root.")
            self._datasets[dataset] = load_dataset(dataset, self.data_root)
        return self._datasets[dataset]

    def recipe(self, method: str | Recipe, protocol: str, dataset: str | None = None) -> Recipe:
        """The recipe of `method` for `protocol`, with this runner's overrides applied."""
        recipe = method if isinstance(method, Recipe) else get_recipe(method, protocol, dataset)
        config = recipe.config
        if self.scale_depth and not isinstance(method, Recipe):
            config = scale_to_clip(config, ClipShape.from_clip_config(self.clip.config))
        config = config.replace(**self.config_overrides.get(recipe.name, {}))
        training = recipe.training.replace(**self.training_overrides)
        return Recipe(recipe.name, config, training, recipe.source)

    def _few_shot(self, splits: DatasetSplits, shots: int, seed: int) -> DatasetSplits:
        cache = self.output_dir / "few_shot" if self.output_dir is not None else None
        return few_shot_splits(splits, shots, seed, cache_dir=cache)

    def _test_set(self, splits: DatasetSplits) -> PromptDataset:
        return PromptDataset(splits.test, self.test_transform, image_loader=splits.image_loader)

    # -- fingerprints: what a finished run's files may be reused for ---------------------------------------------

    def _clip_digest(self) -> str:
        """A digest of the CLIP's weights (computed once): a record is never reused for another CLIP."""
        if self._clip_digest_value is None:
            digest = hashlib.sha256()
            for name, tensor in self.clip.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
            self._clip_digest_value = digest.hexdigest()[:16]
        return self._clip_digest_value

    @staticmethod
    def _data_digest(splits: DatasetSplits, *names: str) -> str:
        """Classes, template and the samples of the named splits (paths taken relative, as the few-shot draw does,
        so that moving the data root keeps the digest)."""
        content = {
            "classnames": list(splits.classnames),
            "template": splits.template,
            **{name: [(sample_key(s), s.label) for s in getattr(splits, name)] for name in names},
        }
        return _fingerprint(content)

    def _train_fingerprint(self, recipe: Recipe | None, train: DatasetSplits, seed: int) -> str:
        """Everything a trained adapter depends on: CLIP weights, recipe, training images, seed, pre-processing."""
        values: dict[str, Any] = {
            "version": __version__,
            "clip": self._clip_digest(),
            "data": self._data_digest(train, "train", "val"),
            "seed": seed,
            "transform": [
                {key: value for key, value in vars(t).items() if not key.startswith("_")}
                for t in (self.train_transform, self.test_transform)
            ],
        }
        if recipe is not None:
            training = {k: v for k, v in recipe.training.to_dict().items() if k not in RESUME_FREE_FIELDS}
            values.update(config=recipe.config.to_dict(), training=training)
        return _fingerprint(values)

    def _eval_fingerprint(self, *splits: DatasetSplits) -> str:
        return _fingerprint([self._data_digest(item, "test") for item in splits] + [self.eval_batch_size])

    # -- one run -------------------------------------------------------------------------------------------------

    def _run_dir(self, *parts: Any) -> Path | None:
        if self.output_dir is None:
            return None
        return self.output_dir.joinpath("runs", *(str(part) for part in parts))

    def _saved_records(
        self, run_dir: Path | None, fingerprint: str, eval_fingerprint: str | None = None
    ) -> list[dict[str, Any]]:
        """The records a finished run wrote with this training fingerprint (and evaluation fingerprint, when
        given); empty when there are none or results are not reused."""
        if run_dir is None or not self.reuse_results or not (run_dir / "result.json").is_file():
            return []
        records = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
        return [
            record
            for record in records
            if record.get("fingerprint") == fingerprint and eval_fingerprint in (None, record.get("eval_fingerprint"))
        ]

    def _store(
        self, run_dir: Path | None, records: list[dict[str, Any]], also_in_file: Sequence[dict[str, Any]] = ()
    ) -> list[dict[str, Any]]:
        """Adds `records` to this runner's results and writes them (with `also_in_file`) to the run's file."""
        self.records.extend(records)
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            temporary = run_dir / ".result.json.tmp"
            temporary.write_text(json.dumps([*records, *also_in_file], indent=2) + "\n", encoding="utf-8")
            os.replace(temporary, run_dir / "result.json")
        if self.output_dir is not None:
            save_results(self.records, self.output_dir)
        return records

    @staticmethod
    def _checkpoint_dir(run_dir: Path | None, fingerprint: str) -> Path | None:
        """The run's checkpoint folder, emptied when it holds checkpoints of another recipe, data or CLIP."""
        if run_dir is None:
            return None
        checkpoints = run_dir / "checkpoints"
        marker = checkpoints / "fingerprint.txt"
        if checkpoints.exists() and (not marker.is_file() or marker.read_text().strip() != fingerprint):
            shutil.rmtree(checkpoints)
        checkpoints.mkdir(parents=True, exist_ok=True)
        marker.write_text(fingerprint + "\n")
        return checkpoints

    def _trained_model(
        self, recipe: Recipe | None, train: DatasetSplits, seed: int, run_dir: Path | None, fingerprint: str
    ) -> tuple[PromptModel, dict[str, Any]]:
        """The model of one run: zero-shot CLIP, the adapter a finished run saved, or a newly trained one.

        The caller must `unload()` it. A run's adapter and `train.json` are written as soon as training ends, so
        a crash during evaluation (or a later request for more evaluations) never trains again.
        """
        if recipe is None:
            config = CoOpConfig(n_ctx=1, template=train.template)  # any method: its adapter is disabled
            model = get_prompt_model(self.clip, config, tokenizer=self.tokenizer, classnames=train.classnames)
            return model, {"trainable_params": 0, "train_time_s": 0.0}
        saved = run_dir / "train.json" if run_dir is not None else None
        if saved is not None and self.reuse_results and saved.is_file():
            state = json.loads(saved.read_text(encoding="utf-8"))
            if state.get("fingerprint") == fingerprint and (run_dir / "adapter").is_dir():
                model = PromptModel.from_pretrained(self.clip, run_dir / "adapter", tokenizer=self.tokenizer)
                return model, state["info"]
        return self._train(recipe, train, seed, run_dir, fingerprint)

    def _train(
        self, recipe: Recipe, train: DatasetSplits, seed: int, run_dir: Path | None, fingerprint: str
    ) -> tuple[PromptModel, dict[str, Any]]:
        config = recipe.config.replace(template=train.template)
        training = recipe.training.replace(seed=seed, progress=self.progress and recipe.training.progress)
        checkpoints = self._checkpoint_dir(run_dir, fingerprint)
        seed_everything(seed)  # the prompts' random initialisation is part of the seeded run
        model = get_prompt_model(self.clip, config, tokenizer=self.tokenizer, classnames=train.classnames)
        try:
            dataset = PromptDataset(train.train, self.train_transform, image_loader=train.image_loader)
            trainer = PromptTrainer(model, dataset, training, output_dir=checkpoints)
            # Checkpoints exist so that an interrupted run resumes exactly; a finished run keeps only its adapter.
            output = trainer.train(resume_from_checkpoint=checkpoints is not None)
            model = trainer.model
            info = {
                "trainable_params": model.get_nb_trainable_parameters()[0],
                "train_time_s": round(output.train_time_s, 3),
                "train_images_per_s": round(output.images_per_second, 2),
                "train_loss": output.loss,
                "train_accuracy": output.accuracy,
            }
            if run_dir is not None and self.save_adapters:
                model.save_pretrained(run_dir / "adapter")
                temporary = run_dir / ".train.json.tmp"
                temporary.write_text(json.dumps({"fingerprint": fingerprint, "info": info}, indent=2) + "\n")
                os.replace(temporary, run_dir / "train.json")
            if checkpoints is not None:
                shutil.rmtree(checkpoints, ignore_errors=True)
        except BaseException:
            model.unload()
            raise
        return model, info

    def _predictions(self, model: PromptModel, splits: DatasetSplits, zero_shot: bool) -> Predictions:
        # The dataset's own template: the text of zero-shot CLIP and of methods without text prompts (VPT, VP).
        model.set_classnames(splits.classnames, template=splits.template)
        return predict(
            model,
            self._test_set(splits),
            batch_size=self.eval_batch_size,
            mixed_precision=self.training_overrides.get("mixed_precision", "no"),
            zero_shot=zero_shot,
        )

    def _method_name(self, method: str | Recipe) -> str:
        return method.name if isinstance(method, Recipe) else method.lower()

    # -- protocols -----------------------------------------------------------------------------------------------

    def base_to_novel(self, method: str | Recipe, dataset: str | DatasetSplits) -> list[dict[str, Any]]:
        """Trains on the base half of the classes (`shots` per class), tests base and novel apart (with HM), and
        also tests every image among all classes (BMIP's open-world protocol) with the same prompts.

        Returns:
            `list[dict]`: one record per seed with `base`, `novel`, `hm` and `open_world_all`,
            `open_world_base`, `open_world_novel`, `open_world_hm`.
        """
        full = self.dataset(dataset)
        base, novel = select_classes(full, "base"), select_classes(full, "novel")
        name = self._method_name(method)
        zero_shot = name == ZERO_SHOT
        recipe = None if zero_shot else self.recipe(method, "base_to_novel", full.name)
        eval_fingerprint = self._eval_fingerprint(base, novel, full)
        records = []
        for seed in self.seeds:
            run_dir = self._run_dir("base_to_novel", full.name, name, f"shots{self.shots}-seed{seed}")
            train = self._few_shot(base, self.shots, seed)
            fingerprint = self._train_fingerprint(recipe, train, seed)
            saved = self._saved_records(run_dir, fingerprint, eval_fingerprint)
            if saved:
                records += self._store(None, saved)
                continue
            model, info = self._trained_model(recipe, train, seed, run_dir, fingerprint)
            try:
                base_accuracy = self._predictions(model, base, zero_shot).accuracy()
                novel_accuracy = self._predictions(model, novel, zero_shot).accuracy()
                base_labels = range(base.num_classes)  # select_classes keeps label order: base ids come first
                open_world = open_world_metrics(self._predictions(model, full, zero_shot), base_labels)
            finally:
                model.unload()
            record = {
                "protocol": "base_to_novel",
                "method": name,
                "dataset": full.name,
                "seed": seed,
                "shots": self.shots,
                "base": base_accuracy,
                "novel": novel_accuracy,
                "hm": harmonic_mean(base_accuracy, novel_accuracy),
                **{f"open_world_{key}": value for key, value in open_world.items()},
                **info,
                "fingerprint": fingerprint,
                "eval_fingerprint": eval_fingerprint,
            }
            records += self._store(run_dir, [record])
        return records

    def few_shot(
        self, method: str | Recipe, dataset: str | DatasetSplits, shots: Iterable[int] = FEW_SHOT_SHOTS
    ) -> list[dict[str, Any]]:
        """Trains and tests on all classes at each number of shots.

        Returns:
            `list[dict]`: one record per (shots, seed) with `accuracy`.
        """
        full = self.dataset(dataset)
        name = self._method_name(method)
        zero_shot = name == ZERO_SHOT
        recipe = None if zero_shot else self.recipe(method, "few_shot", full.name)
        eval_fingerprint = self._eval_fingerprint(full)
        records = []
        for k in shots:
            for seed in self.seeds:
                run_dir = self._run_dir("few_shot", full.name, name, f"shots{k}-seed{seed}")
                train = self._few_shot(full, k, seed)
                fingerprint = self._train_fingerprint(recipe, train, seed)
                saved = self._saved_records(run_dir, fingerprint, eval_fingerprint)
                if saved:
                    records += self._store(None, saved)
                    continue
                model, info = self._trained_model(recipe, train, seed, run_dir, fingerprint)
                try:
                    accuracy = self._predictions(model, full, zero_shot).accuracy()
                finally:
                    model.unload()
                record = {
                    "protocol": "few_shot",
                    "method": name,
                    "dataset": full.name,
                    "seed": seed,
                    "shots": k,
                    "accuracy": accuracy,
                    **info,
                    "fingerprint": fingerprint,
                    "eval_fingerprint": eval_fingerprint,
                }
                records += self._store(run_dir, [record])
        return records

    def transfer(
        self,
        method: str | Recipe,
        source: str | DatasetSplits,
        targets: Iterable[str | DatasetSplits],
        protocol: str = "cross_dataset",
    ) -> list[dict[str, Any]]:
        """Trains on all classes of `source` (`shots` per class) and evaluates on the source and, without further
        training, on each target with the target's class names and template.

        Args:
            method: a recipe name, `"zeroshot"` or a `Recipe`.
            source: the training dataset (ImageNet in the field; AMMPL also uses Food101).
            targets: the datasets to evaluate on. Adding a target later evaluates the saved adapter on it only.
            protocol (`str`, defaults to `"cross_dataset"`): the record's protocol name
                (`"domain_generalisation"` for ImageNet's variants).

        Returns:
            `list[dict]`: per seed, one record for the source and one per target, each with `accuracy`.
        """
        source_splits = self.dataset(source)
        evaluated = [source_splits, *(self.dataset(target) for target in targets)]
        name = self._method_name(method)
        zero_shot = name == ZERO_SHOT
        recipe = None if zero_shot else self.recipe(method, protocol, source_splits.name)
        # One digest per target (it hashes the whole test split), shared by every seed.
        eval_fingerprints = {target.name: self._eval_fingerprint(target) for target in evaluated}
        records = []
        for seed in self.seeds:
            run_dir = self._run_dir(protocol, source_splits.name, name, f"shots{self.shots}-seed{seed}")
            train = self._few_shot(source_splits, self.shots, seed)
            fingerprint = self._train_fingerprint(recipe, train, seed)
            saved = {
                (r["dataset"], r["eval_fingerprint"]): r
                for r in self._saved_records(run_dir, fingerprint)
                if r.get("protocol") == protocol
            }
            missing = [t for t in evaluated if (t.name, eval_fingerprints[t.name]) not in saved]
            new = {}
            if missing:
                model, info = self._trained_model(recipe, train, seed, run_dir, fingerprint)
                try:
                    for target in missing:
                        start = time.perf_counter()
                        accuracy = self._predictions(model, target, zero_shot).accuracy()
                        new[target.name] = {
                            "protocol": protocol,
                            "method": name,
                            "source": source_splits.name,
                            "dataset": target.name,
                            "seed": seed,
                            "shots": self.shots,
                            "accuracy": accuracy,
                            "eval_time_s": round(time.perf_counter() - start, 3),
                            **info,
                            "fingerprint": fingerprint,
                            "eval_fingerprint": eval_fingerprints[target.name],
                        }
                finally:
                    model.unload()
            run_records = [new.get(t.name) or saved[(t.name, eval_fingerprints[t.name])] for t in evaluated]
            # Records of targets not asked for this time stay in the run's file.
            kept = [r for key, r in saved.items() if key[0] not in {t.name for t in evaluated}]
            records += self._store(run_dir, run_records, also_in_file=kept)
        return records

    def cross_dataset(
        self,
        method: str | Recipe,
        source: str | DatasetSplits = "ImageNet",
        targets: Iterable[str | DatasetSplits] | None = None,
    ) -> list[dict[str, Any]]:
        """Cross-dataset transfer: train on `source` (ImageNet by default), test on the other datasets."""
        if targets is None:
            source_name = source if isinstance(source, str) else source.name
            targets = [name for name in CROSS_DATASET_TARGETS if name.lower() != source_name.lower()]
        return self.transfer(method, source, targets, protocol="cross_dataset")

    def domain_generalisation(
        self,
        method: str | Recipe,
        source: str | DatasetSplits = "ImageNet",
        targets: Iterable[str | DatasetSplits] = DOMAIN_GENERALISATION_TARGETS,
    ) -> list[dict[str, Any]]:
        """Domain generalisation: the ImageNet-trained model on ImageNetV2, -Sketch, -A and -R."""
        return self.transfer(method, source, targets, protocol="domain_generalisation")


__all__ = [
    "ProtocolRunner",
    "ZERO_SHOT",
    "CROSS_DATASET_TARGETS",
    "DOMAIN_GENERALISATION_TARGETS",
    "FEW_SHOT_SHOTS",
]
