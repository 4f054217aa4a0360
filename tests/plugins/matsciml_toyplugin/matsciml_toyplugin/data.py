"""A small in-memory dataset of valid molecules with energies and forces of a pair potential.

With ``charges=True`` each molecule also carries partial charges (a
per-atom target, ``charges``) and its net charge (a per-structure model
input, ``total_charge``, always 0 here): what property regression of a
per-atom target needs.
"""
from __future__ import annotations

from typing import Any

import numpy as np

# Per-element strength of the pair repulsion and energy of the isolated atom (eV), H, C, O.
_ELEMENTS = np.array([1, 6, 8], dtype=np.int64)
_STRENGTH = {1: 0.6, 6: 1.0, 8: 0.8}
_ATOM_ENERGY = {1: -0.5, 6: -1.2, 8: -0.9}
_ELECTRONEGATIVITY = {1: 2.2, 6: 2.55, 8: 3.44}
_MIN_DISTANCE = 0.9  # Å: no two atoms closer (the schema refuses coincident atoms)


def pair_energy_and_forces(numbers: np.ndarray, pos: np.ndarray) -> tuple[float, np.ndarray]:
    """``E = sum_i e(Z_i) + sum_{i<j} s(Z_i) s(Z_j) exp(-d_ij)`` in eV and ``F = -dE/dpos`` in eV/Å."""
    strength = np.array([_STRENGTH[int(z)] for z in numbers])
    vectors = pos[None, :, :] - pos[:, None, :]  # [N, N, 3], r_ij = pos_j - pos_i
    distances = np.linalg.norm(vectors, axis=-1)
    np.fill_diagonal(distances, np.inf)
    pair = np.outer(strength, strength) * np.exp(-distances)  # [N, N], 0 on the diagonal
    energy = sum(_ATOM_ENERGY[int(z)] for z in numbers) + 0.5 * float(pair.sum())
    # dE/dpos_i = sum_j pair_ij * (pos_j - pos_i) / d_ij
    forces = -np.einsum("ij,ijk->ik", pair / distances, vectors)
    return energy, forces


def partial_charges(numbers: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``q_i = sum_j (chi_j - chi_i) exp(-d_ij) / 4`` in e: charge flows to the more electronegative atom; sums to 0."""
    chi = np.array([_ELECTRONEGATIVITY[int(z)] for z in numbers])
    distances = np.linalg.norm(pos[None] - pos[:, None], axis=-1)
    coupling = np.exp(-distances)
    np.fill_diagonal(coupling, 0.0)
    return 0.25 * (coupling * (chi[None, :] - chi[:, None])).sum(axis=1)


class ToyDataset:
    """``num_samples`` random H/C/O molecules of 2 to 5 atoms with energy and forces (and charges).

    Args:
        num_samples: how many structures.
        seed: random seed of the elements and positions.
        charges: add partial charges ``charges`` [N] and the net charge ``total_charge``.
    """

    def __init__(self, num_samples: int = 4, seed: int = 0, charges: bool = False) -> None:
        rng = np.random.default_rng(seed)
        self._samples = []
        for index in range(num_samples):
            natoms = 2 + index % 4
            numbers = rng.choice(_ELEMENTS, size=natoms)
            pos = rng.normal(scale=1.2, size=(natoms, 3))
            while natoms > 1 and _closest(pos) < _MIN_DISTANCE:
                pos = rng.normal(scale=1.2, size=(natoms, 3))
            energy, forces = pair_energy_and_forces(numbers, pos)
            sample = {
                "atomic_numbers": numbers,
                "pos": pos,
                "pbc": np.zeros(3, dtype=bool),
                "energy": np.float64(energy),
                "forces": forces,
            }
            if charges:
                sample["charges"] = partial_charges(numbers, pos)
                sample["total_charge"] = np.float64(0.0)
            self._samples.append(sample)

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(self._samples[index])


def _closest(pos: np.ndarray) -> float:
    distances = np.linalg.norm(pos[None] - pos[:, None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    return float(distances.min())
