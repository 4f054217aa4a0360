"""Radial bases: distances expanded into smooth features an MLP can use.

Why a basis: a single distance (or squared distance) fed to a linear layer
gives each channel only one coefficient of the geometry; at initialisation
the energy then barely depends on positions, and forces train slowly. A
basis gives each channel its own smooth function of distance. The Gaussian
expansion serves E(n)-GNN (centres over [0, r_c]) and MEGNet (Chen et al.
2019: centres over [0, r_c + 1] Å, width 0.5 Å) alike; only the numbers differ.
"""
from __future__ import annotations

import torch
from torch import nn


class GaussianRadialBasis(nn.Module):
    """``phi_k(d) = exp(-((d - mu_k) / width)^2)``, centres ``mu_k`` evenly spaced on [start, stop].

    Args:
        num_basis: number K of Gaussians (at least 1).
        start: first centre, Å.
        stop: last centre, Å (at least ``start``; equal only for one Gaussian).
        width: ``width`` in the formula, Å (positive). It is sqrt(2) times the
            standard deviation of each Gaussian; MEGNet's sigma.

    Shapes:
        distances ``[num_edges]`` in Å -> ``[num_edges, num_basis]`` features in (0, 1].

    The centres are a buffer (``centers``), saved with the model's state but
    not trained.
    """

    def __init__(self, num_basis: int, start: float, stop: float, width: float) -> None:
        super().__init__()
        if isinstance(num_basis, bool) or int(num_basis) != num_basis or num_basis < 1:
            raise ValueError(f"GaussianRadialBasis: num_basis must be a positive integer, got {num_basis!r}")
        if not float(stop) >= float(start) or (num_basis > 1 and float(stop) == float(start)):
            raise ValueError(f"GaussianRadialBasis: the centres run from start={start} to stop={stop} Å; "
                             f"stop must be larger than start for more than one Gaussian")
        if not float(width) > 0:
            raise ValueError(f"GaussianRadialBasis: width must be a positive number of Å, got {width!r}")
        self.register_buffer("centers", torch.linspace(float(start), float(stop), int(num_basis)))
        self.width = float(width)

    @property
    def num_basis(self) -> int:
        return int(self.centers.shape[0])

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """``[num_edges]`` distances in Å -> ``[num_edges, num_basis]``."""
        centers = self.centers.to(distances.dtype)
        return torch.exp(-(((distances[:, None] - centers) / self.width) ** 2))

    def extra_repr(self) -> str:
        return (f"num_basis={self.num_basis}, start={float(self.centers[0]):g}, "
                f"stop={float(self.centers[-1]):g}, width={self.width:g}")
