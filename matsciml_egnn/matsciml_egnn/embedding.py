"""Atom-type embedding: the initial node features h_i^0 of the E(n)-GNN.

The paper embeds one-hot atom types with a linear layer; a lookup table over
atomic numbers is the same map with fewer operations.
"""
from __future__ import annotations

import torch
from torch import nn

MAX_ATOMIC_NUMBER = 118
"""Elements 1 (H) to 118 (Og) each get one learned vector."""


class AtomTypeEmbedding(nn.Module):
    """Learned vector per element.

    Args:
        embedding_dim: width of the vectors (the model's hidden width).

    Shapes:
        atomic_numbers ``[num_atoms]`` int64 in 1..118 -> ``[num_atoms, embedding_dim]``.
    """

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        # Row k holds element k + 1: no unused row for the atomic number 0.
        self.table = nn.Embedding(MAX_ATOMIC_NUMBER, embedding_dim)

    def forward(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        # An atomic number of 0 or > 118 indexes outside the table, and
        # nn.Embedding raises an IndexError for it rather than guessing.
        return self.table(atomic_numbers - 1)
