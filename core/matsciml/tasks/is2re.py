"""IS2RE: initial structure to relaxed energy (Open Catalyst task).

The relaxed energy is predicted from the initial geometry as a sum of
per-atom contributions, trained with an L1 loss as in the OC20 baselines.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from matsciml.batch import Batch
from matsciml.tasks.base import BaseTask
from matsciml.tasks.energy import PerAtomEnergy, fit_energy_statistics, mean_energy_baseline


class IS2RETask(BaseTask):
    """Relaxed energy from the initial structure.

    Args:
        backbone: per-atom embedding model.
        reference_energies: fit per-element reference energies on the training set.
        head_hidden_dim, head_layers, activation: the per-atom energy MLP.
        optimizer, scheduler: see :class:`~matsciml.tasks.base.BaseTask`.
    """

    required_targets = ("relaxed_energy",)
    progress_metrics = ("energy_mae",)

    def __init__(self, backbone: torch.nn.Module, reference_energies: bool = True, head_hidden_dim: int = 64,
                 head_layers: int = 1, activation: str = "silu", optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None) -> None:
        super().__init__(backbone, optimizer, scheduler)
        self.reference_energies = reference_energies
        self.energy_head = PerAtomEnergy(backbone.embedding_dim, head_hidden_dim, head_layers, activation)

    def fit_statistics(self, samples: Sequence[Mapping[str, Any]]) -> None:
        fit_energy_statistics(self.energy_head, samples, "relaxed_energy", self.reference_energies)
        super().fit_statistics(samples)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.predict(batch)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"relaxed_energy": [B]}``."""
        return {"relaxed_energy": self.energy_head(self.backbone(batch), batch)}

    def loss_and_metrics(self, batch: Batch, prediction: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        error = prediction["relaxed_energy"] - batch.targets["relaxed_energy"]
        loss = error.abs().mean() / self.energy_head.scale
        return loss, {"energy_mae": error.abs().mean(),
                      "energy_per_atom_mae": (error / batch.num_atoms.to(error.dtype)).abs().mean()}

    def baseline_metrics(self, train_samples: Sequence[Mapping[str, Any]],
                         eval_samples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        return mean_energy_baseline(train_samples, eval_samples, "relaxed_energy")
