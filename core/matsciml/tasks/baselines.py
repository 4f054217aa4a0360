"""The simple predictors every model is compared with, fitted on the training split.

A learned model is only worth its cost if it beats what a line of algebra
gets from the same training data. Two baselines are fitted for every run
and scored with the task's own metrics (:mod:`matsciml.tasks.metrics`) on
the same split as the model:

* ``mean``: the training mean (per atom times the number of atoms for an
  extensive target such as a total energy; the mean value for an intensive
  one; the mean over atoms for a per-atom target); zero forces.
* ``composition``: a per-element linear fit on the training split (least
  squares): an extensive target as ``sum_e n_e w_e`` over the element
  counts ``n_e`` (for energies these are the per-element reference
  energies), an intensive one as ``sum_e x_e w_e`` over the element
  fractions ``x_e``, a per-atom target as the training mean of each
  element; zero forces. For energies of structures of many compositions
  this is the strong baseline: a model that does not beat it has learned
  nothing about geometry.

In a run on several datasets (samples with ``dataset_index``) each baseline
is fitted on each dataset's training samples alone and predicts each
structure with its own dataset's fit: the strongest simple baseline knows
which source a structure came from, as the model's statistics do.

Each baseline is a function of a :class:`~matsciml.batch.Batch` to the
same prediction dictionary a task's ``predict`` returns, so the same metric
code scores it. Fitting reads the training samples once and keeps one row of
element counts and the target values per structure.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from matsciml.batch import Batch, collate_structures
from matsciml.data.concatenated import DATASET_INDEX
from matsciml.data.schema import MAX_ATOMIC_NUMBER
from matsciml.errors import MatscimlError
from matsciml.nn.scatter import mean_per_structure, sum_per_structure

#: how a target is predicted: a per-structure total, a per-structure intensive value, one value per
#: atom, or forces (predicted zero by every baseline: the mean force of a structure at rest is zero)
KINDS = ("extensive", "intensive", "atom", "forces")

#: what each baseline is, for tables and the README
DESCRIPTIONS = {
    "mean": "the training mean (per atom x atoms for totals), zero forces",
    "composition": "a per-element linear fit on the training split (least squares), zero forces",
}


@dataclass
class ElementLinear:
    """A prediction from each atom's element: ``weights[dataset, Z]`` summed, averaged or per atom."""

    key: str
    kind: str
    weights: np.ndarray  # [datasets, MAX_ATOMIC_NUMBER + 1]

    def __call__(self, batch: Batch, dtype: torch.dtype) -> torch.Tensor:
        weights = torch.as_tensor(np.atleast_2d(self.weights), dtype=dtype, device=batch.pos.device)
        dataset = batch.extras.get(DATASET_INDEX)
        if dataset is None or weights.shape[0] == 1:
            per_atom = weights[0][batch.atomic_numbers]
        else:
            per_atom = weights[dataset.to(torch.long)[batch.structure_index], batch.atomic_numbers]
        if self.kind == "extensive":
            return sum_per_structure(per_atom, batch.structure_index, batch.num_structures)
        if self.kind == "intensive":
            return mean_per_structure(per_atom, batch.structure_index, batch.num_atoms)
        return per_atom


@dataclass
class Baseline:
    """One fitted baseline: ``baseline(batch)`` is a prediction like a task's ``predict``."""

    name: str
    parts: list[ElementLinear]
    zero_keys: tuple[str, ...] = ()

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        dtype = batch.pos.dtype
        prediction = {part.key: part(batch, dtype) for part in self.parts}
        for key in self.zero_keys:
            prediction[key] = torch.zeros_like(batch.pos)
        return prediction


def fit_baselines(samples: Iterable[Mapping[str, Any]], kinds: Mapping[str, str]) -> dict[str, Baseline]:
    """The ``mean`` and ``composition`` baselines of the targets ``kinds`` (``{key: kind}``, see :data:`KINDS`).

    Reads ``samples`` (the training split, or its seeded sample) once. Samples
    of several datasets (``dataset_index``) get a fit per dataset.

    Raises:
        MatscimlError: no training sample, or a sample without a target.
    """
    for key, kind in kinds.items():
        if kind not in KINDS:
            raise ValueError(f"baseline target {key!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
    by_dataset: dict[int, list[Mapping[str, Any]]] = {}
    count = 0
    for sample in samples:
        by_dataset.setdefault(int(sample.get(DATASET_INDEX, 0)), []).append(_compact(sample, kinds))
        count += 1
    if not count:
        raise MatscimlError("cannot fit the baselines: the training split is empty; use a larger dataset or split")
    if len(by_dataset) == 1 and 0 in by_dataset:
        return _fit_one(by_dataset[0], kinds)
    fits = {number: _fit_one(part, kinds) for number, part in sorted(by_dataset.items())}
    size = max(fits) + 1
    joined = {}
    for name in ("mean", "composition"):
        parts = []
        for position, part in enumerate(fits[min(fits)][name].parts):
            weights = np.zeros((size, MAX_ATOMIC_NUMBER + 1))
            for number, fit in fits.items():
                weights[number] = fit[name].parts[position].weights
            parts.append(ElementLinear(part.key, part.kind, weights))
        joined[name] = Baseline(name, parts, fits[min(fits)][name].zero_keys)
    return joined


def _compact(sample: Mapping[str, Any], kinds: Mapping[str, str]) -> dict[str, Any]:
    """What fitting keeps of a sample: its elements and its targets (never positions)."""
    return {key: sample[key] for key in ("atomic_numbers", *kinds) if key in sample and kinds.get(key) != "forces"}


def _fit_one(samples: Sequence[Mapping[str, Any]], kinds: Mapping[str, str]) -> dict[str, Baseline]:
    """:func:`fit_baselines` on the samples of one dataset."""
    fitted = [key for key, kind in kinds.items() if kind != "forces"]
    rows: list[np.ndarray] = []
    values: dict[str, list[float]] = {key: [] for key in fitted if kinds[key] != "atom"}
    element_sums = {key: np.zeros(MAX_ATOMIC_NUMBER + 1) for key in fitted if kinds[key] == "atom"}
    element_counts = np.zeros(MAX_ATOMIC_NUMBER + 1)
    for index, sample in enumerate(samples):
        numbers = np.asarray(sample["atomic_numbers"])
        rows.append(np.bincount(numbers, minlength=MAX_ATOMIC_NUMBER + 1))
        element_counts += rows[-1]
        for key in fitted:
            if key not in sample:
                raise MatscimlError(f"training sample {index} has no {key!r}; the baselines need it in every "
                                    f"training sample")
            value = np.asarray(sample[key], dtype=np.float64)
            if kinds[key] == "atom":
                np.add.at(element_sums[key], numbers, value.reshape(len(numbers)))
            else:
                values[key].append(float(value.reshape(-1)[0]))
    if not rows:
        raise MatscimlError("cannot fit the baselines: the training split is empty; use a larger dataset or split")
    counts = np.stack(rows).astype(np.float64)
    num_atoms = counts.sum(axis=1)
    present = element_counts > 0
    mean_parts, composition_parts = [], []
    for key in fitted:
        kind = kinds[key]
        if kind == "atom":
            per_element = np.divide(element_sums[key], element_counts, out=np.zeros_like(element_counts),
                                    where=present)
            overall = element_sums[key].sum() / element_counts.sum()
            mean_parts.append(ElementLinear(key, kind, np.full(MAX_ATOMIC_NUMBER + 1, overall)))
            composition_parts.append(ElementLinear(key, kind, per_element))
            continue
        target = np.asarray(values[key])
        design = counts if kind == "extensive" else counts / num_atoms[:, None]
        mean = float((target / num_atoms).mean()) if kind == "extensive" else float(target.mean())
        mean_parts.append(ElementLinear(key, kind, np.full(MAX_ATOMIC_NUMBER + 1, mean)))
        composition_parts.append(ElementLinear(key, kind, least_squares_per_element(design, target, present)))
    zero = tuple(key for key, kind in kinds.items() if kind == "forces")
    return {"mean": Baseline("mean", mean_parts, zero), "composition": Baseline("composition", composition_parts, zero)}


def least_squares_per_element(design: np.ndarray, target: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per-element weights ``[119]`` minimising ``||design @ w - target||`` over the elements ``present``.

    Elements absent from the training set get 0. When the compositions do
    not determine every weight (one composition only), the minimum-norm
    solution is taken, which predicts the training mean.
    """
    solution, *_ = np.linalg.lstsq(design[:, present], target, rcond=None)
    weights = np.zeros(design.shape[1])
    weights[present] = solution
    return weights


def score_baselines(baselines: Mapping[str, Baseline], samples: Iterable[Mapping[str, Any]],
                    metrics: Any, chunk: int = 64) -> dict[str, dict[str, float]]:
    """Each baseline's metrics on ``samples``, streamed in chunks of ``chunk`` structures.

    ``metrics(batch, prediction)`` is the task's metric function (a dict of
    :class:`~matsciml.tasks.metrics.Metric`); the batches are collated in
    float64 with :func:`~matsciml.batch.collate_structures`.
    """
    from matsciml.tasks.metrics import MetricTotals

    totals = {name: MetricTotals() for name in baselines}
    for group in _chunks(samples, chunk):
        batch = collate_structures(group, dtype=torch.float64)
        for name, baseline in baselines.items():
            totals[name].add(metrics(batch, baseline(batch)))
        del group, batch  # before the next chunk is read: one chunk in memory at a time
    return {name: total.values() for name, total in totals.items()}


def _chunks(samples: Iterable[Mapping[str, Any]], size: int) -> Iterator[Sequence[Mapping[str, Any]]]:
    group: list[Mapping[str, Any]] = []
    for sample in samples:
        group.append(sample)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group
