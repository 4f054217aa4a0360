"""DGL-free building blocks every model plugin shares.

Why this package exists: radial bases, cutoff envelopes, edge vectors,
per-structure reductions and padding, activations and the element embedding
are the same formulas in every backbone of the field. Written once here,
they behave identically in E(n)-GNN, MEGNet, a point-cloud model or a
third-party plugin, and a fix reaches all of them. Nothing here imports DGL
or a model; everything works on plain tensors with torch 2.0 or later.

One concept per module:

* :mod:`~matsciml.nn.activations`: the activation table (``silu``, ``relu``,
  ``gelu``, ``tanh``, ``softplus2``) and :func:`make_activation`;
* :mod:`~matsciml.nn.embedding`: a learned vector per element;
* :mod:`~matsciml.nn.geometry`: edge vectors from positions and periodic shifts;
* :mod:`~matsciml.nn.radial`: Gaussian radial basis of distances;
* :mod:`~matsciml.nn.cutoffs`: smooth envelopes that vanish at the cutoff;
* :mod:`~matsciml.nn.scatter`: per-structure sums and means of per-atom values;
* :mod:`~matsciml.nn.padding`: per-atom rows to padded per-structure blocks
  with a mask, and back.

Conventions: distances and positions in Å; an edge runs from sender ``j`` to
receiver ``i`` with vector ``pos[j] + shift - pos[i]`` (as in
:mod:`matsciml.neighbors`); the atoms of one structure are contiguous in a
batch, in structure order (:class:`matsciml.batch.Batch`).
"""
from __future__ import annotations

from matsciml.nn.activations import ACTIVATIONS, ShiftedSoftplus, make_activation
from matsciml.nn.cutoffs import CosineCutoff, PolynomialEnvelope
from matsciml.nn.embedding import ElementEmbedding
from matsciml.nn.geometry import edge_vectors
from matsciml.nn.padding import pad_per_structure, unpad_per_structure
from matsciml.nn.radial import GaussianRadialBasis
from matsciml.nn.scatter import mean_per_structure, sum_per_structure

__all__ = [
    "ACTIVATIONS", "CosineCutoff", "ElementEmbedding", "GaussianRadialBasis", "PolynomialEnvelope",
    "ShiftedSoftplus", "edge_vectors", "make_activation", "mean_per_structure", "pad_per_structure",
    "sum_per_structure", "unpad_per_structure",
]
