"""The E(n)-GNN backbone: atom types and geometry in, invariant per-atom embeddings out.

Satorras, Hoogeboom, Welling, "E(n) Equivariant Graph Neural Networks",
ICML 2021, in its invariant form (no coordinate update), on the
``dgl-graph`` representation of matsciml-dgl. The backbone stops at per-atom
features: reading them out into energies or properties (heads, sums over
atoms, normalisation) is the task's job, so one backbone serves every task.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from matsciml_egnn.blocks import EGNNLayer, make_activation
from matsciml_egnn.embedding import AtomTypeEmbedding
from matsciml_egnn.radial import CosineCutoff, GaussianRadialBasis, edge_vectors, scaled_squared_distance


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
        activation: ``"silu"`` (paper) or ``"relu"``.
        attention: gate each message with e_ij = sigmoid(Linear(m_ij)), the
            paper's soft edge inference (used for QM9).
        residual: residual node update h' = h + phi_h(h, m).
        layer_norm: LayerNorm after each layer (the paper uses none).
        cutoff_radius: radius in Å where the message envelope reaches zero;
            at most the cutoff the ``dgl-graph`` representation used (6 Å by
            default), or the energy jumps when atoms cross the graph's cutoff.
        num_radial: distances enter the edge network as this many Gaussian
            radial basis functions; 0 uses the paper's single squared distance,
            which trains forces much more slowly (see ``radial.GaussianRadialBasis``).

    The defaults (64 wide, 3 layers, SiLU, attention, residual, no
    normalisation) give 85,315 parameters.
    """

    representation = "dgl-graph"
    """The representation whose batches ``forward`` takes (matsciml-dgl)."""

    def __init__(self, hidden_dim: int = 64, num_layers: int = 3, activation: str = "silu",
                 attention: bool = True, residual: bool = True, layer_norm: bool = False,
                 cutoff_radius: float = 6.0, num_radial: int = 16) -> None:
        super().__init__()
        if hidden_dim < 1 or num_layers < 1:
            raise ValueError(f"hidden_dim and num_layers must be positive, got {hidden_dim} and {num_layers}")
        make_activation(activation)  # fail here, with the known names, not deep inside a layer
        self.embedding_dim = hidden_dim
        self.cutoff_radius = float(cutoff_radius)
        self.embedding = AtomTypeEmbedding(hidden_dim)
        self.cutoff = CosineCutoff(cutoff_radius)
        self.radial_basis = GaussianRadialBasis(cutoff_radius, num_radial) if num_radial > 0 else None
        self.layers = nn.ModuleList(
            EGNNLayer(hidden_dim, activation=activation, attention=attention,
                      residual=residual, layer_norm=layer_norm, num_radial=num_radial)
            for _ in range(num_layers)
        )

    def forward(self, batch: Any) -> torch.Tensor:
        """Per-atom embeddings ``[num_atoms_total, embedding_dim]``, in batch atom order.

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
            distance_feature = scaled_squared_distance(squared_distance, self.cutoff_radius)[:, None]
        h = self.embedding(batch.atomic_numbers.to(pos.device))  # [num_atoms, H]
        # The parameters' dtype rules (a float32 model may get float64 positions);
        # the casts are differentiable, so forces still reach batch.pos.
        distance_feature = distance_feature.to(h.dtype)
        envelope = envelope.to(h.dtype)
        for layer in self.layers:
            h = layer(graph, h, distance_feature, envelope)
        return h
