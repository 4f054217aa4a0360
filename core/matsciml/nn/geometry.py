"""Edge vectors from positions and periodic image shifts: the one geometry formula.

Why here: every model computes its geometry from ``batch.pos`` so that
forces (-dE/dpos) and stress come by autograd; with this one function every
representation and model agrees on the direction of an edge and on how
periodic images enter.

Convention (that of :mod:`matsciml.neighbors`): the edge from sender ``j`` to
receiver ``i`` has the vector ``r_ij = pos[j] + shift_ij - pos[i]``, pointing
from the centre atom ``i`` to its neighbour ``j`` (or to ``j``'s periodic
image); ``shift_ij = image_ij @ cell`` is the Cartesian offset of that image
in Å, zero in molecules.
"""
from __future__ import annotations

import torch


def edge_vectors(pos: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor,
                 shifts: torch.Tensor | None = None) -> torch.Tensor:
    """Vectors from each receiver to its sender's (image) position, in Å.

    Args:
        pos: ``[num_atoms, 3]`` Cartesian positions in Å; gradients flow back
            to it (forces).
        senders: ``[num_edges]`` int64, the neighbour ``j`` of each edge.
        receivers: ``[num_edges]`` int64, the centre atom ``i`` of each edge.
        shifts: ``[num_edges, 3]`` Cartesian periodic-image offset of ``j`` in
            Å, cast to ``pos.dtype``; None when no edge crosses a boundary.

    Returns:
        ``[num_edges, 3]`` ``r_ij = pos[j] + shift_ij - pos[i]``.
    """
    if senders.shape != receivers.shape:
        raise ValueError(f"edge_vectors: senders has shape {tuple(senders.shape)} but receivers has "
                         f"{tuple(receivers.shape)}; pass one sender and one receiver per edge")
    if shifts is None:
        return pos[senders] - pos[receivers]
    if shifts.shape != (senders.shape[0], 3):
        raise ValueError(f"edge_vectors: shifts has shape {tuple(shifts.shape)} but there are "
                         f"{senders.shape[0]} edges; pass a [num_edges, 3] offset in Å per edge")
    return pos[senders] + shifts.to(pos.dtype) - pos[receivers]
