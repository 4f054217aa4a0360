"""Extensive energies: a sum of per-atom contributions.

``E = sum_i (scale * head(h_i) + shift + reference[Z_i])``: the head learns
a dimensionless per-atom correction; ``reference`` (optional per-element
energies fitted by least squares on the training set), ``shift`` and
``scale`` come from training statistics. Because it is a sum over atoms the
energy scales with system size and is exact for supercells. The head reads
the backbone's ``atom_features`` only: an energy is always a sum over
atoms, whatever per-structure features a backbone also has.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from matsciml.batch import Batch
from matsciml.data.schema import MAX_ATOMIC_NUMBER
from matsciml.nn.scatter import sum_per_structure
from matsciml.tasks.base import BaseTask
from matsciml.tasks.heads import MLPHead
from matsciml.tasks.statistics import energy_statistics


class PerAtomEnergy(nn.Module):
    """Per-atom embeddings ``[N, embedding_dim]`` -> structure energies ``[B]`` (eV)."""

    def __init__(self, embedding_dim: int, hidden_dim: int = 64, num_hidden_layers: int = 1,
                 activation: str = "silu") -> None:
        super().__init__()
        self.head = MLPHead(embedding_dim, 1, hidden_dim, num_hidden_layers, activation)
        self.register_buffer("references", torch.zeros(MAX_ATOMIC_NUMBER + 1))
        self.register_buffer("shift", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))

    def set_statistics(self, statistics: Mapping[str, Any]) -> None:
        self.references.copy_(torch.as_tensor(statistics["references"], dtype=self.references.dtype))
        self.shift.fill_(float(statistics["shift"]))
        self.scale.fill_(float(statistics["scale"]))

    def forward(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        atom_energy = self.head(embeddings).squeeze(-1) * self.scale + self.shift
        atom_energy = atom_energy + self.references.to(atom_energy.dtype)[batch.atomic_numbers]
        return sum_per_structure(atom_energy, batch.structure_index, batch.num_structures)


def fit_energy_statistics(head: PerAtomEnergy, samples: Iterable[Mapping[str, Any]], key: str,
                          use_references: bool) -> dict[str, Any]:
    statistics = energy_statistics(samples, key, use_references)
    head.set_statistics(statistics)
    return statistics


class EnergyTask(BaseTask):
    """What S2EF and IS2RE share: an extensive energy read out by :class:`PerAtomEnergy`.

    Args:
        backbone: a :class:`matsciml.interfaces.Backbone`; its ``atom_features`` are read.
        reference_energies: fit per-element reference energies on the training set.
        head_hidden_dim, head_layers, activation: the per-atom energy MLP.
        optimizer, scheduler: see :class:`~matsciml.tasks.base.BaseTask`.
    """

    #: the sample key of the energy this task learns
    energy_key: str = "energy"

    def __init__(self, backbone: torch.nn.Module, reference_energies: bool = True, head_hidden_dim: int = 64,
                 head_layers: int = 1, activation: str = "silu", optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None) -> None:
        super().__init__(backbone, optimizer, scheduler)
        self.reference_energies = reference_energies
        self.energy_head = PerAtomEnergy(self.embedding_dim, head_hidden_dim, head_layers, activation)

    def fit_statistics(self, samples: Iterable[Mapping[str, Any]],
                       metadata: Mapping[str, Any] | None = None) -> None:
        fit_energy_statistics(self.energy_head, samples, self.energy_key, self.reference_energies)
        super().fit_statistics(samples, metadata)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.predict(batch)

    def energy(self, batch: Batch) -> torch.Tensor:
        """Structure energies ``[B]`` in eV."""
        return self.energy_head(self.features(batch).atom_features, batch)
