"""The toy backbone: one continuous-filter convolution over the ``toy-points`` neighbours, then an MLP.

Small on purpose (a test fixture), yet it keeps every promise of the
backbone contract (README, "Writing a plugin"): it reads a
:class:`matsciml.batch.Batch`, computes every geometric quantity from
``batch.pos`` with the shared building blocks of :mod:`matsciml.nn`, and
returns a :class:`matsciml.interfaces.BackboneOutput`. Its atom features
are invariant to rotations and translations, equivariant to permutations,
smooth in the positions (cosine envelope) and local, so tasks built on it
get conservative forces and extensive energies.
"""
from __future__ import annotations

import torch
from torch import nn

from matsciml.batch import Batch
from matsciml.interfaces import BackboneOutput
from matsciml.nn import CosineCutoff, ElementEmbedding, GaussianRadialBasis, edge_vectors


class ToyBackbone(nn.Module):
    """Per-atom features of width ``hidden_dim`` from a ``toy-points`` batch.

    ``h_i = e(Z_i) + sum_j W(rbf(d_ij)) * f_c(d_ij) * e(Z_j)``, then
    ``num_layers`` residual SiLU layers.

    Args:
        hidden_dim: width of the features (``embedding_dim``).
        num_layers: residual layers after the convolution.
        cutoff_radius: Å, where the envelope reaches zero; tied to the
            representation's cutoff (the spec's ``tied_params``).
        num_radial: Gaussians of the distance expansion.

    Parameters: 118*h (elements) + (K*h + h) (filter) + L*(h*h + h).
    """

    representation = "toy-points"
    structure_embedding_dim = None

    def __init__(self, hidden_dim: int = 16, num_layers: int = 2, cutoff_radius: float = 4.0,
                 num_radial: int = 8) -> None:
        super().__init__()
        self.embedding_dim = hidden_dim
        self.embed = ElementEmbedding(hidden_dim)
        self.radial = GaussianRadialBasis(num_radial, 0.0, cutoff_radius, cutoff_radius / num_radial)
        self.envelope = CosineCutoff(cutoff_radius)
        self.filter = nn.Linear(num_radial, hidden_dim)
        self.layers = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers))

    def forward(self, batch: Batch) -> BackboneOutput:
        senders, receivers = batch.inputs["senders"], batch.inputs["receivers"]
        vectors = edge_vectors(batch.pos, senders, receivers, batch.inputs["shifts"])  # [num_edges, 3]
        distances = torch.linalg.vector_norm(vectors, dim=-1)  # [num_edges]
        h = self.embed(batch.atomic_numbers)  # [num_atoms, H]
        weights = self.filter(self.radial(distances).to(h.dtype))  # [num_edges, H]
        weights = weights * self.envelope(distances).to(h.dtype)[:, None]
        h = h + torch.zeros_like(h).index_add(0, receivers, weights * h[senders])
        for layer in self.layers:
            h = h + nn.functional.silu(layer(h))
        return BackboneOutput(atom_features=h)


class ToyTensorBackbone(ToyBackbone):
    """Breaks the contract on purpose: ``forward`` returns the bare atom-feature tensor.

    Backbones did that before :class:`~matsciml.interfaces.BackboneOutput`;
    the pipeline must refuse it when the run is built, naming the model.
    """

    def forward(self, batch: Batch) -> torch.Tensor:  # type: ignore[override]
        return super().forward(batch).atom_features
