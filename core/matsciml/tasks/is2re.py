"""IS2RE: initial structure to relaxed energy (Open Catalyst task).

The relaxed energy is predicted from the initial geometry as a sum of
per-atom contributions, trained with an L1 loss as in the OC20 baselines.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from matsciml.batch import Batch
from matsciml.tasks.energy import EnergyTask
from matsciml.tasks.metrics import Metric, energy_metrics


class IS2RETask(EnergyTask):
    """Relaxed energy from the initial structure (arguments: see
    :class:`~matsciml.tasks.energy.EnergyTask`)."""

    energy_key = "relaxed_energy"
    progress_metrics = ("energy_mae",)
    higher_is_better = ("ewt",)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"relaxed_energy": [B]}``."""
        return {"relaxed_energy": self.energy(batch)}

    def loss(self, batch: Batch, prediction: dict[str, torch.Tensor]) -> torch.Tensor:
        error = prediction["relaxed_energy"] - batch.targets["relaxed_energy"]
        return error.abs().mean() / self.energy_head.scale

    def metrics(self, batch: Batch, prediction: Mapping[str, torch.Tensor]) -> dict[str, Metric]:
        """Energy MAE, energy per atom MAE and EwT (share within 0.02 eV) of the relaxed energy."""
        return energy_metrics(prediction["relaxed_energy"], batch.targets["relaxed_energy"], batch)

    def baseline_kinds(self, metadata: Mapping[str, Any] | None = None) -> dict[str, str]:
        return {"relaxed_energy": "extensive"}
