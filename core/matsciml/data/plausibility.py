"""Plausibility flags: values a dataset may hold that are valid but suspicious.

The sample schema (:mod:`matsciml.data.schema`) rejects what is certainly
broken (NaN, atoms closer than 0.1 Å, ...). This module names what is
allowed but probably wrong, so a user sees it before training, while the
data stay usable (a flag is a warning, never an error):

* ``positive_energy``: a total energy (``energy``, ``free_energy``,
  ``relaxed_energy``) above 0 eV. DFT total energies are negative; positive
  ones mean referenced energies (formation or adsorption energies, energies
  per atom relative to some reference), a flipped sign, or an empirical
  potential whose zero is not the free atoms (the EMT of the shipped
  ``slab-emt-*`` devsets).
* ``negative_band_gap``: a ``band_gap`` below 0: a gap cannot be negative.
* ``large_force``: a force component above :data:`MAX_FORCE` (50 eV/Å) in
  magnitude: unconverged or far-from-equilibrium calculations, atoms almost
  on top of each other, or forces in another unit (kcal/mol/Å).
* ``short_distance``: two atoms, or an atom and a periodic image of any atom
  (itself included), closer than :data:`MIN_DISTANCE` (0.5 Å; the shortest
  real bond, H-H, is 0.74 Å): fractional coordinates read as Å, a cell too
  small, or overlapping atoms. Found with the periodic neighbour search of
  :mod:`matsciml.neighbors`, as the schema's 0.1 Å check.
* ``unknown_unit``: a numeric key whose unit the metadata does not record.

Two sources, two costs. :func:`flags_from_metadata` decides what the
per-key statistics recorded at conversion (min, max) and the units can
decide, without reading a sample: such flags have ``count`` None. The
per-structure flags (how many structures, which ones, and short distances,
which no statistic records) need every sample: :class:`SampleChecks`
collects them from :func:`flags_of_sample` in one pass over the samples
(``matsciml data inspect --validate`` adds it to its pass), and
:func:`merge_flags` lets them replace the range-based ones.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

MAX_FORCE = 50.0
"""eV/Å: force components larger than this in magnitude are flagged (``--max-force``)."""

MIN_DISTANCE = 0.5
"""Å: atoms (or periodic images) closer than this are flagged (``--min-distance``)."""

TOTAL_ENERGY_KEYS: tuple[str, ...] = ("energy", "free_energy", "relaxed_energy")
BAND_GAP_KEYS: tuple[str, ...] = ("band_gap",)
FORCE_KEYS: tuple[str, ...] = ("forces",)

MAX_EXAMPLES = 5
"""How many sample indices a flag shows."""

# the kinds of flag, in the order they are listed; SAMPLE_KINDS are decided for each structure
KINDS: tuple[str, ...] = ("positive_energy", "negative_band_gap", "large_force", "short_distance", "unknown_unit")
SAMPLE_KINDS: frozenset[str] = frozenset({"positive_energy", "negative_band_gap", "large_force", "short_distance"})

_MEANING = {
    "positive_energy": "DFT total energies are negative: referenced energies, a flipped sign or an empirical "
                       "potential (e.g. EMT)?",
    "negative_band_gap": "a band gap is never negative: a flipped sign or another quantity under this name?",
    "large_force": "unconverged or far-from-equilibrium structures, or forces in another unit (kcal/mol/Å)?",
    "short_distance": "real bonds are longer (H-H 0.74 Å): fractional coordinates read as Å, a cell too "
                      "small, or overlapping atoms?",
}


@dataclass
class Flag:
    """One suspicious thing about one key of a dataset.

    ``count`` is the number of structures that have it, or None when it is
    known only from the recorded ranges (:func:`flags_from_metadata`);
    ``examples`` are the first few of their indices in the dataset (as in
    ``dataset[i]``), empty when not counted; ``message`` says, in one line
    without the key, what is suspicious, how many or what range, and what
    it may mean.
    """

    key: str
    flag: str  # one of KINDS
    count: int | None
    examples: list[int] = field(default_factory=list)
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SampleFlag(NamedTuple):
    """A flag of one structure: its key, its kind and the value that raised it.

    ``value`` is the worst value: the largest energy, the smallest band gap,
    the largest force component (magnitude), the shortest distance.
    """

    key: str
    flag: str
    value: float


def _numbers(value: Any) -> np.ndarray | None:
    """``value`` as a float array, or None for text and booleans (nothing to check)."""
    if isinstance(value, str):
        return None
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.size == 0:
        return None
    return array.astype(np.float64, copy=False)


def flags_of_sample(sample: Mapping[str, Any], *, max_force: float = MAX_FORCE,
                    min_distance: float = MIN_DISTANCE) -> list[SampleFlag]:
    """The plausibility flags of one structure (a valid sample, see :func:`~matsciml.data.schema.validate_sample`).

    Positive total energies, negative band gaps, force components above
    ``max_force`` (eV/Å) in magnitude, and atoms closer than
    ``min_distance`` (Å), periodic images included (one neighbour search
    with :func:`matsciml.neighbors.neighbor_pairs`).
    """
    found: list[SampleFlag] = []
    for key in TOTAL_ENERGY_KEYS:
        values = _numbers(sample.get(key))
        if values is not None and values.max() > 0:
            found.append(SampleFlag(key, "positive_energy", float(values.max())))
    for key in BAND_GAP_KEYS:
        values = _numbers(sample.get(key))
        if values is not None and values.min() < 0:
            found.append(SampleFlag(key, "negative_band_gap", float(values.min())))
    for key in FORCE_KEYS:
        values = _numbers(sample.get(key))
        if values is not None and np.abs(values).max() > max_force:
            found.append(SampleFlag(key, "large_force", float(np.abs(values).max())))
    if "pos" in sample:
        from matsciml.neighbors import neighbor_pairs  # lazy: vesin >= 0.5 imports torch

        pairs = neighbor_pairs(sample["pos"], sample.get("cell"), sample.get("pbc"), min_distance)
        if len(pairs.distances):
            found.append(SampleFlag("pos", "short_distance", float(pairs.distances.min())))
    return found


def _unit(metadata: Mapping[str, Any] | None, key: str, default: str = "") -> str:
    unit = ((metadata or {}).get("keys", {}).get(key) or {}).get("unit")
    return f" {unit}" if unit else default


def flags_from_metadata(metadata: Mapping[str, Any], *, max_force: float = MAX_FORCE) -> list[Flag]:
    """The flags the metadata alone decides: from each key's recorded min and max, and its unit.

    Cheap (no sample is read), so ``matsciml data inspect`` shows them every
    time. ``count`` is None: ranges say that some structure has the problem,
    not how many. Keys without statistics (metadata of a dataset with no
    samples) raise nothing.
    """
    statistics = metadata.get("statistics", {})
    flags: list[Flag] = []
    for key in TOTAL_ENERGY_KEYS:
        stats = statistics.get(key)
        if stats and stats["max"] > 0:
            unit = _unit(metadata, key)
            which = "all positive" if stats["min"] > 0 else "some positive"
            flags.append(Flag(key, "positive_energy", None, [], f"{which} ({stats['min']:.4g} to "
                              f"{stats['max']:.4g}{unit}); {_MEANING['positive_energy']}"))
    for key in BAND_GAP_KEYS:
        stats = statistics.get(key)
        if stats and stats["min"] < 0:
            flags.append(Flag(key, "negative_band_gap", None, [],
                              f"negative values (min {stats['min']:.4g}{_unit(metadata, key)}); "
                              f"{_MEANING['negative_band_gap']}"))
    for key in FORCE_KEYS:
        stats = statistics.get(key)
        if stats and max(abs(stats["min"]), abs(stats["max"])) > max_force:
            largest = max(abs(stats["min"]), abs(stats["max"]))
            flags.append(Flag(key, "large_force", None, [],
                              f"components above {max_force:g} eV/Å (up to {largest:.4g} eV/Å in magnitude); "
                              f"{_MEANING['large_force']}"))
    for key, info in sorted(metadata.get("keys", {}).items()):
        if info.get("dtype") not in ("str", "bool") and info.get("unit") is None:
            flags.append(Flag(key, "unknown_unit", None, [],
                              f"unit unknown; give it at conversion with --unit {key}=UNIT "
                              f"(--unit {key}= if dimensionless)"))
    return _ordered(flags)


class SampleChecks:
    """Counts the per-structure flags over a pass through a dataset.

    Call :meth:`add` with each valid sample and its index in the dataset,
    then :meth:`flags` for one :class:`Flag` per key and kind found, with
    the number of structures, the first :data:`MAX_EXAMPLES` indices, and
    the worst value.

    Args:
        max_force: eV/Å, see :func:`flags_of_sample`.
        min_distance: Å, see :func:`flags_of_sample`.
        metadata: the dataset's metadata, for the units in the messages.
    """

    def __init__(self, *, max_force: float = MAX_FORCE, min_distance: float = MIN_DISTANCE,
                 metadata: Mapping[str, Any] | None = None) -> None:
        for name, value in (("max_force", max_force), ("min_distance", min_distance)):
            if not (float(value) > 0 and np.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self.max_force = float(max_force)
        self.min_distance = float(min_distance)
        self.metadata = metadata
        self.checked: dict[str, int] = {}  # key -> structures that have it
        self._found: dict[tuple[str, str], list[Any]] = {}  # (key, kind) -> [count, examples, worst]

    def add(self, index: int, sample: Mapping[str, Any]) -> list[SampleFlag]:
        """Check one structure (index: its index in the dataset); return its flags."""
        for key in (*TOTAL_ENERGY_KEYS, *BAND_GAP_KEYS, *FORCE_KEYS, "pos"):
            if key in sample:
                self.checked[key] = self.checked.get(key, 0) + 1
        found = flags_of_sample(sample, max_force=self.max_force, min_distance=self.min_distance)
        for key, kind, value in found:
            entry = self._found.setdefault((key, kind), [0, [], value])
            entry[0] += 1
            if len(entry[1]) < MAX_EXAMPLES:
                entry[1].append(int(index))
            entry[2] = min(entry[2], value) if kind in ("negative_band_gap", "short_distance") else max(entry[2], value)
        return found

    def flags(self) -> list[Flag]:
        """One flag per key and kind found so far."""
        flags = []
        for (key, kind), (count, examples, worst) in self._found.items():
            where = (f"in {count} of {self.checked.get(key, count)} structures "
                     f"(e.g. {'sample' if len(examples) == 1 else 'samples'} {', '.join(map(str, examples))})")
            if kind == "positive_energy":
                what = f"positive {where}, up to {worst:.4g}{_unit(self.metadata, key)}"
            elif kind == "negative_band_gap":
                what = f"negative {where}, down to {worst:.4g}{_unit(self.metadata, key)}"
            elif kind == "large_force":
                what = f"components above {self.max_force:g} eV/Å {where}, up to {worst:.4g} eV/Å in magnitude"
            else:
                what = f"atoms closer than {self.min_distance:g} Å {where}, closest {worst:.3f} Å"
            flags.append(Flag(key, kind, count, list(examples), f"{what}; {_MEANING[kind]}"))
        return _ordered(flags)


def merge_flags(from_metadata: Iterable[Flag], from_samples: Iterable[Flag]) -> list[Flag]:
    """The flags of a dataset after a pass over every sample.

    The pass decides the per-structure kinds (:data:`SAMPLE_KINDS`): their
    range-based flags are dropped in favour of the counted ones (a range
    flag the pass does not confirm came from samples that are no longer
    readable, which the pass reports as invalid). Other kinds (unknown
    units) come from the metadata.
    """
    kept = [flag for flag in from_metadata if flag.flag not in SAMPLE_KINDS]
    return _ordered([*kept, *from_samples])


def _ordered(flags: list[Flag]) -> list[Flag]:
    return sorted(flags, key=lambda flag: (KINDS.index(flag.flag), flag.key))
