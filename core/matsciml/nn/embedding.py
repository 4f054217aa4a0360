"""A learned vector per chemical element: the first features of most backbones.

Embedding one-hot atom types with a linear layer (as papers often write it)
is the same map as a lookup table over atomic numbers, with fewer
operations. The table has one row per element the sample schema accepts
(:data:`matsciml.data.schema.MAX_ATOMIC_NUMBER`), so a structure that passed
validation always has a row.
"""
from __future__ import annotations

import torch
from torch import nn

from matsciml.data.schema import MAX_ATOMIC_NUMBER


class ElementEmbedding(nn.Module):
    """Learned vector per element, elements 1 (H) to ``MAX_ATOMIC_NUMBER``.

    Args:
        embedding_dim: width of the vectors (usually the model's hidden width).

    Shapes:
        atomic_numbers ``[num_atoms]`` int64 in 1..MAX_ATOMIC_NUMBER ->
        ``[num_atoms, embedding_dim]``.

    ``MAX_ATOMIC_NUMBER * embedding_dim`` parameters, in ``table.weight``
    (row k holds element k + 1: no unused row for the atomic number 0).
    """

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"ElementEmbedding: embedding_dim must be at least 1, got {embedding_dim}")
        self.table = nn.Embedding(MAX_ATOMIC_NUMBER, embedding_dim)

    def forward(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        # An atomic number of 0 or above MAX_ATOMIC_NUMBER indexes outside the
        # table and nn.Embedding raises an IndexError rather than guessing;
        # the sample schema rejects such structures before they get here.
        return self.table(atomic_numbers - 1)
