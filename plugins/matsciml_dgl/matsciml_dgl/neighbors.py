"""The neighbour search of ``dgl-graph``, which now lives in the core.

:mod:`matsciml.neighbors` holds the one vectorised periodic radius search
(vesin) that every representation and the sample schema share; its module
docstring records the conventions and the measurements behind them. This
module re-exports it so that code written against
``matsciml_dgl.neighbors.radius_graph`` keeps working.
"""
from __future__ import annotations

from matsciml.neighbors import nearest_per_receiver, radius_graph

__all__ = ["nearest_per_receiver", "radius_graph"]
