"""Property regression: one or several per-structure scalar targets.

Each target is normalised with its training-set mean and standard deviation;
the loss is L1 or MSE on the normalised values, and the metrics are the MAE
of each target in its own unit.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from matsciml.batch import Batch
from matsciml.errors import MatscimlError
from matsciml.tasks.base import BaseTask
from matsciml.tasks.heads import MLPHead, mean_per_structure, sum_per_structure


class PropertyRegressionTask(BaseTask):
    """Regress per-structure scalar properties (band gap, formation energy...).

    Args:
        backbone: per-atom embedding model.
        targets: sample keys to predict, each a scalar per structure.
        loss: ``"l1"`` or ``"mse"`` on normalised targets.
        readout: pool atoms with ``"mean"`` (intensive properties) or ``"sum"`` (extensive).
        head_hidden_dim, head_layers, activation: the MLP on the pooled embedding.
        optimizer, scheduler: see :class:`~matsciml.tasks.base.BaseTask`.
    """

    progress_metrics = ()

    def __init__(self, backbone: torch.nn.Module, targets: Sequence[str] = ("energy",), loss: str = "l1",
                 readout: str = "mean", head_hidden_dim: int = 64, head_layers: int = 2,
                 activation: str = "silu", optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None) -> None:
        super().__init__(backbone, optimizer, scheduler)
        if isinstance(targets, str):
            targets = [targets]
        if not targets:
            raise MatscimlError("property regression needs at least one target (task.targets: [band_gap, ...])")
        if loss not in ("l1", "mse"):
            raise MatscimlError(f"loss {loss!r} is not known; use 'l1' or 'mse'")
        if readout not in ("mean", "sum"):
            raise MatscimlError(f"readout {readout!r} is not known; use 'mean' or 'sum'")
        self.targets = list(targets)
        self.required_targets = tuple(self.targets)
        self.progress_metrics = tuple(f"{t}_mae" for t in self.targets)
        self.loss_name = loss
        self.readout = readout
        self.head = MLPHead(backbone.embedding_dim, len(self.targets), head_hidden_dim, head_layers, activation)
        self.register_buffer("target_mean", torch.zeros(len(self.targets)))
        self.register_buffer("target_std", torch.ones(len(self.targets)))

    def fit_statistics(self, samples: Sequence[Mapping[str, Any]]) -> None:
        values = self._target_matrix(samples)
        self.target_mean.copy_(torch.as_tensor(values.mean(axis=0)))
        self.target_std.copy_(torch.as_tensor(np.maximum(values.std(axis=0), 1e-6)))
        super().fit_statistics(samples)

    def _target_matrix(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        rows = []
        for index, sample in enumerate(samples):
            missing = [t for t in self.targets if t not in sample]
            if missing:
                raise MatscimlError(f"training sample {index} has no {', '.join(missing)}; "
                                    f"every sample must carry the regression targets")
            rows.append([float(np.asarray(sample[t])) for t in self.targets])
        if not rows:
            raise MatscimlError("cannot fit statistics: the training split is empty")
        return np.asarray(rows, dtype=np.float64)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.predict(batch)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{target: [B]}`` in the targets' own units."""
        embeddings = self.backbone(batch)
        if self.readout == "mean":
            pooled = mean_per_structure(embeddings, batch.structure_index, batch.num_atoms)
        else:
            pooled = sum_per_structure(embeddings, batch.structure_index, batch.num_structures)
        normalised = self.head(pooled)
        values = normalised * self.target_std.to(normalised.dtype) + self.target_mean.to(normalised.dtype)
        return {target: values[:, i] for i, target in enumerate(self.targets)}

    def loss_and_metrics(self, batch: Batch, prediction: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = []
        metrics = {}
        for i, target in enumerate(self.targets):
            truth = batch.targets[target].to(prediction[target].dtype)
            error = prediction[target] - truth
            normalised = error / self.target_std[i]
            losses.append(normalised.abs().mean() if self.loss_name == "l1" else normalised.pow(2).mean())
            metrics[f"{target}_mae"] = error.abs().mean()
        return torch.stack(losses).mean(), metrics

    def baseline_metrics(self, train_samples: Sequence[Mapping[str, Any]],
                         eval_samples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        mean = self._target_matrix(train_samples).mean(axis=0)
        values = self._target_matrix(eval_samples)
        return {f"{t}_mae": float(np.abs(values[:, i] - mean[i]).mean()) for i, t in enumerate(self.targets)}
