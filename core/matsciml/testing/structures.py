"""Small random structures for tests: periodic crystals and molecules."""
from __future__ import annotations

import numpy as np

from matsciml.data.schema import Sample


def random_periodic_sample(rng: np.random.Generator, num_atoms: int = 8, *, cell_length: float = 5.0,
                           skew: float = 0.3, elements: tuple[int, ...] = (3, 15, 16),
                           min_distance: float = 0.9) -> Sample:
    """A random periodic structure in a skewed cell, atoms at least ``min_distance`` apart."""
    cell = np.eye(3) * cell_length + rng.uniform(-skew, skew, size=(3, 3)) * cell_length
    fractional = []
    while len(fractional) < num_atoms:
        candidate = rng.uniform(size=3)
        trial = np.array(fractional + [candidate]) @ cell
        if len(fractional) == 0 or _min_periodic_distance(trial, cell) >= min_distance:
            fractional.append(candidate)
    pos = np.array(fractional) @ cell
    return {
        "atomic_numbers": rng.choice(np.asarray(elements, dtype=np.int64), size=num_atoms),
        "pos": pos,
        "cell": cell,
        "pbc": np.array([True, True, True]),
        "energy": np.asarray(0.0),
        "forces": np.zeros((num_atoms, 3)),
    }


def random_molecule_sample(rng: np.random.Generator, num_atoms: int = 6,
                           elements: tuple[int, ...] = (1, 6, 7, 8)) -> Sample:
    """A random non-periodic cluster of atoms about 1-1.5 Å apart."""
    pos = [np.zeros(3)]
    while len(pos) < num_atoms:
        anchor = pos[rng.integers(len(pos))]
        direction = rng.normal(size=3)
        candidate = anchor + direction / np.linalg.norm(direction) * rng.uniform(1.0, 1.5)
        if min(np.linalg.norm(candidate - p) for p in pos) >= 0.9:
            pos.append(candidate)
    return {
        "atomic_numbers": rng.choice(np.asarray(elements, dtype=np.int64), size=num_atoms),
        "pos": np.array(pos),
        "pbc": np.array([False, False, False]),
        "energy": np.asarray(0.0),
        "forces": np.zeros((num_atoms, 3)),
    }


def _min_periodic_distance(pos: np.ndarray, cell: np.ndarray) -> float:
    images = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3) @ cell
    diff = pos[:, None, None, :] - pos[None, :, None, :] + images[None, None, :, :]
    dist = np.linalg.norm(diff, axis=-1)
    n = len(pos)
    zero_image = np.all(images == 0, axis=1)
    dist[np.arange(n), np.arange(n), :] = np.where(zero_image, np.inf, dist[np.arange(n), np.arange(n), :])
    return float(dist.min())
