"""IS2RE: initial structure to relaxed energy (Open Catalyst task).

The relaxed energy is predicted from the initial geometry as a sum of
per-atom contributions, trained with an L1 loss as in the OC20 baselines.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from matsciml.batch import Batch
from matsciml.tasks.energy import EnergyTask
from matsciml.tasks.statistics import mean_energy_baseline


class IS2RETask(EnergyTask):
    """Relaxed energy from the initial structure (arguments: see
    :class:`~matsciml.tasks.energy.EnergyTask`)."""

    energy_key = "relaxed_energy"
    progress_metrics = ("energy_mae",)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"relaxed_energy": [B]}``."""
        return {"relaxed_energy": self.energy(batch)}

    def loss_and_metrics(self, batch: Batch, prediction: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        error = prediction["relaxed_energy"] - batch.targets["relaxed_energy"]
        loss = error.abs().mean() / self.energy_head.scale
        return loss, {"energy_mae": error.abs().mean(),
                      "energy_per_atom_mae": (error / batch.num_atoms.to(error.dtype)).abs().mean()}

    def baseline_metrics(self, train_samples: Iterable[Mapping[str, Any]], eval_samples: Iterable[Mapping[str, Any]],
                         metadata: Mapping[str, Any] | None = None) -> dict[str, float]:
        return mean_energy_baseline(train_samples, eval_samples, "relaxed_energy")
