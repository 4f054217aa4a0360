"""The metrics the field reports, computed once for models and baselines alike.

Every metric is a :class:`Metric`: a sum and the number of terms it sums
(structures, atoms or Cartesian components), so a metric over an epoch or
a whole split is the total of the sums over the total of the counts, the
exact mean however the structures were batched. Tasks log them with the
count as Lightning's batch size (an exactly weighted epoch mean), and the
baselines (:mod:`matsciml.tasks.baselines`) accumulate the same
:class:`Metric` values with :class:`MetricTotals`, so a model and its
baselines are measured by one piece of code.

Definitions follow the Open Catalyst Project (OC20) evaluation:

* forces are scored on **free atoms** (:func:`free_atoms`): atoms not held
  fixed in the source calculation, whose forces the relaxation acts on.
  The fixed subsurface atoms of a slab have small, easy forces that would
  make a model look better than it is on the atoms that move;
* force MAE is over Cartesian components (eV/Å), not vector lengths;
* EFwT (energy and forces within threshold) is the share of structures
  whose energy error is below 0.02 eV and whose largest free-atom force
  component error is below 0.03 eV/Å; EwT the share with energy error
  below 0.02 eV.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import torch

from matsciml.batch import Batch

#: OC20's EwT/EFwT thresholds: energy error (eV) and largest force component error (eV/Å)
ENERGY_THRESHOLD = 0.02
FORCE_THRESHOLD = 0.03

#: OC20 tags of slab systems: 0 fixed subsurface atom, 1 surface atom, 2 adsorbate atom
TAG_NAMES = {0: "subsurface", 1: "surface", 2: "adsorbate"}


class Metric(NamedTuple):
    """``total / count``: a sum of ``count`` terms (a count of 0 means "no term in this batch")."""

    total: torch.Tensor
    count: int

    @property
    def value(self) -> torch.Tensor:
        return self.total / max(self.count, 1)


def mean_metric(terms: torch.Tensor) -> Metric:
    """The mean of ``terms`` as a :class:`Metric` (every element one term)."""
    return Metric(terms.sum(), int(terms.numel()))


class MetricTotals:
    """Running totals of :class:`Metric` values over batches; :meth:`values` gives the means."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: Mapping[str, Metric]) -> None:
        for name, metric in metrics.items():
            self.totals[name] = self.totals.get(name, 0.0) + float(metric.total)
            self.counts[name] = self.counts.get(name, 0) + int(metric.count)

    def values(self) -> dict[str, float]:
        """Each metric's mean over everything added (NaN for a metric that never had a term)."""
        return {name: (self.totals[name] / self.counts[name]) if self.counts[name] else math.nan
                for name in self.totals}


def free_atoms(batch: Batch) -> torch.Tensor:
    """``[num_atoms_total]`` bool: the atoms whose forces count.

    Atoms with ``fixed`` False when the dataset has ``fixed``; otherwise,
    when it has OC20 ``tags``, atoms with a tag other than 0 (tag 0 marks
    the fixed subsurface); otherwise every atom.
    """
    fixed = batch.extras.get("fixed")
    if fixed is not None:
        return ~fixed.to(torch.bool)
    tags = batch.extras.get("tags")
    if tags is not None:
        return tags != 0
    return torch.ones(batch.atomic_numbers.shape[0], dtype=torch.bool, device=batch.atomic_numbers.device)


def energy_metrics(predicted: torch.Tensor, reference: torch.Tensor, batch: Batch) -> dict[str, Metric]:
    """``energy_mae`` (eV), ``energy_per_atom_mae`` (eV/atom) and ``ewt`` (share within 0.02 eV)."""
    error = (predicted - reference.to(predicted.dtype)).abs()
    num_atoms = batch.num_atoms.to(error.dtype)
    return {
        "energy_mae": mean_metric(error),
        "energy_per_atom_mae": mean_metric(error / num_atoms),
        "ewt": mean_metric((error < ENERGY_THRESHOLD).to(error.dtype)),
    }


def force_metrics(predicted: torch.Tensor, reference: torch.Tensor, batch: Batch,
                  energy_error: torch.Tensor | None = None) -> dict[str, Metric]:
    """Force metrics on free atoms, on all atoms, per OC20 tag, and EFwT.

    * ``force_mae``: MAE of the Cartesian components of free atoms (eV/Å);
    * ``force_cosine``: mean cosine between predicted and reference force
      vectors of free atoms (0 for a zero vector);
    * ``force_vector_mae``: mean length of the force error vector
      ``|F_pred - F_ref|`` of free atoms (eV/Å);
    * ``force_mae_all``, ``force_cosine_all``: the same over all atoms;
    * ``force_mae_tag0`` / ``tag1`` / ``tag2``: component MAE over the
      atoms of each OC20 tag, when the dataset has tags;
    * ``efwt`` (with ``energy_error``, ``[B]`` absolute energy errors):
      share of structures with energy error < 0.02 eV and every free-atom
      force component error < 0.03 eV/Å.
    """
    reference = reference.to(predicted.dtype)
    error = predicted - reference
    free = free_atoms(batch)
    cosine = torch.nn.functional.cosine_similarity(predicted, reference, dim=-1)
    vector_error = torch.linalg.vector_norm(error, dim=-1)
    metrics = {
        "force_mae": mean_metric(error[free].abs()),
        "force_cosine": mean_metric(cosine[free]),
        "force_vector_mae": mean_metric(vector_error[free]),
        "force_mae_all": mean_metric(error.abs()),
        "force_cosine_all": mean_metric(cosine),
    }
    tags = batch.extras.get("tags")
    if tags is not None:
        for tag in TAG_NAMES:
            metrics[f"force_mae_tag{tag}"] = mean_metric(error[tags == tag].abs())
    if energy_error is not None:
        largest = (error.abs().amax(dim=-1) * free.to(error.dtype))  # fixed atoms do not count
        worst = _max_per_structure(largest, batch)
        within = (energy_error.abs() < ENERGY_THRESHOLD) & (worst < FORCE_THRESHOLD)
        metrics["efwt"] = mean_metric(within.to(error.dtype))
    return metrics


def _max_per_structure(values: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``[B]`` maximum of non-negative per-atom ``values`` over each structure's atoms (0 when none)."""
    out = torch.zeros(batch.num_structures, dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, batch.structure_index, values, reduce="amax", include_self=True)


def scalar_mae(predicted: torch.Tensor, reference: torch.Tensor) -> Metric:
    """MAE of one target, over structures or atoms (every element one term)."""
    return mean_metric((predicted - reference.to(predicted.dtype)).abs())


__all__ = ["ENERGY_THRESHOLD", "FORCE_THRESHOLD", "Metric", "MetricTotals", "TAG_NAMES", "energy_metrics",
           "force_metrics", "free_atoms", "mean_metric", "scalar_mae"]
