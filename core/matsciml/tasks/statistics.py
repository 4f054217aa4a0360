"""Training-set statistics the tasks normalise with.

Fitted once from the training split before training, stored as buffers of
the task so that checkpoints carry them.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from matsciml.data.schema import MAX_ATOMIC_NUMBER
from matsciml.errors import MatscimlError


def composition_matrix(samples: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Counts of each element per structure: ``[num_structures, 119]``."""
    rows = [np.bincount(np.asarray(s["atomic_numbers"]), minlength=MAX_ATOMIC_NUMBER + 1) for s in samples]
    return np.stack(rows).astype(np.float64)


def fit_reference_energies(counts: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """Per-element energies ``[119]`` minimising ``||counts @ e - energies||`` (least squares).

    Elements absent from the training set get 0. With a single composition
    the minimum-norm solution spreads the mean energy over its elements.
    """
    present = counts.sum(axis=0) > 0
    solution, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    references = np.zeros(counts.shape[1])
    references[present] = solution
    return references


def energy_statistics(samples: list[Mapping[str, Any]], key: str, use_references: bool) -> dict[str, Any]:
    """References, per-atom shift and scale of an extensive energy ``key``.

    The model predicts per-atom energies ``scale * output + shift + reference[Z]``;
    ``scale`` is the RMS of force components when forces are present (the
    natural energy scale of a potential), otherwise the std of the per-atom
    residual energy.
    """
    if not samples:
        raise MatscimlError("cannot fit statistics: the training split is empty; use a larger dataset or split")
    missing = [i for i, s in enumerate(samples) if key not in s]
    if missing:
        raise MatscimlError(f"training sample {missing[0]} has no {key!r}; this task needs it in every sample")
    counts = composition_matrix(samples)
    energies = np.array([float(s[key]) for s in samples])
    num_atoms = counts.sum(axis=1)
    references = fit_reference_energies(counts, energies) if use_references else np.zeros(counts.shape[1])
    residual_per_atom = (energies - counts @ references) / num_atoms
    shift = float(residual_per_atom.mean())
    if all("forces" in s for s in samples):
        forces = np.concatenate([np.asarray(s["forces"]).ravel() for s in samples])
        scale = float(np.sqrt(np.mean(forces ** 2)))
    else:
        scale = float(residual_per_atom.std())
    return {"references": references, "shift": shift, "scale": max(scale, 1e-3)}
