"""S2EF: structure to energy and forces (Open Catalyst task).

Forces are ``-dE/dpos`` by autograd, with ``create_graph`` during training
so the force loss trains the weights; they are therefore conservative and
rotate with the structure whenever the backbone's energy is invariant.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from matsciml.batch import Batch
from matsciml.errors import MatscimlError
from matsciml.tasks.energy import EnergyTask
from matsciml.tasks.metrics import Metric, energy_metrics, force_metrics, free_atoms


class S2EFTask(EnergyTask):
    """Energy and forces with a weighted L1 loss.

    Args:
        backbone: a :class:`matsciml.interfaces.Backbone`; its ``atom_features`` are read.
        energy_weight: weight of the energy term (per-atom energy error / scale).
        force_weight: weight of the force term (force component error / scale).
        force_loss_atoms: ``"free"`` (default, as OC20 trains): the force
            loss covers the atoms not held fixed (see
            :func:`~matsciml.tasks.metrics.free_atoms`); ``"all"``: every atom.
            Fixed subsurface atoms have small forces that are easy to fit and
            would otherwise dilute the loss of the atoms that move.
        reference_energies: fit per-element reference energies on the training set.
        head_hidden_dim, head_layers, activation: the per-atom energy MLP.
        optimizer, scheduler: see :class:`~matsciml.tasks.base.BaseTask`.

    Metrics (:func:`~matsciml.tasks.metrics.force_metrics`): energy MAE,
    energy per atom MAE, force MAE, cosine and vector MAE on free atoms, the
    same over all atoms, force MAE per OC20 tag, and EFwT.
    """

    needs_grad_in_eval = True
    progress_metrics = ("energy_mae", "force_mae")
    higher_is_better = ("force_cosine", "force_cosine_all", "efwt")

    def __init__(self, backbone: torch.nn.Module, energy_weight: float = 1.0, force_weight: float = 3.0,
                 force_loss_atoms: str = "free", reference_energies: bool = True, head_hidden_dim: int = 64,
                 head_layers: int = 1, activation: str = "silu", optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None) -> None:
        super().__init__(backbone, reference_energies, head_hidden_dim, head_layers, activation, optimizer, scheduler)
        if force_loss_atoms not in ("free", "all"):
            raise MatscimlError(f"task.force_loss_atoms={force_loss_atoms!r} is not valid: expected free (atoms "
                                f"not held fixed, as OC20 trains) or all")
        self.energy_weight = energy_weight
        self.force_weight = force_weight
        self.force_loss_atoms = force_loss_atoms

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"energy": [B], "forces": [N, 3]}``; needs gradients enabled."""
        pos = batch.pos
        if not pos.requires_grad:
            pos.requires_grad_(True)
        energy = self.energy(batch)
        (gradient,) = torch.autograd.grad(energy.sum(), pos, create_graph=self.training)
        return {"energy": energy, "forces": -gradient}

    def loss(self, batch: Batch, prediction: dict[str, torch.Tensor]) -> torch.Tensor:
        scale = self.energy_head.scale
        num_atoms = batch.num_atoms.to(prediction["energy"].dtype)
        energy_error = prediction["energy"] - batch.targets["energy"]
        force_error = (prediction["forces"] - batch.targets["forces"]).abs()
        if self.force_loss_atoms == "free":
            free = free_atoms(batch)
            # a batch of fully fixed structures has no force term (not a NaN)
            force_term = force_error[free].sum() / max(int(free.sum()) * 3, 1)
        else:
            force_term = force_error.mean()
        return (self.energy_weight * (energy_error / num_atoms).abs().mean() / scale
                + self.force_weight * force_term / scale)

    def metrics(self, batch: Batch, prediction: Mapping[str, torch.Tensor]) -> dict[str, Metric]:
        energy = energy_metrics(prediction["energy"], batch.targets["energy"], batch)
        energy.pop("ewt")  # S2EF reports EFwT, which includes it
        error = (prediction["energy"] - batch.targets["energy"].to(prediction["energy"].dtype)).abs()
        return {**energy, **force_metrics(prediction["forces"], batch.targets["forces"], batch, error)}

    def baseline_kinds(self, metadata: Mapping[str, Any] | None = None) -> dict[str, str]:
        return {"energy": "extensive", "forces": "forces"}
