"""A brute-force neighbour list: the reference every representation is checked against.

Slow (it enumerates every periodic image within reach of every pair) and
obviously right, for tests of fast neighbour searches and of models that
need graphs built without any plugin.
"""
from __future__ import annotations

import itertools
import math

import numpy as np


def _complete_basis(cell: np.ndarray | None, pbc: np.ndarray) -> np.ndarray:
    """Periodic cell vectors plus orthonormal vectors for the open directions."""
    basis = np.eye(3) if cell is None else np.array(cell, dtype=np.float64)
    periodic = basis[pbc]
    if len(periodic) == 3:
        return basis
    if len(periodic) == 0:
        return np.eye(3)
    _, _, vt = np.linalg.svd(periodic)  # rows past the rank span the complement
    basis[~pbc] = vt[len(periodic):]
    return basis


def brute_force_neighbors(pos: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray,
                          cutoff_radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (sender j, receiver i, image S) with ``|pos[j] + S @ cell - pos[i]| < cutoff_radius``.

    Images along periodic direction k run over ``|S_k| <= n_k`` with
    ``n_k = ceil(cutoff / plane spacing_k + spread of fractional coordinate k)``,
    which covers positions not wrapped into the cell. Self-pairs with a zero
    image are excluded; an atom's own periodic images are included.

    Returns:
        ``(senders [E], receivers [E], images [E, 3], lengths [E])``, int64 and float64.
    """
    pos = np.asarray(pos, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    basis = _complete_basis(None if cell is None else np.asarray(cell, dtype=np.float64), pbc)
    reciprocal = np.linalg.inv(basis)  # column k: reciprocal vector k
    fractional = pos @ reciprocal
    ranges = []
    for k in range(3):
        if pbc[k]:
            spacing = 1.0 / np.linalg.norm(reciprocal[:, k])
            reach = math.ceil(cutoff_radius / spacing + np.ptp(fractional[:, k]))
            ranges.append(range(-reach, reach + 1))
        else:
            ranges.append(range(1))
    images = np.array(list(itertools.product(*ranges)), dtype=np.int64)  # [num_images, 3]
    offsets = images @ basis
    # [receiver, sender, image, 3]
    vectors = pos[None, :, None, :] + offsets[None, None, :, :] - pos[:, None, None, :]
    lengths = np.linalg.norm(vectors, axis=-1)
    self_pair = np.eye(len(pos), dtype=bool)[:, :, None] & np.all(images == 0, axis=1)[None, None, :]
    receivers, senders, image_index = np.nonzero((lengths < cutoff_radius) & ~self_pair)
    return (senders.astype(np.int64), receivers.astype(np.int64), images[image_index],
            lengths[receivers, senders, image_index])
