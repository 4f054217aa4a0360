"""Rotation invariants of geometric products of neighbour vectors, written for padded clouds.

Why here and not the author's package: GALA's layers see each tuple of
neighbours only through rotation-invariant attributes of the geometric
product of its vectors. For rank 2 the product of two vectors is
``r_i r_j = r_i . r_j + r_i ^ r_j`` (a scalar and a bivector), whose
invariants are the scalar and the bivector's magnitude ``|r_i x r_j|``;
the "partial" and "full" modes add the invariants of the intermediate
products, ``|r_i|`` (and ``|r_j|``). Computed directly like this they cost
``[C, K, K]`` numbers per invariant, never a ``[C, K, K, 4]`` multivector.

Every norm here is :func:`safe_norm`: empty slots of a cloud hold zero
vectors and ``r_i x r_i = 0`` on the diagonal, where ``sqrt`` has an
infinite slope; a NaN born there would poison every gradient even where it
is multiplied by zero.
"""
from __future__ import annotations

import torch

INVARIANT_MODES = ("single", "partial", "full")
SAFE_NORM_EPS = 1e-6
"""Added under the square root as eps**2 (and subtracted after): the norm of a zero vector is 0 with zero slope."""


def safe_norm(vectors: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``sqrt(|v|^2 + eps^2) - eps``: the Euclidean norm, smooth and with finite gradients at ``v = 0``.

    Differs from ``|v|`` by less than ``eps`` (1e-6 in the units of ``vectors``).
    """
    return torch.sqrt((vectors * vectors).sum(dim) + SAFE_NORM_EPS ** 2) - SAFE_NORM_EPS


def num_invariants(rank: int, invariant_mode: str, include_normalized_products: bool) -> int:
    """How many invariants :func:`tuple_invariants` returns per tuple."""
    if rank == 1:
        return 1
    count = {"single": 2, "partial": 3, "full": 4}[invariant_mode]
    return count + (2 if include_normalized_products else 0)


def tuple_invariants(vectors: torch.Tensor, rank: int, invariant_mode: str,
                     include_normalized_products: bool) -> torch.Tensor:
    """Invariants of the geometric products over every tuple of a cloud's slots.

    Args:
        vectors: ``[C, K, 3]`` neighbour vectors (zero in empty slots), in Å.
        rank: 1 (tuples are single slots: ``|r_j|``) or 2 (pairs ``(i, j)``).
        invariant_mode: for rank 2, ``single``: ``[r_i.r_j, |r_i^r_j|]``;
            ``partial``: ``|r_i|`` first (the product on the way, ``r_i``);
            ``full``: ``[r_i.r_j, |r_i^r_j|, |r_i|, |r_j|]``, all the
            sub-products of the pair.
        include_normalized_products: for rank 2, also the invariants of the
            normalised product ``r_i r_j / (|r_i||r_j|)``: the cosine and sine
            of the angle. (The normalised single vectors have norm 1, a
            constant, so they are left out.)

    Returns:
        rank 1: ``[C, K, Q]``; rank 2: ``[C, K, K, Q]`` with ``Q =``
        :func:`num_invariants`; finite everywhere, empty slots included.
    """
    norms = safe_norm(vectors)  # [C, K]
    if rank == 1:
        return norms[..., None]
    if rank != 2:
        raise ValueError(f"tuple_invariants: rank must be 1 or 2, got {rank!r}")
    if invariant_mode not in INVARIANT_MODES:
        raise ValueError(f"tuple_invariants: invariant_mode must be one of {', '.join(INVARIANT_MODES)}, "
                         f"got {invariant_mode!r}")
    left, right = vectors[:, :, None, :], vectors[:, None, :, :]
    # element-wise rather than einsum/bmm: batched 3-wide products are slow on CPU, in double backward most
    dot = (left * right).sum(-1)  # scalar part of r_i r_j
    wedge = safe_norm(torch.linalg.cross(left.expand(-1, -1, vectors.shape[1], -1),
                                         right.expand(-1, vectors.shape[1], -1, -1)))  # bivector magnitude
    norm_i = norms[:, :, None].expand_as(dot)
    norm_j = norms[:, None, :].expand_as(dot)
    parts = {"single": [dot, wedge], "partial": [norm_i, dot, wedge],
             "full": [dot, wedge, norm_i, norm_j]}[invariant_mode]
    if include_normalized_products:
        # |r_i r_j| = |r_i||r_j|; clamped only for empty slots (real neighbours are far from 0)
        scale = 1.0 / (norm_i * norm_j).clamp(min=SAFE_NORM_EPS)
        parts += [dot * scale, wedge * scale]
    return torch.stack(parts, dim=-1)
