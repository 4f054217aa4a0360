"""The E(n)-GNN backbone: atom types and geometry in, invariant per-atom embeddings out.

Satorras, Hoogeboom, Welling, "E(n) Equivariant Graph Neural Networks",
ICML 2021, in its invariant form (no coordinate update), on the
``dgl-graph`` representation of matsciml-dgl. The backbone stops at per-atom
features: reading them out into energies or properties (heads, sums over
atoms, normalisation) is the task's job, so one backbone serves every task.
The shared pieces (element embedding, edge vectors, Gaussian radial basis,
cosine envelope, activations) come from :mod:`matsciml.nn`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from matsciml.interfaces import BackboneOutput
from matsciml.nn import CosineCutoff, ElementEmbedding, GaussianRadialBasis, edge_vectors, make_activation
from matsciml_egnn.blocks import EGNNLayer

if TYPE_CHECKING:
    from matsciml.batch import Batch


class EGNN(nn.Module):
    """E(n)-equivariant graph neural network (invariant node features).

    Every geometric quantity is computed from ``batch.pos`` and the graph's
    periodic shifts, so ``-d(sum of energies)/d(batch.pos)`` gives forces.
    The output is invariant to rotations, translations and reflections,
    equivariant to permutations of the atoms, and a smooth function of the
    positions (cosine cutoff envelope).

    Args:
        hidden_dim: width of atom embeddings, messages and hidden layers;
            also the output width ``embedding_dim``.
        num_layers: number of message-passing (E_GCL) layers.
        activation: a name of :data:`matsciml.nn.ACTIVATIONS`; ``"silu"`` (paper).
        attention: gate each message with e_ij = sigmoid(Linear(m_ij)), the
            paper's soft edge inference (used for QM9).
        residual: residual node update h' = h + phi_h(h, m).
        layer_norm: LayerNorm after each layer (the paper uses none).
        cutoff_radius: radius in Å where the message envelope reaches zero;
            at most the cutoff the ``dgl-graph`` representation used (6 Å by
            default), or the energy jumps when atoms cross the graph's cutoff.
        num_radial: distances enter the edge network as this many Gaussian
            radial basis functions; 0 uses the paper's single squared distance,
            which trains forces much more slowly (see :class:`matsciml.nn.GaussianRadialBasis`).
            The Gaussians are centred evenly on [0, cutoff_radius] with standard
            deviation ``cutoff_radius / num_radial``.

    The defaults (64 wide, 3 layers, SiLU, attention, residual, no
    normalisation) give 85,315 parameters.
    """

    representation = "dgl-graph"
    """The representation whose batches ``forward`` takes (matsciml-dgl)."""

    structure_embedding_dim = None
    """No per-structure features: tasks pool or sum the per-atom ones."""

    def __init__(self, hidden_dim: int = 64, num_layers: int = 3, activation: str = "silu",
                 attention: bool = True, residual: bool = True, layer_norm: bool = False,
                 cutoff_radius: float = 6.0, num_radial: int = 16) -> None:
        super().__init__()
        if hidden_dim < 1 or num_layers < 1:
            raise ValueError(f"hidden_dim and num_layers must be positive, got {hidden_dim} and {num_layers}")
        make_activation(activation)  # fail here, with the known names, not deep inside a layer
        self.embedding_dim = hidden_dim
        self.cutoff_radius = float(cutoff_radius)
        self.embedding = ElementEmbedding(hidden_dim)
        self.cutoff = CosineCutoff(cutoff_radius)
        # width sqrt(2) * spacing in exp(-((d - mu) / width)^2): a standard deviation of r_c / num_radial
        self.radial_basis = (GaussianRadialBasis(num_radial, start=0.0, stop=cutoff_radius,
                                                 width=math.sqrt(2.0) * cutoff_radius / num_radial)
                             if num_radial > 0 else None)
        self.layers = nn.ModuleList(
            EGNNLayer(hidden_dim, activation=activation, attention=attention,
                      residual=residual, layer_norm=layer_norm, num_radial=num_radial)
            for _ in range(num_layers)
        )

    def forward(self, batch: Batch) -> BackboneOutput:
        """Per-atom embeddings ``atom_features`` ``[num_atoms_total, embedding_dim]``, in batch atom order.

        Args:
            batch: a :class:`matsciml.batch.Batch` whose ``inputs`` is a batched
                ``dgl.DGLGraph`` (edges j -> i, ``edata["shift"]`` ``[num_edges, 3]``
                in Å); positions come from ``batch.pos``, elements from
                ``batch.atomic_numbers``.
        """
        graph = batch.inputs
        pos = batch.pos
        src, dst = graph.edges()
        vectors = edge_vectors(pos, src, dst, graph.edata["shift"])  # [num_edges, 3]
        squared_distance = (vectors * vectors).sum(dim=-1)  # [num_edges]
        distance = torch.sqrt(squared_distance)  # [num_edges]
        envelope = self.cutoff(distance)  # [num_edges]
        if self.radial_basis is not None:
            distance_feature = self.radial_basis(distance)  # [num_edges, num_radial]
        else:
            # the paper's ||r_ij||^2, in units of r_c^2 to keep it of order one: [num_edges, 1]
            distance_feature = (squared_distance / (self.cutoff_radius * self.cutoff_radius))[:, None]
        h = self.embedding(batch.atomic_numbers.to(pos.device))  # [num_atoms, H]
        # The parameters' dtype rules (a float32 model may get float64 positions);
        # the casts are differentiable, so forces still reach batch.pos.
        distance_feature = distance_feature.to(h.dtype)
        envelope = envelope.to(h.dtype)
        for layer in self.layers:
            h = layer(graph, h, distance_feature, envelope)
        return BackboneOutput(atom_features=h)
