"""Train/validation/test splits that are deterministic from a seed and recorded.

A split is a permutation of sample indices from numpy's PCG64 generator
seeded with ``seed``, cut by fractions. Its JSON form (indices included) is
saved with each run, so the exact split can be reloaded even if the rule
that made it changes.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Indices of each part of a dataset, and the rule that made them."""

    num_samples: int
    seed: int
    fractions: tuple[float, float, float]
    indices: dict[str, list[int]] = field(repr=False)

    def __getitem__(self, name: str) -> list[int]:
        return self.indices[name]

    def to_json(self) -> str:
        return json.dumps({"num_samples": self.num_samples, "seed": self.seed,
                           "fractions": list(self.fractions), "indices": self.indices})

    @classmethod
    def from_json(cls, text: str) -> "Split":
        data = json.loads(text)
        return cls(num_samples=data["num_samples"], seed=data["seed"],
                   fractions=tuple(data["fractions"]), indices={k: list(v) for k, v in data["indices"].items()})

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Split":
        return cls.from_json(Path(path).read_text())


def make_split(num_samples: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Split ``num_samples`` indices into train/val/test.

    Args:
        num_samples: size of the dataset.
        fractions: shares of train, val and test; must be >= 0 and sum to 1.
        seed: the same seed and size always give the same split.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1 (train, val, test); got {fractions}")
    if num_samples < 1:
        raise ValueError(f"cannot split a dataset of {num_samples} samples")
    order = np.random.Generator(np.random.PCG64(seed)).permutation(num_samples)
    num_train = int(round(fractions[0] * num_samples))
    num_val = int(round(fractions[1] * num_samples))
    if fractions[1] > 0 and num_val == 0 and num_samples - num_train > 0:
        num_val = 1
    num_val = min(num_val, num_samples - num_train)
    cuts = {"train": order[:num_train], "val": order[num_train:num_train + num_val],
            "test": order[num_train + num_val:]}
    return Split(num_samples=num_samples, seed=seed, fractions=fractions,  # type: ignore[arg-type]
                 indices={name: sorted(int(i) for i in part) for name, part in cuts.items()})
