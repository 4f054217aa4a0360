"""A small in-memory dataset of valid samples (non-periodic molecules)."""
from __future__ import annotations

from typing import Any

import numpy as np


class ToyDataset:
    """``num_samples`` random H/C/O molecules of 2 to 5 atoms with an energy label."""

    def __init__(self, num_samples: int = 4, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._samples = []
        for index in range(num_samples):
            natoms = 2 + index % 4
            self._samples.append({
                "atomic_numbers": rng.choice(np.array([1, 6, 8], dtype=np.int64), size=natoms),
                "pos": rng.normal(scale=1.5, size=(natoms, 3)),
                "pbc": np.zeros(3, dtype=bool),
                "energy": np.float64(-1.0 * natoms + rng.normal(scale=0.1)),
            })

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(self._samples[index])
