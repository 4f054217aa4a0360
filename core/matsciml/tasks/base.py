"""What every task shares: the backbone, the optimiser, statistics, metric logging.

A task is a LightningModule that receives a backbone (an ``nn.Module`` from a
:class:`~matsciml.batch.Batch` to a :class:`~matsciml.interfaces.BackboneOutput`)
and owns the heads, losses, target normalisation and metrics. Backbones know
nothing of Lightning, and tasks know nothing of a backbone's internals.

A task works in plain Lightning too (``pl.Trainer(...).fit(task,
datamodule=MatSciDataModule(...))``): when fitting starts it fits its
training statistics from the data module's seeded, capped training sample,
unless they were fitted already (by the ``matsciml train`` driver, or loaded
from a checkpoint).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from matsciml.batch import Batch
from matsciml.errors import InvalidSampleError, MatscimlError, NonFiniteError
from matsciml.interfaces import BackboneOutput
from matsciml.tasks.metrics import Metric

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}

_CONTRACT = "see README 'Writing a plugin'"


class BaseTask(pl.LightningModule):
    """Common machinery; subclasses implement ``predict``, ``loss``, ``metrics`` and statistics.

    Args:
        backbone: the model (:class:`matsciml.interfaces.Backbone`): declares
            ``embedding_dim`` (and ``structure_embedding_dim`` when it has
            per-structure features); ``forward`` returns a ``BackboneOutput``.
        optimizer: ``{"name": "adamw", "lr": ..., other keyword arguments}``.
        scheduler: ``None`` (constant rate), ``{"name": "plateau", "factor", "patience"}``,
            ``{"name": "cosine"}`` (over ``trainer.max_epochs``) or ``{"name": "constant"}``;
            any of them with ``"warmup_steps": N``, a linear warm-up over the
            first N optimiser steps (see :meth:`warmup_factor`).
    """

    #: the task differentiates through positions at evaluation too (forces)
    needs_grad_in_eval: bool = False

    #: whether the task keeps statistics per dataset, so that a run may train it on several datasets at once
    #: (``dataset.name`` a list; :mod:`matsciml.data.concatenated`); a task that normalises with one set of
    #: statistics would mix the datasets' references, so runs refuse it
    several_datasets: bool = False

    def __init__(self, backbone: torch.nn.Module, optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.embedding_dim, self.structure_embedding_dim = backbone_widths(backbone)
        self.backbone = backbone
        self.optimizer_config = dict(optimizer or {"name": "adamw", "lr": 1e-3})
        self.scheduler_config = dict(scheduler) if scheduler else None
        self.register_buffer("statistics_fitted", torch.tensor(False))
        #: samples left out because they failed validation at read time: name -> reason
        self.skipped_samples: dict[str, str] = {}
        self._last_batch_names: list[str] | None = None
        #: per stage, per metric: [sum of batch means x terms, number of terms] over this epoch's batches
        self._epoch_totals: dict[str, dict[str, list[Any]]] = {}

    # ------------------------------------------------------------ subclasses
    def fit_statistics(self, samples: Iterable[Mapping[str, Any]],
                       metadata: Mapping[str, Any] | None = None) -> None:
        """Fit normalisation from training samples (raw dicts, read once); sets ``statistics_fitted``.

        ``samples`` may be any iterable (a generator streams them: only compact
        per-sample numbers are kept); ``metadata`` is the dataset's metadata
        record, which declares its custom keys (see :mod:`matsciml.fields`).
        """
        self.statistics_fitted.fill_(True)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, batch: Batch, prediction: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of ``prediction`` (what the optimiser minimises)."""
        raise NotImplementedError

    def metrics(self, batch: Batch, prediction: Mapping[str, torch.Tensor]) -> dict[str, Metric]:
        """The reported metrics of a prediction (a model's or a baseline's), as sums and counts."""
        raise NotImplementedError

    def loss_and_metrics(self, batch: Batch,
                         prediction: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Metric | torch.Tensor]]:
        """``(loss, metrics)``; metrics of detached predictions, so they cost no graph."""
        detached = {key: value.detach() for key, value in prediction.items()}
        return self.loss(batch, prediction), self.metrics(batch, detached)

    def baseline_kinds(self, metadata: Mapping[str, Any] | None = None) -> dict[str, str]:
        """The targets the baselines predict, each with its kind (:data:`matsciml.tasks.baselines.KINDS`)."""
        return {}

    def baseline_metrics(self, train_samples: Iterable[Mapping[str, Any]], eval_samples: Iterable[Mapping[str, Any]],
                         metadata: Mapping[str, Any] | None = None, chunk: int = 64) -> dict[str, dict[str, float]]:
        """The metrics of each baseline (:mod:`matsciml.tasks.baselines`) on ``eval_samples``.

        ``{"mean": {metric: value}, "composition": {...}}``, fitted on
        ``train_samples`` and scored by :meth:`metrics`, the model's own
        metric code. Both iterables are read once, in order, keeping one row
        of element counts per training structure, ``chunk`` evaluation
        structures at a time and running sums only.
        """
        from matsciml.tasks.baselines import fit_baselines, score_baselines

        kinds = self.baseline_kinds(metadata)
        if not kinds:
            return {}
        baselines = fit_baselines(train_samples, kinds)
        return score_baselines(baselines, eval_samples, self.metrics, chunk=chunk)

    # ------------------------------------------------------------ backbone and data
    def features(self, batch: Batch) -> BackboneOutput:
        """The backbone's output for ``batch``, checked to be a :class:`BackboneOutput`."""
        output = self.backbone(batch)
        if not isinstance(output, BackboneOutput):
            raise MatscimlError(f"backbone {type(self.backbone).__name__}: forward returned {type(output).__name__}, "
                                f"not matsciml.interfaces.BackboneOutput; return "
                                f"BackboneOutput(atom_features=...); {_CONTRACT}")
        return output

    def fit_statistics_from(self, datamodule: Any) -> None:
        """Fit the training statistics from a :class:`~matsciml.training.datamodule.MatSciDataModule`.

        Reads its seeded training sample of at most ``statistics_samples``
        structures, one at a time.
        """
        self.fit_statistics(datamodule.statistics_sample(), metadata=datamodule.metadata)

    def baseline_from(self, datamodule: Any, part: str = "val") -> dict[str, dict[str, float]]:
        """Each baseline's metrics on one split of ``datamodule`` (see :meth:`baseline_metrics`).

        The baselines are fitted on the same seeded, capped training sample
        as the statistics; the split is streamed sample by sample, so every
        structure of it counts and none is kept.
        """
        return self.baseline_metrics(datamodule.statistics_sample(), datamodule.iter_samples(part),
                                     metadata=datamodule.metadata, chunk=int(getattr(datamodule, "batch_size", 64)))

    def on_fit_start(self) -> None:
        """Fit the training statistics from the trainer's data module, unless already fitted."""
        if bool(self.statistics_fitted):
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "statistics_sample"):
            raise MatscimlError(
                f"{type(self).__name__}: its training statistics are not fitted and trainer.fit got no matsciml "
                f"data module to fit them from; call trainer.fit(task, datamodule=MatSciDataModule(...)), or "
                f"task.fit_statistics(training samples) before fitting with plain dataloaders")
        self.fit_statistics_from(datamodule)

    # ------------------------------------------------------------ lightning
    def _step(self, batch: Batch | Any, stage: str) -> torch.Tensor | None:
        if not bool(self.statistics_fitted):
            raise MatscimlError(f"{type(self).__name__}: its training statistics were never fitted; fit the task "
                                f"with trainer.fit(task, datamodule=...), which fits them from the training split, "
                                f"or call task.fit_statistics_from(datamodule) before evaluating")
        if self.needs_grad_in_eval and torch.is_inference_mode_enabled():
            raise MatscimlError(f"{type(self).__name__} differentiates the energy with respect to positions "
                                f"(forces) in {stage} too, which torch's inference mode forbids; create the "
                                f"trainer with pl.Trainer(inference_mode=False)")
        if not self._admit(batch):
            return None
        self._last_batch_names = batch.sample_names
        with torch.enable_grad() if self.needs_grad_in_eval else contextlib.nullcontext():
            prediction = self.predict(batch)
        loss, metrics = self.loss_and_metrics(batch, prediction)
        check_finite(batch, stage, loss, prediction, self._where(stage))
        size = batch.num_structures
        atoms = int(batch.atomic_numbers.shape[0])
        terms = [("loss", loss, size)]
        for name, metric in metrics.items():
            # epoch values are exact means: each batch's mean weighs by its number of terms
            if isinstance(metric, Metric):
                if metric.count == 0:
                    continue  # no term in this batch (no atom of some tag)
                terms.append((name, metric.value, metric.count))
            else:  # a plain tensor from a task written before Metric: per structure, or per atom
                terms.append((name, metric, atoms if name in self.per_atom_metrics else size))
        for name, value, weight in terms:
            if stage == "train":  # this process's batches: a running view, not a reported metric
                self.log(f"train/{name}", value.detach(), batch_size=weight,
                         prog_bar=name == "loss" or name in self.progress_metrics)
            else:
                self._accumulate(stage, name, value, weight)
        return loss

    def _accumulate(self, stage: str, name: str, value: torch.Tensor, weight: int) -> None:
        """Add one batch's mean of a metric, weighted by its number of terms, to the epoch's totals."""
        totals = self._epoch_totals.setdefault(stage, {})
        term = value.detach().to(torch.float64) * weight
        if name in totals:
            totals[name][0] = totals[name][0] + term
            totals[name][1] += int(weight)
        else:
            totals[name] = [term, int(weight)]

    def _log_epoch_means(self, stage: str) -> None:
        """Log each metric's exact mean over the epoch, every rank's batches included.

        Totals and counts are summed across processes in float64, then
        divided: the mean over the whole split whatever its sharding. (Lightning's
        own weighted mean divides by an integer count averaged across ranks,
        which gloo truncates: a 10 % error on a split of 11 over 2 ranks.)
        """
        totals = self._epoch_totals.pop(stage, {})
        names = sorted(totals)
        trainer = self._trainer
        world = int(trainer.world_size) if trainer is not None else 1
        if world > 1:  # a metric may have no term on some rank (no atom of some tag): agree on the union
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, names)
            names = sorted({name for part in gathered for name in part})
        if not names:
            return
        stacked = torch.zeros(len(names), 2, dtype=torch.float64, device=self.device)
        for row, name in enumerate(names):
            if name in totals:
                stacked[row, 0] = totals[name][0].to(self.device)
                stacked[row, 1] = totals[name][1]
        if world > 1:
            stacked = trainer.strategy.reduce(stacked, reduce_op="sum")
        for row, name in enumerate(names):
            total, count = stacked[row]
            if count > 0:
                # the value is the same on every rank already; sync_dist only keeps Lightning from warning
                self.log(f"{stage}/{name}", (total / count).to(torch.float32),
                         prog_bar=(name == "loss" and stage != "test") or name in self.progress_metrics,
                         sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._epoch_totals.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_means("val")

    def on_test_epoch_start(self) -> None:
        self._epoch_totals.pop("test", None)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_means("test")

    def _admit(self, batch: Batch | Any) -> bool:
        """Record samples skipped at read time; stop on invalid ones unless skipping is on."""
        failures = getattr(batch, "failures", None)
        if failures is not None:  # an InvalidBatch from the data module
            if not batch.skip_invalid:
                first = failures[0]
                others = f" (and {len(failures) - 1} more sample(s) of this batch)" if len(failures) > 1 else ""
                raise InvalidSampleError(f"{first.reason}{others}; training stopped. Fix or remove the sample, "
                                         f"or set data.skip_invalid=true to leave out samples that fail validation")
            self.skipped_samples.update((failure.name, failure.reason) for failure in failures)
            return False
        self.skipped_samples.update(getattr(batch, "skipped", None) or ())
        return True

    def _where(self, stage: str) -> str:
        epoch = self.current_epoch if self._trainer is not None else 0
        return f"{stage} batch of epoch {epoch}"

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Stop before a non-finite gradient reaches the weights (and so every later checkpoint)."""
        gradients = [p.grad for p in self.parameters() if p.grad is not None]
        if not gradients:
            return
        norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in gradients])
        if bool(torch.isfinite(norms).all()):
            return
        bad = [name for (name, p) in self.named_parameters()
               if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        raise NonFiniteError(
            f"non-finite gradient in {self._where('train')} (parameters {', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}) from {_name_samples(self._last_batch_names)}; training stopped "
            f"before the weights were changed. Lower optimizer.lr, keep trainer.gradient_clip_val set, or check "
            f"those samples with `matsciml data inspect --validate`")

    #: metrics shown in the progress bar
    progress_metrics: tuple[str, ...] = ()
    #: plain-tensor metrics (not :class:`Metric`) averaged over atoms rather than structures
    per_atom_metrics: tuple[str, ...] = ()
    #: metrics where more is better (shares, cosines); every other metric is an error
    higher_is_better: tuple[str, ...] = ()
    #: set by the training driver: the resolved config and split, saved in checkpoints
    run_record: dict[str, Any] | None = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_record is not None:
            checkpoint["matsciml"] = self.run_record

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Stretch a cosine schedule over a resumed run's new length (``--resume ... trainer.max_epochs=N``).

        The schedule's state in the checkpoint ends where the run was to end;
        restored as it is, a run trained longer would go on at a learning rate
        near zero, then climb the mirrored cosine. Instead the cosine runs over
        the new number of epochs from the epoch reached: the learning rate is
        the new schedule's value there. With the same length nothing changes,
        so a resumed run still ends exactly where the whole run would have.
        """
        trainer = self._trainer
        total = int(trainer.max_epochs or 0) if trainer is not None else 0
        if total < 1 or str((self.scheduler_config or {}).get("name", "")).lower() != "cosine":
            return
        schedulers, optimizers = checkpoint.get("lr_schedulers") or [], checkpoint.get("optimizer_states") or []
        for state, optimizer in zip(schedulers, optimizers):
            if not isinstance(state, dict) or "T_max" not in state or int(state["T_max"]) == total:
                continue
            done, floor = int(state.get("last_epoch", 0)), float(state.get("eta_min", 0.0))
            rates = [floor + (float(base) - floor) * (1 + math.cos(math.pi * min(done, total) / total)) / 2
                     for base in state.get("base_lrs", [])]
            state["T_max"], state["_last_lr"] = total, rates
            for group, rate in zip(optimizer.get("param_groups", []), rates):
                group["lr"] = rate

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        return self._step(batch, "train")  # None skips the optimiser step (a batch with no valid sample)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        """The optimiser and the schedule of ``optimizer_config`` and ``scheduler_config``.

        ``warmup_steps`` is not the torch scheduler's: it is taken out here and
        applied by :meth:`optimizer_step`, on top of whichever schedule runs.
        """
        config = dict(self.optimizer_config)
        name = str(config.pop("name", "adamw")).lower()
        if name not in OPTIMIZERS:
            raise MatscimlError(f"optimizer {name!r} is not known; choose one of {', '.join(OPTIMIZERS)}")
        optimizer = OPTIMIZERS[name](self.parameters(), **config)
        if not self.scheduler_config:
            return optimizer
        scheduler_config = dict(self.scheduler_config)
        scheduler_config.pop("warmup_steps", None)
        kind = str(scheduler_config.pop("name", "")).lower()
        if kind == "constant":
            if scheduler_config:
                raise MatscimlError(f"scheduler 'constant' takes no options besides warmup_steps, got "
                                    f"{', '.join(sorted(scheduler_config))}; remove them, or choose cosine or plateau")
            return optimizer
        if kind in ("plateau", "reducelronplateau"):
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **scheduler_config)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"}}
        if kind == "cosine":
            total = max(int(self.trainer.max_epochs or 1), 1)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, **scheduler_config)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        raise MatscimlError(f"scheduler {kind!r} is not known; use 'plateau', 'cosine', 'constant' or null")

    @property
    def warmup_steps(self) -> int:
        """Optimiser steps of the linear learning-rate warm-up (``scheduler.warmup_steps``; 0: none)."""
        return int((self.scheduler_config or {}).get("warmup_steps") or 0)

    def warmup_factor(self, step: int) -> float:
        """The share of the scheduled learning rate that optimiser step ``step`` (0-based) uses.

        ``(step + 1) / N`` for the first ``N = warmup_steps`` steps, so the
        k-th step uses k/N of the rate and step N the whole of it; 1 after.
        """
        warmup = self.warmup_steps
        return (step + 1) / warmup if step < warmup else 1.0

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """One optimiser step; during the warm-up with the scheduled rate scaled by :meth:`warmup_factor`.

        The scaled rate is set on each parameter group for this step only and
        the scheduled one put back right after, so schedulers (cosine,
        plateau, or none) never see the warm-up: their state, and the rate
        after the warm-up, are exactly what they are without one. Lightning
        counts ``global_step`` in optimiser steps (after gradient
        accumulation), and restores it on resume, so the warm-up does too.
        """
        factor = self.warmup_factor(self.trainer.global_step) if self._trainer is not None else 1.0
        if factor >= 1.0:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
            return
        groups = optimizer.param_groups
        scheduled = [group["lr"] for group in groups]
        for group, rate in zip(groups, scheduled):
            group["lr"] = rate * factor
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        finally:
            for group, rate in zip(groups, scheduled):
                group["lr"] = rate


def backbone_widths(backbone: Any) -> tuple[int, int | None]:
    """``(embedding_dim, structure_embedding_dim)`` a backbone declares, or an error saying what is missing."""
    name = type(backbone).__name__
    width = getattr(backbone, "embedding_dim", None)
    if not _is_width(width):
        problem = "has no attribute 'embedding_dim'" if width is None else f"has embedding_dim={width!r}"
        raise MatscimlError(f"backbone {name} {problem}: it must declare the width D of the atom_features "
                            f"[num_atoms, D] its forward returns as a positive integer; {_CONTRACT}")
    structure_width = getattr(backbone, "structure_embedding_dim", None)
    if structure_width is not None and not _is_width(structure_width):
        raise MatscimlError(f"backbone {name} has structure_embedding_dim={structure_width!r}: it must be the "
                            f"width of its structure_features as a positive integer, or None when it has "
                            f"none; {_CONTRACT}")
    return int(width), None if structure_width is None else int(structure_width)


def _is_width(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_finite(batch: Batch, stage: str, loss: torch.Tensor, prediction: Mapping[str, torch.Tensor],
                 where: str = "") -> None:
    """Raise :class:`NonFiniteError` naming the samples when the loss or a prediction is NaN or infinite.

    One synchronisation per step; the culprits are looked for only on failure.
    A non-finite target (a damaged label that passed no validation) is
    named as such, so the user knows to fix the data, not the model.
    """
    finite = torch.isfinite(loss.detach()).all()
    for value in prediction.values():
        finite = finite & torch.isfinite(value.detach()).all()
    if bool(finite):
        return
    problems = []
    culprits: set[int] = set()
    for kind, tensors in (("target", batch.targets), ("prediction", prediction)):
        for key, value in tensors.items():
            bad = _non_finite_structures(value.detach(), batch)
            if bad:
                problems.append(f"{kind} {key!r}")
                culprits.update(bad)
    names = batch.sample_names or []
    if culprits and names:
        blamed = [names[i] for i in sorted(culprits)]
    else:
        blamed = names
    what = ", ".join(problems) if problems else "loss"
    raise NonFiniteError(
        f"non-finite {what} (NaN or infinite) in the {where or stage + ' batch'}, from {_name_samples(blamed)}; "
        f"training stopped, and no checkpoint of this state was kept. Check those samples with "
        f"`matsciml data inspect --validate`; if the data are sound, lower optimizer.lr")


def _non_finite_structures(value: torch.Tensor, batch: Batch) -> list[int]:
    """Structures of the batch with a non-finite entry in a per-structure or per-atom tensor."""
    if value.ndim == 0 or not value.is_floating_point():
        return []
    rows = ~torch.isfinite(value.reshape(value.shape[0], -1)).all(dim=1)
    if value.shape[0] == batch.num_structures:
        return torch.nonzero(rows).flatten().tolist()
    if value.shape[0] == batch.structure_index.shape[0]:
        return sorted(set(batch.structure_index[rows].tolist()))
    return []


def _name_samples(names: Sequence[str] | None, limit: int = 5) -> str:
    if not names:
        return "samples of unknown origin"
    shown = "; ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
