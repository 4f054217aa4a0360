"""E(n)-equivariant graph neural network backbone for matsciml.

Satorras, Hoogeboom, Welling, "E(n) Equivariant Graph Neural Networks",
ICML 2021. The package is split one concept per module: ``blocks`` (the
message-passing layer) and ``model`` (the backbone); the element embedding,
edge vectors, radial basis, cutoff envelope and activations are the shared
ones of :mod:`matsciml.nn`. Importing the package itself is cheap: torch and
DGL are imported only by those modules, and the registry reaches them only
through ``plugin``.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
