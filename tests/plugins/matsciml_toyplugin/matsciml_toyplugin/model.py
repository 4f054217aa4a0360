"""The toy backbone: element embedding plus position projection, then an MLP."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ToyBackbone(nn.Module):
    """Maps a ``toy-points`` batch to per-atom embeddings of width ``hidden_dim``.

    Parameters: 119*h (embedding) + 4*h (position projection) + L*(h*h + h).
    """

    representation = "toy-points"

    def __init__(self, hidden_dim: int = 16, num_layers: int = 2) -> None:
        super().__init__()
        self.embedding_dim = hidden_dim
        self.embed = nn.Embedding(119, hidden_dim)
        self.project = nn.Linear(3, hidden_dim)
        self.layers = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers))

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        h = self.embed(batch["atomic_numbers"]) + self.project(batch["pos"])
        for layer in self.layers:
            h = torch.relu(layer(h))
        return h
