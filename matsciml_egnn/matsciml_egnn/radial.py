"""Geometry of edges: vectors, the invariant distance feature and the cutoff envelope.

Conventions: positions and periodic shifts are Cartesian, in Å; the edge
from sender j to receiver i has the vector ``r_ij = pos[j] + shift_ij - pos[i]``
(``shift_ij`` is the periodic-image offset of j, zero in molecules).

The E(n)-GNN of Satorras et al. feeds the squared distance ||x_i - x_j||^2
to its edge network. Two choices here make the energy of a cutoff graph a
smooth function of the positions, which forces by autograd, molecular
dynamics and finite-difference checks require:

* the squared distance is divided by ``cutoff_radius**2`` (a constant
  rescaling the first linear layer could learn; it only keeps the input of
  order one whatever the cutoff), and
* every message is multiplied by a cosine envelope that falls to zero, with
  zero slope, at the cutoff, so an atom entering or leaving a neighbourhood
  changes the energy continuously and without a kink.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def edge_vectors(pos: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                 shift: torch.Tensor) -> torch.Tensor:
    """Vectors from each receiver to its sender's (image) position.

    Args:
        pos: ``[num_atoms, 3]`` positions in Å (differentiable: forces).
        src: ``[num_edges]`` sender j of each edge.
        dst: ``[num_edges]`` receiver i of each edge.
        shift: ``[num_edges, 3]`` Cartesian periodic-image offset of j, in Å.

    Returns:
        ``[num_edges, 3]`` ``r_ij = pos[j] + shift - pos[i]``.
    """
    return pos[src] + shift.to(pos.dtype) - pos[dst]


class CosineCutoff(nn.Module):
    """Smooth envelope ``f(d) = (1 + cos(pi d / r_c)) / 2`` for ``d < r_c``, 0 beyond.

    f(0) = 1, f(r_c) = 0 and f'(r_c) = 0, so a message weighted by f vanishes
    continuously and smoothly as its edge reaches the cutoff.

    Args:
        cutoff_radius: r_c in Å. It must not exceed the cutoff the graph was
            built with: edges missing from the graph cannot be switched on
            smoothly.
    """

    def __init__(self, cutoff_radius: float) -> None:
        super().__init__()
        if not cutoff_radius > 0:
            raise ValueError(f"cutoff_radius must be positive (Å), got {cutoff_radius!r}")
        self.cutoff_radius = float(cutoff_radius)

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        """``[num_edges]`` distances in Å -> ``[num_edges]`` weights in [0, 1]."""
        envelope = 0.5 * (torch.cos(distance * (math.pi / self.cutoff_radius)) + 1.0)
        return torch.where(distance < self.cutoff_radius, envelope, torch.zeros_like(envelope))

    def extra_repr(self) -> str:
        return f"cutoff_radius={self.cutoff_radius}"


def scaled_squared_distance(squared_distance: torch.Tensor, cutoff_radius: float) -> torch.Tensor:
    """The paper's invariant edge input ||x_i - x_j||^2, in units of r_c^2 (in [0, 1) inside the cutoff)."""
    return squared_distance / (cutoff_radius * cutoff_radius)


class GaussianRadialBasis(nn.Module):
    """Expand distances in ``num_radial`` Gaussians evenly spaced on [0, r_c].

    Why: a single squared-distance input (the paper's choice, kept when
    ``num_radial=0``) lets the first layer of the edge network see the
    geometry only through one coefficient per channel; at initialisation the
    energy then barely depends on positions and force training starts from
    near-zero forces and gradients. A radial basis gives each channel its
    own smooth function of distance, which force fitting needs.

    Args:
        cutoff_radius: r_c in Å.
        num_radial: number of Gaussians; their width is the spacing r_c / num_radial.
    """

    def __init__(self, cutoff_radius: float, num_radial: int) -> None:
        super().__init__()
        if num_radial < 1:
            raise ValueError(f"num_radial must be at least 1, got {num_radial}")
        self.register_buffer("centers", torch.linspace(0.0, float(cutoff_radius), num_radial))
        self.width = float(cutoff_radius) / num_radial

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        """``[num_edges]`` distances in Å -> ``[num_edges, num_radial]`` features in (0, 1]."""
        centers = self.centers.to(distance.dtype)
        return torch.exp(-0.5 * ((distance[:, None] - centers) / self.width) ** 2)
