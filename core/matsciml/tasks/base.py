"""What every task shares: the backbone, the optimiser, statistics, metric logging.

A task is a LightningModule that receives a backbone (any ``nn.Module``
mapping a :class:`~matsciml.batch.Batch` to per-atom embeddings) and owns
the heads, losses, target normalisation and metrics. Backbones know nothing
of Lightning, and tasks know nothing of a backbone's internals.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from matsciml.batch import Batch
from matsciml.errors import MatscimlError

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


class BaseTask(pl.LightningModule):
    """Common machinery; subclasses implement ``predict``, ``loss_and_metrics`` and statistics.

    Args:
        backbone: the model; must have an ``embedding_dim`` attribute.
        optimizer: ``{"name": "adamw", "lr": ..., other keyword arguments}``.
        scheduler: ``None``, ``{"name": "plateau", "factor", "patience"}`` or
            ``{"name": "cosine"}`` (over ``trainer.max_epochs``).
    """

    #: the task differentiates through positions at evaluation too (forces)
    needs_grad_in_eval: bool = False
    #: sample keys every batch must carry
    required_targets: tuple[str, ...] = ()

    def __init__(self, backbone: torch.nn.Module, optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not hasattr(backbone, "embedding_dim"):
            raise MatscimlError(f"backbone {type(backbone).__name__} has no 'embedding_dim' attribute; "
                                f"a backbone must declare the width of its per-atom output")
        self.backbone = backbone
        self.optimizer_config = dict(optimizer or {"name": "adamw", "lr": 1e-3})
        self.scheduler_config = dict(scheduler) if scheduler else None
        self.register_buffer("statistics_fitted", torch.tensor(False))

    # ------------------------------------------------------------ subclasses
    def fit_statistics(self, samples: Sequence[Mapping[str, Any]]) -> None:
        """Fit normalisation from training samples (raw dicts); sets ``statistics_fitted``."""
        self.statistics_fitted.fill_(True)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss_and_metrics(self, batch: Batch, prediction: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def baseline_metrics(self, train_samples: Sequence[Mapping[str, Any]],
                         eval_samples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Metrics of the trivial predictor (training mean, zero forces) on ``eval_samples``."""
        return {}

    # ------------------------------------------------------------ lightning
    def _step(self, batch: Batch, stage: str) -> torch.Tensor:
        if not bool(self.statistics_fitted):
            raise MatscimlError("the task's training statistics were never fitted; call "
                                "task.fit_statistics(training samples) before training")
        with torch.enable_grad() if self.needs_grad_in_eval else contextlib.nullcontext():
            prediction = self.predict(batch)
        loss, metrics = self.loss_and_metrics(batch, prediction)
        size = batch.num_structures
        atoms = int(batch.atomic_numbers.shape[0])
        self.log(f"{stage}/loss", loss.detach(), batch_size=size, prog_bar=stage != "test", sync_dist=stage != "train")
        for name, value in metrics.items():
            # epoch values are weighted means: per-atom metrics weigh by atoms
            weight = atoms if name in self.per_atom_metrics else size
            self.log(f"{stage}/{name}", value.detach(), batch_size=weight, prog_bar=name in self.progress_metrics,
                     sync_dist=stage != "train")
        return loss

    #: metrics shown in the progress bar
    progress_metrics: tuple[str, ...] = ()
    #: metrics averaged over atoms rather than structures
    per_atom_metrics: tuple[str, ...] = ()
    #: set by the training driver: the resolved config and split, saved in checkpoints
    run_record: dict[str, Any] | None = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_record is not None:
            checkpoint["matsciml"] = self.run_record

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        config = dict(self.optimizer_config)
        name = str(config.pop("name", "adamw")).lower()
        if name not in OPTIMIZERS:
            raise MatscimlError(f"optimizer {name!r} is not known; choose one of {', '.join(OPTIMIZERS)}")
        optimizer = OPTIMIZERS[name](self.parameters(), **config)
        if not self.scheduler_config:
            return optimizer
        scheduler_config = dict(self.scheduler_config)
        kind = str(scheduler_config.pop("name", "")).lower()
        if kind in ("plateau", "reducelronplateau"):
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **scheduler_config)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"}}
        if kind == "cosine":
            total = max(int(self.trainer.max_epochs or 1), 1)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, **scheduler_config)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        raise MatscimlError(f"scheduler {kind!r} is not known; use 'plateau', 'cosine' or null")
