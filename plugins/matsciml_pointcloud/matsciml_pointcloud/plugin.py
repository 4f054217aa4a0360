"""Hook implementations of matsciml-pointcloud: describe the ``point-cloud`` representation.

The registry imports this module to list components, so it imports no
torch; the factory is named as a string and imported only when built.
"""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import RepresentationSpec


@hookimpl
def matsciml_representations() -> list[RepresentationSpec]:
    """The one representation this plugin provides: ``point-cloud``."""
    return [
        RepresentationSpec(
            name="point-cloud",
            summary="atom-centred clouds of the K nearest neighbours (periodic images included), padded with masks",
            factory="matsciml_pointcloud.representation:PointCloudRepresentation",
            defaults={"cutoff_radius": 5.0, "max_neighbors": 32, "centres": "all", "subsurface_fraction": 0.25,
                      "seed": 0, "dtype": "float32"},
            param_help={
                "cutoff_radius": "Å; a neighbour is an atom or periodic image strictly closer than this",
                "max_neighbors": "K: at most this many nearest neighbours per centre (memory grows as K^rank)",
                "centres": "which atoms get a cloud: all, or oc20 (tags 2 and 1 and a share of tag 0)",
                "subsurface_fraction": "with centres=oc20: share of subsurface (tag 0) atoms drawn as centres",
                "seed": "seeds the draw of subsurface centres (the same for every frame of a system)",
                "dtype": "float type of positions, shifts and float targets ('float32' or 'float64')",
            },
            param_ranges={"cutoff_radius": ">0", "max_neighbors": ">=1", "subsurface_fraction": "[0,1]"},
            param_choices={"centres": ("all", "oc20"), "dtype": ("float32", "float64")},
        )
    ]
