"""matsciml: a plugin platform for deep learning on materials-science data.

Importing the package is cheap on purpose: it does not import torch, DGL or
any plugin. Components are found through :mod:`matsciml.registry`.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
