"""Output heads and pooling shared by the tasks."""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


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


def sum_per_structure(values: torch.Tensor, structure_index: torch.Tensor, num_structures: int) -> torch.Tensor:
    """Sum per-atom ``values`` [N, ...] into per-structure totals [B, ...]."""
    out = values.new_zeros((num_structures, *values.shape[1:]))
    return out.index_add_(0, structure_index, values)


def mean_per_structure(values: torch.Tensor, structure_index: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
    """Average per-atom ``values`` [N, ...] over each structure -> [B, ...]."""
    totals = sum_per_structure(values, structure_index, int(num_atoms.shape[0]))
    return totals / num_atoms.to(values.dtype).view(-1, *([1] * (values.dim() - 1)))
