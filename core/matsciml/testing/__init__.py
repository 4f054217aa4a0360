"""Test helpers for matsciml and for third-party plugins.

Import these in a plugin's test suite to check the same physics the core's
tests check: energies invariant under rotations, translations, permutations
and supercells; forces equivariant and equal to -dE/dx.
"""
from matsciml.testing.neighbors import brute_force_neighbors
from matsciml.testing.physics import (
    finite_difference_forces,
    make_supercell,
    permute_sample,
    random_rotation,
    rotate_sample,
    translate_sample,
)
from matsciml.testing.structures import random_periodic_sample, random_molecule_sample

__all__ = [
    "brute_force_neighbors", "finite_difference_forces", "make_supercell", "permute_sample", "random_molecule_sample",
    "random_periodic_sample", "random_rotation", "rotate_sample", "translate_sample",
]
