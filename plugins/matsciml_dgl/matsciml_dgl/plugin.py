"""Hook implementations of matsciml-dgl: describe the ``dgl-graph`` representation.

The registry imports this module to list components, so it imports neither
DGL nor torch; the factory is named as a string and imported only when a
representation is built.
"""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import RepresentationSpec

DGL_ADVICE = ("DGL 2.1 loads only with torch 2.0-2.2.1, numpy<2, torchdata 0.7.1 and pandas (the pinned "
              "stack of matsciml's repository: scripts/pins/dgl-stack.txt); on newer torch choose a model "
              "without DGL (`matsciml models` lists which are available)")
"""Why a DGL-based component may be unavailable, and what to do (``matsciml models`` shows it)."""


@hookimpl
def matsciml_representations() -> list[RepresentationSpec]:
    """The one representation this plugin provides: ``dgl-graph``."""
    return [
        RepresentationSpec(
            name="dgl-graph",
            summary="DGL radius graphs over atoms with periodic images (vesin neighbour search)",
            factory="matsciml_dgl.representation:DGLGraphRepresentation",
            defaults={"cutoff_radius": 6.0, "max_neighbors": None, "dtype": "float32"},
            param_help={
                "cutoff_radius": "neighbour cutoff in Å: an edge joins atoms (or periodic images) "
                                 "closer than this",
                "max_neighbors": "keep only the nearest N neighbours of each atom (None: all within the cutoff)",
                "dtype": "float type of positions, shifts and float targets in the batch "
                         "('float32' or 'float64')",
            },
            # checked before the representation is built: a bad value is one line naming it
            param_ranges={"cutoff_radius": ">0", "max_neighbors": ">=1"},
            param_choices={"dtype": ("float32", "float64")},
            requires={"dgl": DGL_ADVICE},
        )
    ]
