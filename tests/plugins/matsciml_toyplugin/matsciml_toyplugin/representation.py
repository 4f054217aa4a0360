"""The ``toy-points`` representation: atoms with their periodic radius neighbours, as flat index arrays.

What a third-party representation must do, in a few lines: find neighbours
with the core's one periodic search (:func:`matsciml.neighbors.radius_graph`,
no DGL), and collate a real :class:`matsciml.batch.Batch` with
:func:`matsciml.batch.collate_structures`, passing its own model input as
``inputs``. Positions stay out of ``inputs``: models compute geometry from
``batch.pos``, so tasks get forces by autograd.

``batch.inputs`` (what ``toy-mlp`` reads):

* ``senders``, ``receivers``: ``[num_edges]`` int64 atom indices into the
  batch (offset per structure), the edge ``j -> i`` for every neighbour
  closer than ``cutoff_radius``, periodic images included;
* ``shifts``: ``[num_edges, 3]`` float (the representation's dtype), the
  Cartesian offset (Å) of the sender's periodic image, so the edge vector
  is ``pos[senders] + shifts - pos[receivers]``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from matsciml.batch import Batch, collate_structures
from matsciml.neighbors import radius_graph


class ToyItem(NamedTuple):
    """One sample and its neighbour list (numpy arrays)."""

    sample: dict[str, Any]
    senders: np.ndarray  # [num_edges] int64
    receivers: np.ndarray  # [num_edges] int64
    shifts: np.ndarray  # [num_edges, 3] float64, Å


class ToyPoints:
    """Sample -> neighbour list; a list of those -> :class:`~matsciml.batch.Batch`.

    Args:
        cutoff_radius: neighbour cutoff in Å (tied to the ``toy-mlp`` model's).
        dtype: ``"float32"`` or ``"float64"``: positions, shifts, cell and targets.
    """

    name = "toy-points"

    def __init__(self, cutoff_radius: float = 4.0, dtype: str = "float32") -> None:
        self.cutoff_radius = float(cutoff_radius)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]

    def __call__(self, sample: dict[str, Any]) -> ToyItem:
        cell = sample.get("cell")
        senders, receivers, images = radius_graph(sample["pos"], cell, sample["pbc"], self.cutoff_radius)
        shifts = images @ np.asarray(cell, dtype=np.float64) if cell is not None else np.zeros(images.shape)
        return ToyItem(sample, senders, receivers, shifts)

    def collate(self, items: Sequence[ToyItem]) -> Batch:
        sizes = np.array([len(item.sample["atomic_numbers"]) for item in items], dtype=np.int64)
        offsets = np.repeat(np.cumsum(sizes) - sizes, [len(item.senders) for item in items])
        inputs = {
            "senders": torch.from_numpy(np.concatenate([item.senders for item in items]) + offsets),
            "receivers": torch.from_numpy(np.concatenate([item.receivers for item in items]) + offsets),
            "shifts": torch.from_numpy(np.concatenate([item.shifts for item in items])).to(self.dtype),
        }
        return collate_structures([item.sample for item in items], inputs=inputs, dtype=self.dtype)
