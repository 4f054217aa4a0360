"""S2EF: structure to energy and forces (Open Catalyst task).

Forces are ``-dE/dpos`` by autograd, with ``create_graph`` during training
so the force loss trains the weights; they are therefore conservative and
rotate with the structure whenever the backbone's energy is invariant.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from matsciml.batch import Batch
from matsciml.tasks.energy import EnergyTask
from matsciml.tasks.statistics import MeanAbsoluteError, mean_energy_baseline


class S2EFTask(EnergyTask):
    """Energy and forces with a weighted L1 loss.

    Args:
        backbone: a :class:`matsciml.interfaces.Backbone`; its ``atom_features`` are read.
        energy_weight: weight of the energy term (per-atom energy error / scale).
        force_weight: weight of the force term (force component error / scale).
        reference_energies: fit per-element reference energies on the training set.
        head_hidden_dim, head_layers, activation: the per-atom energy MLP.
        optimizer, scheduler: see :class:`~matsciml.tasks.base.BaseTask`.
    """

    needs_grad_in_eval = True
    progress_metrics = ("energy_mae", "force_mae")
    per_atom_metrics = ("force_mae", "force_cosine")

    def __init__(self, backbone: torch.nn.Module, energy_weight: float = 1.0, force_weight: float = 3.0,
                 reference_energies: bool = True, head_hidden_dim: int = 64, head_layers: int = 1,
                 activation: str = "silu", optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None) -> None:
        super().__init__(backbone, reference_energies, head_hidden_dim, head_layers, activation, optimizer, scheduler)
        self.energy_weight = energy_weight
        self.force_weight = force_weight

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"energy": [B], "forces": [N, 3]}``; needs gradients enabled."""
        pos = batch.pos
        if not pos.requires_grad:
            pos.requires_grad_(True)
        energy = self.energy(batch)
        (gradient,) = torch.autograd.grad(energy.sum(), pos, create_graph=self.training)
        return {"energy": energy, "forces": -gradient}

    def loss_and_metrics(self, batch: Batch, prediction: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scale = self.energy_head.scale
        num_atoms = batch.num_atoms.to(prediction["energy"].dtype)
        energy_error = prediction["energy"] - batch.targets["energy"]
        force_error = prediction["forces"] - batch.targets["forces"]
        loss = (self.energy_weight * (energy_error / num_atoms).abs().mean() / scale
                + self.force_weight * force_error.abs().mean() / scale)
        cosine = torch.nn.functional.cosine_similarity(prediction["forces"], batch.targets["forces"], dim=-1)
        metrics = {
            "energy_mae": energy_error.abs().mean(),
            "energy_per_atom_mae": (energy_error / num_atoms).abs().mean(),
            "force_mae": force_error.abs().mean(),
            "force_cosine": cosine.mean(),
        }
        return loss, metrics

    def baseline_metrics(self, train_samples: Iterable[Mapping[str, Any]], eval_samples: Iterable[Mapping[str, Any]],
                         metadata: Mapping[str, Any] | None = None) -> dict[str, float]:
        force_mae = MeanAbsoluteError()

        def with_forces(samples: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
            for sample in samples:  # the zero-force predictor's error, in the same pass
                force_mae.add(sample["forces"])
                yield sample

        energy = mean_energy_baseline(train_samples, with_forces(eval_samples), "energy")
        return {**energy, "force_mae": force_mae.value, "force_cosine": 0.0}
