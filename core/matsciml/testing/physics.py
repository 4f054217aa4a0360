"""Symmetry operations on samples and numerical derivatives, for physics tests.

Everything works on samples (dicts of numpy arrays, see
:mod:`matsciml.data.schema`), so a test can transform a structure, run any
representation and model on it, and compare.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from matsciml.data.schema import Sample
from matsciml.fields import UnknownFieldError, field_spec


def _per_atom_keys(sample: Mapping[str, Any]) -> list[str]:
    """Keys of ``sample`` declared per atom (:mod:`matsciml.fields`): they follow the atoms.

    Keys declared nowhere stay as they are: collate refuses them, so they
    never reach a model whatever their order.
    """
    keys = []
    for key, value in sample.items():
        if isinstance(value, str):
            continue
        try:
            if field_spec(key).per_atom:
                keys.append(key)
        except UnknownFieldError:
            continue
    return keys


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix (det = +1), float64."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def rotate_sample(sample: Mapping[str, Any], rotation: np.ndarray) -> Sample:
    """Rotate positions, cell vectors and forces (row vectors: x -> x @ R.T)."""
    out = dict(sample)
    out["pos"] = np.asarray(sample["pos"]) @ rotation.T
    if "cell" in sample:
        out["cell"] = np.asarray(sample["cell"]) @ rotation.T
    if "forces" in sample:
        out["forces"] = np.asarray(sample["forces"]) @ rotation.T
    return out


def translate_sample(sample: Mapping[str, Any], shift: np.ndarray) -> Sample:
    """Move every atom by ``shift`` (Å)."""
    out = dict(sample)
    out["pos"] = np.asarray(sample["pos"]) + np.asarray(shift)
    return out


def permute_sample(sample: Mapping[str, Any], order: np.ndarray) -> Sample:
    """Reorder the atoms; per-atom arrays follow ``order``."""
    out = dict(sample)
    for key in _per_atom_keys(sample):
        out[key] = np.asarray(sample[key])[order]
    return out


def make_supercell(sample: Mapping[str, Any], repeats: tuple[int, int, int]) -> Sample:
    """The same periodic structure expressed in a supercell of ``repeats`` cells.

    Extensive scalar labels (energy) are multiplied by the number of cells.
    """
    cell = np.asarray(sample["cell"], dtype=np.float64)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in repeats], indexing="ij"), -1).reshape(-1, 3)
    offsets = grid @ cell  # [num_cells, 3]
    num_cells = len(grid)
    out = dict(sample)
    out["pos"] = (np.asarray(sample["pos"])[None, :, :] + offsets[:, None, :]).reshape(-1, 3)
    out["cell"] = cell * np.asarray(repeats, dtype=np.float64)[:, None]
    for key in _per_atom_keys(sample):
        if key != "pos":
            out[key] = np.tile(np.asarray(sample[key]), (num_cells,) + (1,) * (np.asarray(sample[key]).ndim - 1))
    for key in ("energy", "relaxed_energy"):
        if key in sample:
            out[key] = np.asarray(sample[key]) * num_cells
    return out


def finite_difference_forces(energy: Callable[[np.ndarray], float], pos: np.ndarray,
                             step: float = 1e-4) -> np.ndarray:
    """-dE/dpos by central differences; ``energy`` maps positions [N,3] to a float."""
    pos = np.asarray(pos, dtype=np.float64)
    forces = np.zeros_like(pos)
    for atom in range(pos.shape[0]):
        for axis in range(3):
            plus = pos.copy()
            minus = pos.copy()
            plus[atom, axis] += step
            minus[atom, axis] -= step
            forces[atom, axis] = -(energy(plus) - energy(minus)) / (2 * step)
    return forces
