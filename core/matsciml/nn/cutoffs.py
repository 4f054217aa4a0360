"""Smooth cutoff envelopes: weights that fall to zero, with zero slope, at r_c.

Why: a model on a radius graph sees a neighbour only while it is closer than
the cutoff. If its message is multiplied by an envelope that vanishes with
zero slope at r_c, an atom entering or leaving a neighbourhood changes the
energy continuously and without a kink, so forces by autograd are
continuous too; molecular dynamics and finite-difference checks need that.
An envelope's cutoff must not exceed the cutoff the graph was built with:
edges missing from the graph cannot be switched on smoothly.

Both envelopes take distances ``[num_edges]`` in Å and return weights
``[num_edges]`` in [0, 1], equal to 1 at d = 0 and to 0 from r_c on.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _check_cutoff(owner: str, cutoff_radius: float) -> float:
    if not float(cutoff_radius) > 0 or not math.isfinite(float(cutoff_radius)):
        raise ValueError(f"{owner}: cutoff_radius must be a positive number of Å, got {cutoff_radius!r}")
    return float(cutoff_radius)


class CosineCutoff(nn.Module):
    """``f(d) = (1 + cos(pi d / r_c)) / 2`` for ``d < r_c``, 0 beyond (Behler 2011).

    f(0) = 1, f(r_c) = 0 and f'(r_c) = 0; the second derivative jumps at r_c.

    Args:
        cutoff_radius: r_c in Å.
    """

    def __init__(self, cutoff_radius: float) -> None:
        super().__init__()
        self.cutoff_radius = _check_cutoff("CosineCutoff", cutoff_radius)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """``[num_edges]`` distances in Å -> ``[num_edges]`` weights in [0, 1]."""
        envelope = 0.5 * (torch.cos(distances * (math.pi / self.cutoff_radius)) + 1.0)
        return torch.where(distances < self.cutoff_radius, envelope, torch.zeros_like(envelope))

    def extra_repr(self) -> str:
        return f"cutoff_radius={self.cutoff_radius}"


class PolynomialEnvelope(nn.Module):
    """The polynomial envelope of DimeNet (Klicpera et al. 2020), 0 from r_c on.

    With x = d / r_c and exponent p::

        f(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)

    f(0) = 1, and f, f' and f'' all vanish at x = 1, so forces are
    continuous and their derivatives too; f stays close to 1 for small x
    (larger p: flatter inside, steeper near r_c).

    Args:
        cutoff_radius: r_c in Å.
        exponent: p, a positive integer (6 is common; DimeNet uses 6).
    """

    def __init__(self, cutoff_radius: float, exponent: int = 6) -> None:
        super().__init__()
        self.cutoff_radius = _check_cutoff("PolynomialEnvelope", cutoff_radius)
        if isinstance(exponent, bool) or int(exponent) != exponent or exponent < 1:
            raise ValueError(f"PolynomialEnvelope: exponent must be a positive integer, got {exponent!r}")
        self.exponent = int(exponent)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """``[num_edges]`` distances in Å -> ``[num_edges]`` weights in [0, 1]."""
        p = self.exponent
        x = distances / self.cutoff_radius
        x_p = x ** p
        # Horner form of the polynomial above: 1 + x^p (a + x (b + c x))
        a, b, c = -(p + 1) * (p + 2) / 2, p * (p + 2), -p * (p + 1) / 2
        envelope = 1.0 + x_p * (a + x * (b + c * x))
        return torch.where(x < 1.0, envelope, torch.zeros_like(envelope))

    def extra_repr(self) -> str:
        return f"cutoff_radius={self.cutoff_radius}, exponent={self.exponent}"
