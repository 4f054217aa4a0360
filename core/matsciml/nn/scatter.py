"""Per-structure reductions of per-atom values: sums (energies) and means (pooling).

Why here: every task reads per-atom outputs into per-structure quantities
(total energy = sum of atomic energies, a mean-pooled embedding), and models
with a global state need the same reductions; one ``index_add_`` each, no
Python loop over atoms or structures.
"""
from __future__ import annotations

import torch


def sum_per_structure(values: torch.Tensor, structure_index: torch.Tensor, num_structures: int) -> torch.Tensor:
    """Per-structure totals of per-atom values.

    Args:
        values: ``[num_atoms_total, ...]`` one row per atom of the batch.
        structure_index: ``[num_atoms_total]`` int64, the structure of each atom
            (0 .. num_structures - 1, any order).
        num_structures: B, the number of structures (rows of the result; a
            structure without atoms gets zeros).

    Returns:
        ``[num_structures, ...]``, differentiable with respect to ``values``.
    """
    if values.shape[0] != structure_index.shape[0]:
        raise ValueError(f"sum_per_structure: values has {values.shape[0]} rows but structure_index names "
                         f"{structure_index.shape[0]} atoms; pass one row per atom of the batch")
    totals = values.new_zeros((num_structures, *values.shape[1:]))
    return totals.index_add_(0, structure_index, values)


def mean_per_structure(values: torch.Tensor, structure_index: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
    """Per-structure averages of per-atom values.

    Args:
        values: ``[num_atoms_total, ...]`` one row per atom of the batch.
        structure_index: ``[num_atoms_total]`` int64, the structure of each atom.
        num_atoms: ``[num_structures]`` atoms per structure (each at least 1).

    Returns:
        ``[num_structures, ...]``, differentiable with respect to ``values``.
    """
    totals = sum_per_structure(values, structure_index, int(num_atoms.shape[0]))
    return totals / num_atoms.to(values.dtype).view(-1, *([1] * (values.dim() - 1)))
