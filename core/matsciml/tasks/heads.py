"""Output heads shared by the tasks.

The activations and the per-structure sums and means the tasks use live in
:mod:`matsciml.nn` (one definition for tasks and models alike); they are
re-exported here for code that imports them from this module.
"""
from __future__ import annotations

import torch
from torch import nn

from matsciml.nn.activations import ACTIVATIONS, make_activation
from matsciml.nn.scatter import mean_per_structure, sum_per_structure

__all__ = ["ACTIVATIONS", "MLPHead", "make_activation", "mean_per_structure", "sum_per_structure"]


class MLPHead(nn.Module):
    """A small MLP: ``[*, in_dim] -> [*, out_dim]`` with ``num_hidden_layers`` hidden layers."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 64, num_hidden_layers: int = 1,
                 activation: str = "silu") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden_dim), make_activation(activation)]
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)
