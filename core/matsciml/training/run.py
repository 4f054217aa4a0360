"""Build a run from its configuration, train it, evaluate it, reload it.

Everything is found through the registry the caller passes (the process's
registry by default): the model by name, the representation the model
declares it needs, the task by name, the dataset by name or path. Nothing
here knows any particular model: what ties a model to its representation
(``ModelSpec.tied_params``) and which targets a task needs
(``TaskSpec.required_targets``, ``TaskSpec.targets_param``) are the specs'
declarations, and a built backbone is checked against the contract of
:class:`matsciml.interfaces.Backbone` on a batch of the run's own data
before anything trains.
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
from matsciml.data.concatenated import ConcatenatedDatasets, dataset_labels, named_parts
from matsciml.data.schema import STRUCTURE_KEYS as _STRUCTURE_KEYS
from matsciml.data.splits import Split
from matsciml.data.storage import keys_in_every_sample
from matsciml.errors import ComponentNotFoundError, IncompatibleComponentsError, MatscimlError
from matsciml.registry import Registry, get_registry, normalize_name
from matsciml.specs import RESERVED_KEYS, ComponentSpec, ModelSpec, TaskSpec, is_number
from matsciml.training.callbacks import training_callbacks
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
    """A config section's hyper-parameters: everything but its name and preset."""
    return {k: v for k, v in (section or {}).items() if k not in RESERVED_KEYS}


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
    its hyper-parameters (those that follow from others too, such as a
    regression's readout per target), so it reproduces the run on its own.
    A model's ``tied_params`` are made equal to the representation's. When
    the task names a target the field registry does not know, the dataset's
    metadata is read (and its keys declared in this process) first: such a
    key is declared there, e.g. extensive or intensive.
    """
    from matsciml.fields import REGISTERED_FIELDS, declare_dataset_fields

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
    preset = config["model"].get("preset")
    model_params = model_spec.resolve_params(_params(config["model"]), preset=preset)
    model_set = {**model_spec.preset_params(preset, section="model"), **_params(config["model"])}
    representation_overrides = _tie_params(model_spec, representation_spec, model_params,
                                           model_set, _params(config["representation"]))
    # The preset's name stays in the record for the reader; every value it set is written out, so
    # the resolved config rebuilds the same model even if a later plugin release changes the preset.
    config["model"] = {"name": model_spec.name, **({"preset": preset} if preset is not None else {}),
                       **model_params}
    config["representation"] = {"name": representation_spec.name,
                                **representation_spec.resolve_params(representation_overrides)}
    task_overrides = _params(config["task"])
    chosen = task_overrides.get(task_spec.targets_param) if task_spec.targets_param else None
    named = [*task_spec.required_targets,
             *([chosen] if isinstance(chosen, str) else chosen if isinstance(chosen, (list, tuple)) else [])]
    if any(isinstance(key, str) and key not in REGISTERED_FIELDS for key in named):
        # A target the registry does not know is the dataset's own key, declared in its metadata at conversion
        # (role, arity, extensive or intensive). Declare the dataset's keys in this process before the task's
        # parameters are completed, so they follow those declarations (a regression's readout per target) and
        # the resolved config says what the run does. Only then is the dataset opened (its metadata: cheap).
        from matsciml.training.datamodule import open_dataset

        name = config["dataset"].get("name")
        dataset = open_dataset(name, options=config["dataset"].get("options") or {}, registry=registry)
        try:
            # each dataset declares its own keys (several datasets: each part, under its own name)
            for part, source in named_parts(dataset, str(name)):
                metadata = getattr(part, "metadata", None)
                if isinstance(metadata, Mapping):
                    declare_dataset_fields(metadata, source=source)
        finally:
            close = getattr(dataset, "close", None)
            if callable(close):
                close()
    config["task"] = {"name": task_spec.name, **task_spec.resolve_params(task_overrides)}
    return config


def _tie_params(model_spec: ModelSpec, representation_spec: ComponentSpec, model_params: dict[str, Any],
                model_overrides: Mapping[str, Any], representation_overrides: dict[str, Any]) -> dict[str, Any]:
    """Make each of the model's ``tied_params`` equal to its representation parameter (in place).

    Setting either key sets both; setting both to different values is an
    error naming the two keys. Returns the representation's overrides.
    """
    for model_key, representation_key in model_spec.tied_params.items():
        if representation_spec.defaults and representation_key not in representation_spec.defaults:
            raise IncompatibleComponentsError(
                f"model {model_spec.name!r} (from {model_spec.distribution}) ties model.{model_key} to "
                f"representation.{representation_key}, but representation {representation_spec.name!r} (from "
                f"{representation_spec.distribution}) has no hyper-parameter {representation_key!r} (it has "
                f"{', '.join(representation_spec.defaults)}); report it to the model plugin's authors")
        if representation_key in representation_overrides and model_key in model_overrides:
            if not _same_value(representation_overrides[representation_key], model_params[model_key]):
                raise IncompatibleComponentsError(
                    f"model.{model_key}={model_params[model_key]} and representation.{representation_key}="
                    f"{representation_overrides[representation_key]} differ; they must be equal (set one of them)")
        elif representation_key in representation_overrides:
            model_params[model_key] = representation_overrides[representation_key]
            model_spec.check_params({model_key: model_params[model_key]}, section="model")
        representation_overrides[representation_key] = model_params[model_key]
    return representation_overrides


def _same_value(first: Any, second: Any) -> bool:
    if is_number(first) and is_number(second):
        return float(first) == float(second)
    return first == second


def required_targets(config: Mapping[str, Any], registry: Registry | None = None) -> list[str]:
    """Sample keys the configured task needs in every sample (its spec's declaration)."""
    task_spec = (registry or get_registry()).task(config["task"]["name"])
    assert isinstance(task_spec, TaskSpec)
    return task_spec.targets_for(_params(config["task"]))


def build_run(config: Mapping[str, Any], split: Split | None = None, dataset: str | list[str] | None = None,
              registry: Registry | None = None) -> Run:
    """Build backbone, representation, task and data module from a resolved config.

    The backbone is checked against the contract (:func:`check_backbone_contract`)
    on a small batch of the data module's training split, so a model that
    does not keep it stops here, named, before any training.
    """
    from matsciml.training.datamodule import MatSciDataModule

    registry = registry or get_registry()
    model_spec = registry.model(config["model"]["name"])
    representation_spec = registry.representation(config["representation"]["name"])
    task_spec = registry.task(config["task"]["name"])
    backbone = model_spec.build(**_params(config["model"]))
    check_backbone_declarations(backbone, model_spec)
    representation = representation_spec.build(**_params(config["representation"]))
    # optimizer and scheduler are sections of their own, not task hyper-parameters
    task = task_spec.build(backbone, factory_kwargs={"optimizer": config.get("optimizer"),
                                                     "scheduler": config.get("scheduler")},
                           **_params(config["task"]))
    targets = required_targets(config, registry)
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
        statistics_samples=data.get("statistics_samples"),
        registry=registry,
        split_by=config["dataset"].get("split_by") if dataset is None else None,  # another dataset: its own group key
        order_seed=int(config["run"]["seed"]),  # the training order is the run's, like its initial weights
    )
    names = datamodule.dataset_names
    if len(names) > 1 and not getattr(task, "several_datasets", False):
        raise IncompatibleComponentsError(
            f"dataset.name lists {len(names)} datasets, but task {task_spec.name!r} keeps one set of training "
            f"statistics and would mix their references; train it on one dataset (a directory of *.lmdb files of "
            f"one dataset is one dataset), or use task regression, which keeps each dataset's statistics")
    datamodule.setup()
    _check_targets(datamodule, targets, config)
    if len(names) > 1:
        task.dataset_labels = dataset_labels(names)
    check_backbone_contract(backbone, model_spec, datamodule.example_batch())
    return Run(dict(config), backbone, representation, task, datamodule)


# ---------------------------------------------------------------- the backbone contract
_SEE_README = "see README 'Writing a plugin'"


def _model_name(model_spec: ModelSpec) -> str:
    """``model 'egnn' (matsciml-egnn 0.1.0)``: the model, its distribution and version."""
    distribution = model_spec.distribution
    if not distribution:
        return f"model {model_spec.name!r}"
    import importlib_metadata

    try:
        version = importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return f"model {model_spec.name!r} ({distribution})"
    return f"model {model_spec.name!r} ({distribution} {version})"


def check_backbone_declarations(backbone: Any, model_spec: ModelSpec) -> None:
    """The built backbone declares its spec's ``representation`` and its output widths.

    Raises:
        IncompatibleComponentsError: one line naming the model, its
            distribution and what is wrong.
    """
    from matsciml.tasks.base import backbone_widths

    who = _model_name(model_spec)
    declared = getattr(backbone, "representation", None)
    if not isinstance(declared, str):
        raise IncompatibleComponentsError(
            f"{who}: the built model has no attribute 'representation' naming the representation its batches "
            f"come from ({model_spec.representation!r}, as its spec says); {_SEE_README}")
    if normalize_name(declared) != normalize_name(model_spec.representation):
        raise IncompatibleComponentsError(
            f"{who}: the built model declares representation {declared!r} but its spec says "
            f"{model_spec.representation!r}; they must be the same; {_SEE_README}")
    try:
        backbone_widths(backbone)
    except MatscimlError as exc:
        raise IncompatibleComponentsError(f"{who}: {exc}") from None


def check_backbone_contract(backbone: Any, model_spec: ModelSpec, batch: Any) -> None:
    """A built backbone keeps the contract of :class:`matsciml.interfaces.Backbone` on ``batch``.

    Checks the declarations (:func:`check_backbone_declarations`), then runs
    ``forward`` once, in eval mode and without gradients (so no state of the
    model changes), on ``batch`` (a small batch of the run's own data): it
    must return a :class:`~matsciml.interfaces.BackboneOutput` whose
    ``atom_features`` are floating point ``[num_atoms_total, embedding_dim]``
    and whose ``structure_features`` are ``[num_structures,
    structure_embedding_dim]`` exactly when the model declares that width.
    ``batch`` None (no readable sample) checks the declarations only.

    Raises:
        IncompatibleComponentsError: one line naming the model, its
            distribution and what is wrong.
    """
    import torch

    from matsciml.interfaces import output_problems

    check_backbone_declarations(backbone, model_spec)
    if batch is None:
        return
    who = _model_name(model_spec)

    def fail(problem: str) -> IncompatibleComponentsError:
        return IncompatibleComponentsError(f"{who}: {problem}; {_SEE_README}")

    training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            output = backbone(batch)
    except MatscimlError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's forward may raise anything
        message = " ".join(str(exc).split())
        raise fail(f"forward failed on a batch of {batch.num_structures} structures of the run's data "
                   f"({type(exc).__name__}: {message})") from exc
    finally:
        backbone.train(training)
    problems = output_problems(backbone, output, int(batch.atomic_numbers.shape[0]), batch.num_structures)
    if problems:
        raise fail("; ".join(problems))


def _check_targets(datamodule: Any, targets: list[str], config: Mapping[str, Any]) -> None:
    """Every dataset of the run carries the task's targets in every sample (each dataset checked and named)."""
    dataset = datamodule.dataset
    for part, name in named_parts(dataset, datamodule.dataset_name):
        metadata = getattr(part, "metadata", None)
        if metadata:
            present = keys_in_every_sample(metadata)
        else:
            present = set(part[0])
        missing = [t for t in targets if t not in present]
        if missing:
            raise IncompatibleComponentsError(
                f"task {config['task']['name']!r} needs {', '.join(missing)} in every sample, but dataset "
                f"{name!r} does not have it (it has {', '.join(sorted(present))}); "
                f"choose another task or dataset"
            )


# ---------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What ``train`` produced: where, and how well against the baselines on the same split."""

    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    metrics: dict[str, float]
    #: each baseline's metrics on the validation split: ``{"mean": {...}, "composition": {...}}``
    baselines: dict[str, dict[str, float]]
    epochs: int
    #: samples left out because they failed validation (``data.skip_invalid``): count and the first few
    skipped_invalid: dict[str, Any] = field(default_factory=lambda: {"count": 0, "samples": []})
    #: the task's metrics where more is better (shares within a threshold, cosines)
    higher_is_better: tuple[str, ...] = ()
    #: False in the other processes of a distributed run: rank 0 evaluates and writes the run's files
    rank_zero: bool = True
    #: per-element reference energies the task fitted on the training split (eV per atom), by symbol
    reference_energies: dict[str, float] = field(default_factory=dict)


def fitted_reference_energies(task: Any) -> dict[str, float]:
    """The per-element reference energies an energy task fitted (eV per atom), by element symbol.

    Empty for tasks without them (regression) or with ``task.reference_energies=false``.
    """
    from matsciml.data.inspect import element_symbol

    references = getattr(getattr(task, "energy_head", None), "references", None)
    if references is None:
        return {}
    return {element_symbol(z): float(references[z]) for z in references.nonzero().flatten().tolist()}


#: set by rank 0 before Lightning starts the other processes of a run, which write into the same directory
RUN_DIR_VARIABLE = "MATSCIML_RUN_DIR"


def launch_is_rank_zero() -> bool:
    """Whether this process is rank 0 of its run, from the launcher's environment variables.

    Known before any process group exists: torchrun sets ``RANK``,
    Lightning's launcher ``LOCAL_RANK`` and ``NODE_RANK``, and ``srun`` with
    several tasks ``SLURM_PROCID``. A process no launcher started is rank 0.
    """
    environment = os.environ
    if "RANK" in environment:
        return int(environment["RANK"]) == 0
    if "LOCAL_RANK" in environment:
        return int(environment["LOCAL_RANK"]) == 0 and int(environment.get("NODE_RANK", 0) or 0) == 0
    if int(environment.get("SLURM_NTASKS", 1) or 1) > 1:
        return int(environment.get("SLURM_PROCID", 0) or 0) == 0
    return True


def _started_together() -> bool:
    """Whether every process of the run was started at once by an outside launcher (torchrun, srun)."""
    environment = os.environ
    return int(environment.get("WORLD_SIZE", 1) or 1) > 1 or int(environment.get("SLURM_NTASKS", 1) or 1) > 1


def _run_name(config: Mapping[str, Any]) -> str:
    run = config["run"]
    name = run.get("name")
    if not name and _started_together():
        # every process must find the same directory without talking to the others: the job's id names it
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
        if not job or job == "none":
            raise MatscimlError("run.name is not set, and the processes of this distributed run were started "
                                "together (torchrun or srun), so they cannot agree on a timestamped run directory; "
                                "set run.name=NAME (the same for every process, e.g. the job's id)")
        name = f"{config['model']['name']}-{config['task']['name']}-{job}"
    if not name:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{config['model']['name']}-{config['task']['name']}-{_dataset_stem(config['dataset']['name'])}-{stamp}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).lstrip(".") or "run"  # never '.', '..' or hidden


def _dataset_stem(name: Any) -> str:
    """The dataset part of a default run name: a file's stem, or the stems of several datasets joined by +."""
    return "+".join(dataset_labels(name)) if isinstance(name, (list, tuple)) else Path(str(name)).stem


def _run_dir(config: Mapping[str, Any]) -> Path:
    """The directory of this run, under ``run.dir``: new and empty for a single process.

    The name is ``run.name``, or MODEL-TASK-DATASET-TIMESTAMP when it is not
    set. A run never writes into a directory that exists: an earlier run's
    logs would be deleted and its checkpoints mixed with this one's. When
    ``NAME`` is taken the run goes to the first free ``NAME-2``, ``NAME-3``,
    ... and a note on standard error says which directory it used (the
    timestamped names of two runs started within a second get the same
    treatment). Each candidate is created with ``mkdir(exist_ok=False)``, so
    two runs started at once never share a directory.

    Processes of a distributed run share rank 0's directory: those Lightning
    starts find it in ``MATSCIML_RUN_DIR``; those started together by
    torchrun or srun use ``run.name`` (or the job's id) as it is.
    """
    import sys

    if not launch_is_rank_zero() and os.environ.get(RUN_DIR_VARIABLE):
        return Path(os.environ[RUN_DIR_VARIABLE])
    name = _run_name(config)
    parent = Path(config["run"].get("dir") or "runs")
    parent.mkdir(parents=True, exist_ok=True)
    if _started_together():
        # every process decides alike from what is on disk before any of them writes run files
        path = parent / name
        if (path / "metrics.json").exists() or (path / "checkpoints").exists():
            raise MatscimlError(f"run directory {path} holds an earlier run, and the processes of this distributed "
                                f"run must agree on one directory; set another run.name, or continue that run "
                                f"with --resume {path}")
        path.mkdir(exist_ok=True)
        return path
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


def train(config: Mapping[str, Any], registry: Registry | None = None,
          resume: str | os.PathLike[str] | None = None) -> TrainResult:
    """Train the configured model on the configured dataset and task.

    Writes into the run directory: ``config.yaml`` (resolved), ``split.json``,
    ``checkpoints/`` (best and last), ``logs/metrics.csv`` (and TensorBoard
    logs when installed) and ``metrics.json`` (``status``; validation metrics
    of the best checkpoint beside the trivial baseline; samples skipped under
    ``data.skip_invalid``). A run that fails (a non-finite loss, an invalid
    sample) raises, and its ``metrics.json`` says ``failed`` with the error.

    ``resume`` continues the run in that directory from its newest intact
    checkpoint (:func:`matsciml.training.resume.find_resume_point`): weights,
    optimiser, scheduler, epoch, step, random states and data order, so it
    ends where the uninterrupted run would have. ``config`` is then the
    run's own, with at most the changes :data:`RESUME_OVERRIDABLE` allows.

    Under distributed training only rank 0 writes run files, checkpoints
    and logs, and evaluates at the end; the other ranks return a result
    without metrics (``rank_zero`` False).

    Components are looked up in ``registry`` (the process's by default).
    """
    import sys

    import pytorch_lightning as pl

    from matsciml.training.resume import find_resume_point

    _quiet_lightning()
    registry = registry or get_registry()
    config = resolve_config(config, registry)
    check_trainer_options(config["trainer"])  # before the model is built and the run directory written
    check_accelerator_available(config["trainer"])
    rank_zero = launch_is_rank_zero()
    point = None
    split = None
    if resume is not None:
        run_dir = Path(resume)
        point = find_resume_point(run_dir)
        split = Split.from_json(point.record["split"]) if "split" in point.record else None
        if rank_zero:
            print(f"matsciml: resuming {run_dir} from {point.describe(run_dir)}", file=sys.stderr)
            for path, reason in point.passed_over:
                print(f"matsciml: note: passed over {path.name}: {reason}", file=sys.stderr)
    pl.seed_everything(int(config["run"]["seed"]), workers=True, verbose=False)
    run = build_run(config, split=split, registry=registry)
    if resume is None:
        run_dir = _run_dir(config)
    if rank_zero:
        (run_dir / "config.yaml").write_text(dump_config(config))
        run.datamodule.split.save(run_dir / "split.json")

    try:
        result = _fit(config, run, run_dir, point, rank_zero)
    except BaseException as exc:
        # the run directory says how the run ended; the error itself goes to the caller (exit code 1)
        if rank_zero:
            _write_summary(run_dir, {"status": "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                                     "error": f"{type(exc).__name__}: {exc}",
                                     "skipped_invalid": _skipped_summary(run)})
        raise
    return result


#: the settings a resumed run may change: where and how it runs, and how long; not what it learns
RESUME_OVERRIDABLE = ("trainer.max_epochs", "trainer.accelerator", "trainer.devices", "trainer.num_nodes",
                      "trainer.strategy", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
                      "data.num_workers")


def _fit(config: Mapping[str, Any], run: Run, run_dir: Path, point: Any = None, rank_zero: bool = True) -> TrainResult:
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from matsciml.training.resume import (AtomicCheckpointIO, LatestCheckpoint, RandomStateCallback,
                                          keep_logged_rows, remove_stale_partials, restore_csv_log)

    split = run.datamodule.split
    # before the trainer exists, so a sample that fails here ends the run before any epoch
    run.task.fit_statistics_from(run.datamodule)
    run.task.run_record = {"config": config, "split": split.to_json(), "matsciml_version": __version__,
                           "dataset": dataset_record(run.datamodule)}

    policy = config["run"]
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best-{epoch}",
                                 monitor="val/loss", mode="min", save_top_k=int(policy.get("save_top_k", 1)))
    latest = LatestCheckpoint(run_dir / "checkpoints")  # last.ckpt every epoch: what --resume continues from
    callbacks: list[Any] = [checkpoint, latest, RandomStateCallback()]
    every = policy.get("checkpoint_every_n_epochs")
    if every:  # a second policy beside the best ones: every N epochs, all kept, whatever the loss
        callbacks.append(ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="epoch-{epoch}",
                                         auto_insert_metric_name=False, every_n_epochs=int(every), save_top_k=-1,
                                         monitor=None))
    stopping = config.get("early_stopping")
    if stopping:
        callbacks.append(EarlyStopping(monitor=stopping.get("monitor", "val/loss"), mode="min",
                                       patience=int(stopping.get("patience", 20))))
    callbacks.extend(training_callbacks(config))
    loggers = _loggers(run_dir)
    if point is not None and rank_zero:
        remove_stale_partials(run_dir / "checkpoints")  # saves cut short by the kill
        # the log keeps what was logged up to the checkpoint; the epoch cut short is logged again
        restore_csv_log(loggers[0], *keep_logged_rows(run_dir / "logs" / "metrics.csv", point.global_step))
    trainer = make_trainer(config["trainer"], default_root_dir=str(run_dir), logger=loggers,
                           callbacks=callbacks, plugins=[AtomicCheckpointIO()])
    previous = os.environ.get(RUN_DIR_VARIABLE)
    os.environ[RUN_DIR_VARIABLE] = str(run_dir.resolve())  # the processes Lightning starts write here too
    try:
        trainer.fit(run.task, datamodule=run.datamodule, ckpt_path=str(point.path) if point is not None else None)
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_VARIABLE, None)
        else:
            os.environ[RUN_DIR_VARIABLE] = previous
    if not trainer.is_global_zero:
        return TrainResult(run_dir=run_dir, best_checkpoint=None, last_checkpoint=None, metrics={}, baselines={},
                           epochs=int(trainer.current_epoch), rank_zero=False)

    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    last = Path(latest.best_model_path) if latest.best_model_path else None
    if best is not None:
        run.task.load_state_dict(read_checkpoint(best)["state_dict"])
    # one process, the whole split: exact metrics whatever the number of ranks that trained
    metrics = evaluate_task(run.task, run.datamodule, "val", trainer_options=config["trainer"])
    # streamed: every validation structure counts, none is kept
    baselines = run.task.baseline_from(run.datamodule, "val")
    skipped = _skipped_summary(run)
    result = TrainResult(run_dir=run_dir, best_checkpoint=best, last_checkpoint=last, metrics=metrics,
                         baselines=baselines, epochs=int(trainer.current_epoch), skipped_invalid=skipped,
                         higher_is_better=tuple(run.task.higher_is_better),
                         reference_energies=fitted_reference_energies(run.task))
    _write_summary(run_dir, {
        "status": "completed", "split": "val", "metrics": metrics, "baselines": baselines, "epochs": result.epochs,
        "best_checkpoint": str(best) if best else None, "skipped_invalid": skipped,
        "reference_energies": result.reference_energies,
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
    #: the dataset is the one the run trained on (its recorded split is used)
    same_dataset: bool = True


def load_checkpoint(path: str | os.PathLike[str], dataset: str | list[str] | None = None,
                    registry: Registry | None = None) -> LoadedRun:
    """Rebuild a trained task from a checkpoint written by :func:`train`.

    The checkpoint carries the resolved config, the split and where the
    dataset was (:func:`locate_dataset`), so nothing else is needed, from
    any directory; ``dataset`` evaluates on another dataset (or on the same
    one, moved: then its recorded split is kept). Components are looked up
    in ``registry`` (the process's by default).
    """
    registry = registry or get_registry()
    path = Path(path)
    checkpoint = read_checkpoint(path)
    record = checkpoint.get("matsciml")
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict) or "split" not in record:
        raise MatscimlError(f"{path} is a Lightning checkpoint but not a matsciml one (no run record with the config "
                            f"and split); give a checkpoint written by `matsciml train`")
    config = record["config"]
    try:
        check_config(config, registry)
        split = Split.from_json(record["split"])
    except MatscimlError as exc:
        raise MatscimlError(f"{path}: the run record in this checkpoint is not valid ({exc}); it was damaged or "
                            f"altered; use another checkpoint of the run") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise MatscimlError(f"{path}: the split recorded in this checkpoint is not valid "
                            f"({type(exc).__name__}: {exc}); use another checkpoint of the run") from None
    trained = config["dataset"]["name"]
    if dataset is not None and isinstance(trained, list):
        given = dataset if isinstance(dataset, list) else [dataset]
        if len(given) != len(trained):
            raise MatscimlError(
                f"{path}: this model was trained on {len(trained)} datasets ({', '.join(map(str, trained))}), each "
                f"with its own statistics, so it evaluates on {len(trained)}: give --dataset once per dataset, the "
                f"k-th normalised as the k-th of the training run (you gave {len(given)})")
    dataset, same_dataset = locate_dataset(path, config, record.get("dataset"), dataset, registry)
    run = build_run(config, split=split if same_dataset else None, dataset=dataset, registry=registry)
    run.task.load_state_dict(checkpoint["state_dict"])
    run.task.run_record = record
    return LoadedRun(config=config, split=split, task=run.task, run=run, same_dataset=same_dataset)


# ---------------------------------------------------------------- where a run's dataset is
def dataset_fingerprint(dataset: Any) -> dict[str, Any]:
    """``{"num_samples", "metadata_sha256"}``: what identifies a dataset's content cheaply.

    The hash is of the dataset's metadata record (keys, units, statistics,
    element counts, provenance), canonical JSON; a dataset without metadata
    has None.
    """
    import hashlib

    if isinstance(dataset, ConcatenatedDatasets):  # their own hashes, in order (not the names they were opened by)
        hashes = [dataset_fingerprint(part)["metadata_sha256"] for part in dataset.parts]
        digest = (None if None in hashes else
                  hashlib.sha256(json.dumps(hashes).encode("utf-8")).hexdigest())
        return {"num_samples": len(dataset), "metadata_sha256": digest}
    metadata = getattr(dataset, "metadata", None)
    digest = None
    if isinstance(metadata, Mapping):
        text = json.dumps(metadata, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return {"num_samples": len(dataset), "metadata_sha256": digest}


def dataset_record(datamodule: Any) -> dict[str, Any]:
    """What a checkpoint records of its dataset: the name as configured, the absolute path of a
    dataset given by path (None for a registered name), and its :func:`dataset_fingerprint`.

    For several datasets, ``name`` and ``path`` are lists (one entry each) and
    the fingerprint is of them together."""
    def absolute(name: str) -> str | None:
        path = Path(name)
        return str(path.resolve()) if path.exists() else None

    source = datamodule.dataset_source or datamodule.dataset_name
    paths: Any = [absolute(name) for name in source] if isinstance(source, list) else absolute(source)
    return {"name": source, "path": paths, **dataset_fingerprint(datamodule.dataset)}


def locate_dataset(checkpoint: Path, config: Mapping[str, Any], record: Mapping[str, Any] | None,
                   given: str | list[str] | None, registry: Registry) -> tuple[str | list[str], bool]:
    """The dataset to evaluate a checkpoint on, and whether it is the one the run trained on.

    Without ``given``: the configured name (a registered dataset, or a path
    that resolves from here) when its content matches the recorded
    fingerprint, else the recorded absolute path when that does; otherwise
    an error saying where the dataset was and how to point at it
    (``--dataset``). With ``given``: that dataset; it counts as the same one
    (its recorded split is kept) when its fingerprint matches.
    """
    from matsciml.training.datamodule import open_dataset

    configured = config["dataset"]["name"]
    name: Any = [str(item) for item in configured] if isinstance(configured, list) else str(configured)

    def fingerprint(candidate: Any) -> dict[str, Any] | None:
        try:
            dataset = open_dataset(candidate, options=config["dataset"].get("options") or {}, registry=registry)
        except (FileNotFoundError, ComponentNotFoundError):
            return None
        try:
            return dataset_fingerprint(dataset)
        finally:
            close = getattr(dataset, "close", None)
            if close is not None:
                close()

    def matches(found: Mapping[str, Any] | None) -> bool:
        if found is None or record is None:
            return found is not None
        return all(found.get(key) == record.get(key) for key in ("num_samples", "metadata_sha256"))

    if given is not None:
        return given, record is not None and matches(fingerprint(given))
    if record is None:  # a checkpoint from before datasets were recorded: the configured name, as it was
        return name, True
    recorded_path = record.get("path")
    if isinstance(name, list) and isinstance(recorded_path, list) and len(recorded_path) == len(name):
        # several datasets: each at its recorded absolute path, or its configured name (a registered dataset)
        recorded_path = [path or item for path, item in zip(recorded_path, name)]
    candidates = [name] + ([recorded_path] if recorded_path and recorded_path != name else [])
    found = [fingerprint(candidate) for candidate in candidates]
    for candidate, content in zip(candidates, found):
        if matches(content):
            return candidate, True
    size = f"{record.get('num_samples')} samples"
    where = _shown(recorded_path or name)
    present = [(candidate, content) for candidate, content in zip(candidates, found) if content is not None]
    if present:
        candidate, other = present[0]
        raise MatscimlError(
            f"{checkpoint}: the dataset at {_shown(candidate)} is not the one this run trained on ({size}, metadata "
            f"hash {str(record.get('metadata_sha256'))[:12]}; found {other['num_samples']} samples, hash "
            f"{str(other['metadata_sha256'])[:12]}); give the training dataset with --dataset PATH, or "
            f"evaluate on this one with --dataset {_shown(candidate, ' --dataset ')} --split all")
    raise MatscimlError(
        f"{checkpoint}: the dataset this run trained on, {where} ({size}), is not there any more; if it moved, "
        f"give its new location with --dataset PATH (its recorded split is kept when the content matches)")


def _shown(name: Any, separator: str = " + ") -> str:
    """A dataset name, or several joined, for messages."""
    return separator.join(map(str, name)) if isinstance(name, (list, tuple)) else str(name)


def make_trainer(options: Mapping[str, Any], fix: str = "fix the trainer section of the config",
                 **fixed: Any) -> Any:
    """A Lightning Trainer from the config's ``trainer`` section.

    ``inference_mode`` is off so tasks can differentiate through positions
    (forces) during validation. Settings Lightning refuses (an unknown
    accelerator, a GPU this machine lacks, a precision its device cannot run)
    become one line naming them and ``fix``.
    """
    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    check_trainer_options(options)
    try:
        # the data module shards its own batches (RankBatches): Lightning must not put a sampler of its own in
        return pl.Trainer(inference_mode=False, **{**options, "use_distributed_sampler": False, **fixed})
    except (MisconfigurationException, ValueError, RuntimeError) as exc:
        shown = ", ".join(f"{key}={options[key]}" for key in ("accelerator", "devices", "precision", "strategy")
                          if key in options)
        reason = " ".join(str(exc).split())
        raise MatscimlError(f"PyTorch Lightning refused the trainer settings ({shown}): {reason}; {fix}") from exc


def check_accelerator_available(options: Mapping[str, Any]) -> None:
    """Refuse ``trainer.accelerator=gpu`` (or ``cuda``) where no CUDA GPU is visible, before anything is built.

    Lightning would refuse it too, but only when the trainer is made: after
    the statistics are fitted and the run directory is written.
    """
    import torch

    accelerator = options.get("accelerator")
    if isinstance(accelerator, str) and accelerator.lower() in ("gpu", "cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        raise MatscimlError(f"trainer.accelerator={accelerator}: no CUDA GPU is visible to this process (torch "
                            f"{torch.__version__}, a {build}); use trainer.accelerator=auto (a GPU when there is "
                            f"one) or cpu, or run where a GPU is visible (CUDA_VISIBLE_DEVICES)")


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
                  trainer_options: Mapping[str, Any] | None = None,
                  fix: str = "fix the trainer section of the config") -> dict[str, float]:
    """The task's metrics on one split (``train``, ``val``, ``test`` or ``all``)."""
    options = {k: v for k, v in (trainer_options or {}).items()
               if k in ("accelerator", "devices", "precision")}
    options["devices"] = 1  # evaluation on one device: exact, order-independent sums
    trainer = make_trainer(options, fix, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                           enable_model_summary=False)
    loader = datamodule.loader(part)
    (results,) = trainer.validate(task, dataloaders=loader, verbose=False)
    return {key.split("/", 1)[1]: float(value) for key, value in results.items() if key.startswith("val/")}
