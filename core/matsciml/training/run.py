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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matsciml import __version__
from matsciml.checkpoint import read_checkpoint
from matsciml.data.schema import STRUCTURE_KEYS as _STRUCTURE_KEYS
from matsciml.data.splits import Split
from matsciml.data.storage import keys_in_every_sample
from matsciml.errors import ComponentNotFoundError, IncompatibleComponentsError, MatscimlError
from matsciml.registry import Registry, get_registry
from matsciml.specs import ComponentSpec, ModelSpec
from matsciml.training.config import DEFAULT_CONFIG, check_config, deep_merge, dump_config


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
    check_config(config, registry)  # types and ranges, before anything is built
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
    task = task_spec.build(backbone, factory_kwargs={"optimizer": config.get("optimizer"),
                                                     "scheduler": config.get("scheduler")},
                           **_params(config["task"]))
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
        skip_invalid=bool(data.get("skip_invalid", False)),
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
    #: samples left out because they failed validation (``data.skip_invalid``): count and the first few
    skipped_invalid: dict[str, Any] = field(default_factory=lambda: {"count": 0, "samples": []})


def _run_dir(config: Mapping[str, Any]) -> Path:
    """A new, empty directory for this run, under ``run.dir``.

    The name is ``run.name``, or MODEL-TASK-DATASET-TIMESTAMP when it is not
    set. A run never writes into a directory that exists: an earlier run's
    logs would be deleted and its checkpoints mixed with this one's. When
    ``NAME`` is taken the run goes to the first free ``NAME-2``, ``NAME-3``,
    ... and a note on standard error says which directory it used (the
    timestamped names of two runs started within a second get the same
    treatment). Each candidate is created with ``mkdir(exist_ok=False)``, so
    two runs started at once never share a directory.
    """
    import sys

    run = config["run"]
    name = run.get("name")
    if not name:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{config['model']['name']}-{config['task']['name']}-{Path(str(config['dataset']['name'])).stem}-{stamp}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).lstrip(".") or "run"  # never '.', '..' or hidden
    parent = Path(run.get("dir") or "runs")
    parent.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        path = parent / (name if number == 1 else f"{name}-{number}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            number += 1
    if number > 1:
        print(f"matsciml: note: run directory {parent / name} exists; this run writes to {path} instead",
              file=sys.stderr)
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
    logs when installed) and ``metrics.json`` (``status``; validation metrics
    of the best checkpoint beside the trivial baseline; samples skipped under
    ``data.skip_invalid``). A run that fails (a non-finite loss, an invalid
    sample) raises, and its ``metrics.json`` says ``failed`` with the error.
    """
    import pytorch_lightning as pl

    _quiet_lightning()
    config = resolve_config(config)
    check_trainer_options(config["trainer"])  # before the model is built and the run directory written
    pl.seed_everything(int(config["run"]["seed"]), workers=True, verbose=False)
    run = build_run(config)
    run_dir = _run_dir(config)
    (run_dir / "config.yaml").write_text(dump_config(config))
    split = run.datamodule.split
    split.save(run_dir / "split.json")

    try:
        result = _fit(config, run, run_dir)
    except BaseException as exc:
        # the run directory says how the run ended; the error itself goes to the caller (exit code 1)
        _write_summary(run_dir, {"status": "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                                 "error": f"{type(exc).__name__}: {exc}",
                                 "skipped_invalid": _skipped_summary(run)})
        raise
    return result


def _fit(config: Mapping[str, Any], run: Run, run_dir: Path) -> TrainResult:
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    split = run.datamodule.split
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
        run.task.load_state_dict(read_checkpoint(best)["state_dict"])
    metrics = evaluate_task(run.task, run.datamodule, "val", trainer_options=config["trainer"])
    baseline = run.task.baseline_metrics(train_samples, run.datamodule.samples("val"))
    skipped = _skipped_summary(run)
    result = TrainResult(run_dir=run_dir, best_checkpoint=best, last_checkpoint=last, metrics=metrics,
                         baseline=baseline, epochs=int(trainer.current_epoch), skipped_invalid=skipped)
    _write_summary(run_dir, {
        "status": "completed", "split": "val", "metrics": metrics, "baseline": baseline, "epochs": result.epochs,
        "best_checkpoint": str(best) if best else None, "skipped_invalid": skipped,
    })
    return result


def _skipped_summary(run: Run, shown: int = 20) -> dict[str, Any]:
    """Samples left out under ``data.skip_invalid``: how many, and the first few with their reason."""
    skipped = {**run.datamodule.skipped, **run.task.skipped_samples}
    return {"count": len(skipped),
            "samples": [{"sample": name, "reason": reason} for name, reason in list(skipped.items())[:shown]]}


def _write_summary(run_dir: Path, summary: Mapping[str, Any]) -> None:
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))


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
    checkpoint = read_checkpoint(path)
    record = checkpoint.get("matsciml")
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict) or "split" not in record:
        raise MatscimlError(f"{path} is a Lightning checkpoint but not a matsciml one (no run record with the config "
                            f"and split); give a checkpoint written by `matsciml train`")
    config = record["config"]
    try:
        check_config(config, get_registry())
        split = Split.from_json(record["split"])
    except MatscimlError as exc:
        raise MatscimlError(f"{path}: the run record in this checkpoint is not valid ({exc}); it was damaged or "
                            f"altered; use another checkpoint of the run") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise MatscimlError(f"{path}: the split recorded in this checkpoint is not valid "
                            f"({type(exc).__name__}: {exc}); use another checkpoint of the run") from None
    run = build_run(config, split=None if dataset else split, dataset=dataset)
    run.task.load_state_dict(checkpoint["state_dict"])
    run.task.run_record = record
    return LoadedRun(config=config, split=split, task=run.task, run=run)


def make_trainer(options: Mapping[str, Any], **fixed: Any) -> Any:
    """A Lightning Trainer from the config's ``trainer`` section.

    ``inference_mode`` is off so tasks can differentiate through positions
    (forces) during validation.
    """
    import pytorch_lightning as pl

    check_trainer_options(options)
    return pl.Trainer(inference_mode=False, **{**options, **fixed})


def check_trainer_options(options: Mapping[str, Any]) -> None:
    """Refuse keys of the ``trainer`` section that ``pytorch_lightning.Trainer`` does not take."""
    import difflib
    import inspect

    import pytorch_lightning as pl

    accepted = [name for name in inspect.signature(pl.Trainer.__init__).parameters if name != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        close = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f"did you mean trainer.{close[0]}? " if close else ""
        raise MatscimlError(f"trainer.{unknown[0]} is not an argument of pytorch_lightning.Trainer; {hint}"
                            f"see its documentation for the accepted settings")


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
