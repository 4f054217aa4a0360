"""Training-set statistics the tasks normalise with (baselines: :mod:`matsciml.tasks.baselines`).

Fitted once from a sample of the training split before training, stored as
buffers of the task so that checkpoints carry them. Every function here
reads its samples once, as an iterable, and keeps only a few numbers per
structure (never positions or whole samples): with the data module's
seeded, capped sample the memory they need does not grow with the dataset.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from matsciml.data.schema import MAX_ATOMIC_NUMBER
from matsciml.errors import MatscimlError
from matsciml.tasks.baselines import least_squares_per_element


def fit_reference_energies(counts: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """Per-element energies ``[119]`` minimising ``||counts @ e - energies||`` (least squares).

    Elements absent from the training set get 0. With a single composition
    the minimum-norm solution spreads the mean energy over its elements.
    """
    return least_squares_per_element(counts, energies, counts.sum(axis=0) > 0)


def energy_statistics(samples: Iterable[Mapping[str, Any]], key: str, use_references: bool) -> dict[str, Any]:
    """References, per-atom shift and scale of an extensive energy ``key``.

    The model predicts per-atom energies ``scale * output + shift + reference[Z]``;
    ``scale`` is the RMS of force components when every sample has forces
    (the natural energy scale of a potential), otherwise the std of the
    per-atom residual energy. Keeps one element-count row and one energy
    per structure, and a running sum of squared force components.
    """
    rows: list[np.ndarray] = []
    energies: list[float] = []
    force_squares = 0.0
    force_components = 0
    all_have_forces = True
    for index, sample in enumerate(samples):
        if key not in sample:
            raise MatscimlError(f"training sample {index} has no {key!r}; this task needs it in every sample")
        rows.append(np.bincount(np.asarray(sample["atomic_numbers"]), minlength=MAX_ATOMIC_NUMBER + 1))
        energies.append(float(sample[key]))
        if all_have_forces and "forces" in sample:
            forces = np.asarray(sample["forces"], dtype=np.float64)
            force_squares += float(np.square(forces).sum())
            force_components += forces.size
        else:
            all_have_forces = False
    if not rows:
        raise MatscimlError("cannot fit statistics: the training split is empty; use a larger dataset or split")
    counts = np.stack(rows).astype(np.float64)
    energy = np.asarray(energies)
    num_atoms = counts.sum(axis=1)
    references = fit_reference_energies(counts, energy) if use_references else np.zeros(counts.shape[1])
    residual_per_atom = (energy - counts @ references) / num_atoms
    shift = float(residual_per_atom.mean())
    if all_have_forces and force_components:
        scale = math.sqrt(force_squares / force_components)
    else:
        scale = float(residual_per_atom.std())
    return {"references": references, "shift": shift, "scale": max(scale, 1e-3)}
