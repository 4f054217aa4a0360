"""Test helpers for matsciml and for third-party plugins.

Import these in a plugin's test suite to check the same physics the core's
tests check: energies invariant under rotations, translations, permutations
and supercells; forces equivariant and equal to -dE/dx. The conformance kit,
:func:`check_backbone`, runs all of that (and the backbone output contract)
on a registered model in one call; it is imported on first use, so the
helpers below stay free of torch.
"""
from __future__ import annotations

from typing import Any

from matsciml.testing.neighbors import brute_force_neighbors
from matsciml.testing.physics import (
    finite_difference_forces,
    make_supercell,
    permute_sample,
    random_rotation,
    rotate_sample,
    translate_sample,
)
from matsciml.testing.structures import random_molecule_sample, random_periodic_sample

_CONFORMANCE = ("CHECKS", "CheckResult", "ConformanceReport", "TOLERANCES", "Tolerances", "check_backbone")

__all__ = [
    "CHECKS", "TOLERANCES", "CheckResult", "ConformanceReport", "Tolerances", "brute_force_neighbors",
    "check_backbone", "finite_difference_forces", "make_supercell", "permute_sample", "random_molecule_sample",
    "random_periodic_sample", "random_rotation", "rotate_sample", "translate_sample",
]


def __getattr__(name: str) -> Any:
    # the conformance kit imports torch; load it only when asked for
    if name in _CONFORMANCE:
        from matsciml.testing import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module 'matsciml.testing' has no attribute {name!r}")
