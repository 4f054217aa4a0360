"""Per-atom rows to padded per-structure blocks with a mask, and back.

Why: graph models keep a batch as one long list of atoms (``[N, ...]`` with
a structure index), while point-cloud and attention models work on dense
``[B, max_atoms, ...]`` blocks where structures shorter than the longest are
padded and a boolean mask marks the real atoms. These two functions convert
between the layouts with one scatter and one gather, no loop over atoms.

Layout assumed (that of :class:`matsciml.batch.Batch`): the atoms of a
structure are contiguous and the structures follow each other in order, so
``structure_index`` is non-decreasing and atom ``n`` is atom
``n - (atoms of earlier structures)`` of its structure.
"""
from __future__ import annotations

import torch


def pad_per_structure(values: torch.Tensor, structure_index: torch.Tensor, num_atoms: torch.Tensor,
                      fill_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded per-structure blocks of per-atom rows.

    Args:
        values: ``[num_atoms_total, ...]`` one row per atom, structures contiguous.
        structure_index: ``[num_atoms_total]`` int64, non-decreasing structure of each atom.
        num_atoms: ``[num_structures]`` int64 atoms per structure (summing to
            ``num_atoms_total``).
        fill_value: what padded slots hold.

    Returns:
        ``(padded, mask)``: ``padded`` ``[num_structures, max_atoms, ...]`` with
        atom ``k`` of structure ``b`` at ``padded[b, k]``, differentiable with
        respect to ``values``; ``mask`` ``[num_structures, max_atoms]`` bool,
        True where a slot holds a real atom.
    """
    if values.shape[0] != structure_index.shape[0]:
        raise ValueError(f"pad_per_structure: values has {values.shape[0]} rows but structure_index names "
                         f"{structure_index.shape[0]} atoms; pass one row per atom of the batch")
    num_structures = int(num_atoms.shape[0])
    max_atoms = int(num_atoms.max()) if num_structures else 0
    num_atoms = num_atoms.to(structure_index.device)
    first_atom = torch.cumsum(num_atoms, 0) - num_atoms  # [B]: row of each structure's first atom
    slot = torch.arange(values.shape[0], device=structure_index.device) - first_atom[structure_index]  # [N]
    mask = torch.arange(max_atoms, device=num_atoms.device)[None, :] < num_atoms[:, None]  # [B, max_atoms]
    padded = values.new_full((num_structures * max_atoms, *values.shape[1:]), fill_value)
    padded = padded.index_copy(0, structure_index * max_atoms + slot, values)
    return padded.view(num_structures, max_atoms, *values.shape[1:]), mask


def unpad_per_structure(padded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The per-atom rows of padded blocks, in batch atom order (inverse of :func:`pad_per_structure`).

    Args:
        padded: ``[num_structures, max_atoms, ...]``.
        mask: ``[num_structures, max_atoms]`` bool, True on real atoms.

    Returns:
        ``[num_atoms_total, ...]`` the rows where ``mask`` is True, structure
        by structure; differentiable with respect to ``padded``.
    """
    if padded.shape[:2] != mask.shape:
        raise ValueError(f"unpad_per_structure: padded has leading shape {tuple(padded.shape[:2])} but the "
                         f"mask is {tuple(mask.shape)}; pass the mask pad_per_structure returned with it")
    return padded[mask]
