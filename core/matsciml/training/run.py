"""Build a run from its configuration, train it, evaluate it, reload it.

Everything is found through the registry: the model by name, the
representation the model declares it needs, the task by name, the dataset
by name or path. Nothing here knows any particular model.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matsciml import __version__
from matsciml.data.schema import STRUCTURE_KEYS as _STRUCTURE_KEYS
from matsciml.data.splits import Split
from matsciml.data.storage import keys_in_every_sample
from matsciml.errors import ComponentNotFoundError, IncompatibleComponentsError, MatscimlError
from matsciml.registry import Registry, get_registry
from matsciml.specs import ComponentSpec, ModelSpec
from matsciml.training.config import DEFAULT_CONFIG, deep_merge, dump_config


@dataclass
class Run:
    """The components of one run, built from a resolved config."""

    config: dict[str, Any]
    backbone: Any
    representation: Any
    task: Any
    datamodule: Any


def _params(section: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (section or {}).items() if k != "name"}


def representation_for(model_spec: ModelSpec, registry: Registry) -> ComponentSpec:
    """The representation a model needs, or an error naming the package to install."""
    try:
        return registry.representation(model_spec.representation)
    except ComponentNotFoundError:
        package = model_spec.representation_distribution
        fix = f"install it with `pip install {package}`" if package else "install the plugin that provides it"
        raise IncompatibleComponentsError(
            f"model {model_spec.name!r} (from {model_spec.distribution}) needs the representation "
            f"{model_spec.representation!r}, which is not installed; {fix}"
        ) from None


def resolve_config(config: Mapping[str, Any], registry: Registry | None = None) -> dict[str, Any]:
    """Fill in every default of the chosen model, representation and task.

    The result names each component by its registered name and lists all of
    its hyper-parameters, so it reproduces the run on its own.
    """
    registry = registry or get_registry()
    config = deep_merge(DEFAULT_CONFIG, config)
    model_spec = registry.model(str(config["model"].get("name")))
    task_spec = registry.task(str(config["task"].get("name")))
    representation_spec = representation_for(model_spec, registry)
    asked = config["representation"].get("name")
    if asked and registry.representation(str(asked)).name != representation_spec.name:
        raise IncompatibleComponentsError(
            f"model {model_spec.name!r} consumes the representation {representation_spec.name!r}, "
            f"not {asked!r}; remove representation.name from the config or choose another model"
        )
    model_params = model_spec.resolve_params(_params(config["model"]))
    representation_overrides = _params(config["representation"])
    if "cutoff_radius" in model_params and "cutoff_radius" in representation_spec.defaults:
        # one cutoff for the graph and the model's smooth envelope
        if "cutoff_radius" in representation_overrides and "cutoff_radius" in _params(config["model"]):
            if float(representation_overrides["cutoff_radius"]) != float(model_params["cutoff_radius"]):
                raise IncompatibleComponentsError(
                    f"model.cutoff_radius={model_params['cutoff_radius']} and representation.cutoff_radius="
                    f"{representation_overrides['cutoff_radius']} differ; they must be equal (set one of them)")
        elif "cutoff_radius" in representation_overrides:
            model_params["cutoff_radius"] = representation_overrides["cutoff_radius"]
        representation_overrides["cutoff_radius"] = model_params["cutoff_radius"]
    config["model"] = {"name": model_spec.name, **model_params}
    config["representation"] = {"name": representation_spec.name,
                                **representation_spec.resolve_params(representation_overrides)}
    config["task"] = {"name": task_spec.name, **task_spec.resolve_params(_params(config["task"]))}
    return config


def required_targets(config: Mapping[str, Any]) -> list[str]:
    """Sample keys the configured task needs in every sample."""
    task_spec = get_registry().task(config["task"]["name"])
    targets = list(task_spec.required_targets)
    if config["task"].get("targets"):
        chosen = config["task"]["targets"]
        targets += [chosen] if isinstance(chosen, str) else list(chosen)
    return list(dict.fromkeys(targets))


def build_run(config: Mapping[str, Any], split: Split | None = None, dataset: str | None = None) -> Run:
    """Build backbone, representation, task and data module from a resolved config."""
    from matsciml.training.datamodule import MatSciDataModule

    registry = get_registry()
    model_spec = registry.model(config["model"]["name"])
    representation_spec = registry.representation(config["representation"]["name"])
    task_spec = registry.task(config["task"]["name"])
    backbone = model_spec.build(**_params(config["model"]))
    representation = representation_spec.build(**_params(config["representation"]))
    # optimizer and scheduler are sections of their own, not task hyper-parameters
    task = task_spec.load_factory()(backbone, optimizer=config.get("optimizer"), scheduler=config.get("scheduler"),
                                    **task_spec.resolve_params(_params(config["task"])))
    targets = required_targets(config)
    data = config["data"]
    datamodule = MatSciDataModule(
        dataset=dataset or config["dataset"]["name"],
        representation=representation,
        batch_size=data["batch_size"],
        num_workers=data["num_workers"],
        split=config["dataset"]["split"],
        seed=config["dataset"]["seed"],
        keys=[*targets, *_STRUCTURE_KEYS],
        split_indices=split,
        dataset_options=config["dataset"].get("options") or {},
    )
    datamodule.setup()
    _check_targets(datamodule, targets, config)
    return Run(dict(config), backbone, representation, task, datamodule)


def _check_targets(datamodule: Any, targets: list[str], config: Mapping[str, Any]) -> None:
    dataset = datamodule.dataset
    metadata = getattr(dataset, "metadata", None)
    if metadata:
        present = keys_in_every_sample(metadata)
    else:
        present = set(dataset[0])
    missing = [t for t in targets if t not in present]
    if missing:
        raise IncompatibleComponentsError(
            f"task {config['task']['name']!r} needs {', '.join(missing)} in every sample, but dataset "
            f"{datamodule.dataset_name!r} does not have it (it has {', '.join(sorted(present))}); "
            f"choose another task or dataset"
        )


# ---------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What ``train`` produced: where, and how well against the trivial baseline."""

    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    metrics: dict[str, float]
    baseline: dict[str, float]
    epochs: int


def _run_dir(config: Mapping[str, Any]) -> Path:
    run = config["run"]
    name = run.get("name")
    if not name:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{config['model']['name']}-{config['task']['name']}-{Path(str(config['dataset']['name'])).stem}-{stamp}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))
    path = Path(run.get("dir") or "runs") / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _loggers(run_dir: Path) -> list[Any]:
    from pytorch_lightning.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(save_dir=str(run_dir), name="", version="logs")]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return loggers
    from pytorch_lightning.loggers import TensorBoardLogger

    loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="", version="tensorboard"))
    return loggers


class _DropAdvertisements(logging.Filter):
    """Lightning 2.6 prints a tip advertising a cloud service at every fit; keep logs about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdvertisements) for f in logger.filters):
            logger.addFilter(_DropAdvertisements())


def train(config: Mapping[str, Any]) -> TrainResult:
    """Train the configured model on the configured dataset and task.

    Writes into the run directory: ``config.yaml`` (resolved), ``split.json``,
    ``checkpoints/`` (best and last), ``logs/metrics.csv`` (and TensorBoard
    logs when installed) and ``metrics.json`` (validation metrics of the
    best checkpoint beside the trivial baseline).
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    _quiet_lightning()
    config = resolve_config(config)
    pl.seed_everything(int(config["run"]["seed"]), workers=True, verbose=False)
    run = build_run(config)
    run_dir = _run_dir(config)
    (run_dir / "config.yaml").write_text(dump_config(config))
    split = run.datamodule.split
    split.save(run_dir / "split.json")

    train_samples = run.datamodule.samples("train", limit=config["data"].get("statistics_samples"))
    run.task.fit_statistics(train_samples)
    run.task.run_record = {"config": config, "split": split.to_json(), "matsciml_version": __version__}

    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best-{epoch}",
                                 monitor="val/loss", mode="min", save_top_k=1, save_last=True)
    callbacks: list[Any] = [checkpoint]
    stopping = config.get("early_stopping")
    if stopping:
        callbacks.append(EarlyStopping(monitor=stopping.get("monitor", "val/loss"), mode="min",
                                       patience=int(stopping.get("patience", 20))))
    trainer = make_trainer(config["trainer"], default_root_dir=str(run_dir), logger=_loggers(run_dir),
                           callbacks=callbacks)
    trainer.fit(run.task, datamodule=run.datamodule)

    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    last = Path(checkpoint.last_model_path) if checkpoint.last_model_path else None
    if best is not None:
        run.task.load_state_dict(_read_checkpoint(best)["state_dict"])
    metrics = evaluate_task(run.task, run.datamodule, "val", trainer_options=config["trainer"])
    baseline = run.task.baseline_metrics(train_samples, run.datamodule.samples("val"))
    result = TrainResult(run_dir=run_dir, best_checkpoint=best, last_checkpoint=last, metrics=metrics,
                         baseline=baseline, epochs=int(trainer.current_epoch))
    (run_dir / "metrics.json").write_text(json.dumps({
        "split": "val", "metrics": metrics, "baseline": baseline, "epochs": result.epochs,
        "best_checkpoint": str(best) if best else None,
    }, indent=2))
    return result


# ---------------------------------------------------------------- evaluation
@dataclass
class LoadedRun:
    config: dict[str, Any]
    split: Split
    task: Any
    run: Run


def load_checkpoint(path: str | os.PathLike[str], dataset: str | None = None) -> LoadedRun:
    """Rebuild a trained task from a checkpoint written by :func:`train`.

    The checkpoint carries the resolved config and the split, so nothing
    else is needed; ``dataset`` evaluates on another dataset instead.
    """
    path = Path(path)
    checkpoint = _read_checkpoint(path)
    record = checkpoint.get("matsciml")
    if not record:
        raise MatscimlError(f"{path} is not a matsciml checkpoint (no run record); it was not written by `matsciml train`")
    config = record["config"]
    split = Split.from_json(record["split"])
    run = build_run(config, split=None if dataset else split, dataset=dataset)
    run.task.load_state_dict(checkpoint["state_dict"])
    run.task.run_record = record
    return LoadedRun(config=config, split=split, task=run.task, run=run)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise MatscimlError(f"checkpoint {path} does not exist")
    # Our own checkpoints hold the run record (plain Python data) beside the
    # tensors, so they are loaded in full; load only checkpoints you trust.
    return torch.load(path, map_location="cpu", weights_only=False)


def make_trainer(options: Mapping[str, Any], **fixed: Any) -> Any:
    """A Lightning Trainer from the config's ``trainer`` section.

    ``inference_mode`` is off so tasks can differentiate through positions
    (forces) during validation.
    """
    import inspect

    import pytorch_lightning as pl

    accepted = inspect.signature(pl.Trainer.__init__).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise MatscimlError(f"trainer.{unknown[0]} is not an argument of pytorch_lightning.Trainer; "
                            f"see its documentation for the accepted settings")
    return pl.Trainer(inference_mode=False, **{**options, **fixed})


def evaluate_task(task: Any, datamodule: Any, part: str = "val",
                  trainer_options: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The task's metrics on one split (``train``, ``val``, ``test`` or ``all``)."""
    options = {k: v for k, v in (trainer_options or {}).items()
               if k in ("accelerator", "devices", "precision")}
    options["devices"] = 1  # evaluation on one device: exact, order-independent sums
    trainer = make_trainer(options, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                           enable_model_summary=False)
    loader = datamodule.loader(part)
    (results,) = trainer.validate(task, dataloaders=loader, verbose=False)
    return {key.split("/", 1)[1]: float(value) for key, value in results.items() if key.startswith("val/")}
