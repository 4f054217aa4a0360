"""The one table of activation functions, by the names configs use.

Why one table: task heads and every backbone accept an ``activation`` name
in their hyper-parameters; with one table a name means the same function
everywhere and a model spec can declare its choices as ``tuple(ACTIVATIONS)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional


class ShiftedSoftplus(nn.Module):
    """``softplus(x) - log 2``: a smooth ReLU that passes through the origin.

    The activation of SchNet and MEGNet (Chen et al. 2019, there called
    softplus2). The shift makes f(0) = 0, so a layer with zero input gives
    zero output, and unlike ReLU it has a continuous derivative everywhere,
    which forces by autograd (second derivatives in training) need.

    Shapes: any ``[*]`` -> the same ``[*]``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.softplus(x) - math.log(2.0)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "softplus2": ShiftedSoftplus,
}
"""Activation name -> module class (constructed without arguments)."""


def make_activation(name: str) -> nn.Module:
    """A new activation module for ``name`` (case-insensitive), e.g. ``"silu"``.

    Raises:
        ValueError: ``name`` is not in :data:`ACTIVATIONS`; the message lists
            the names that are.
    """
    try:
        return ACTIVATIONS[name.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None
