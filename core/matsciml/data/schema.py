"""The sample schema of DESIGN.md as code.

A sample is a mapping of named numpy arrays, the same for every dataset.
:func:`validate_sample` checks one structure and returns it with canonical
dtypes; every message names the sample (index and source) and the problem,
so a user can find the bad structure in their input. It runs at conversion
and on every sample read, so a structure that would train into NaN (two
atoms at one position, a periodic direction without a lattice vector) never
reaches a model.

What each key is (role, per atom or per structure, shape, dtype, unit) is
declared once, in :mod:`matsciml.fields`; this module checks samples
against those declarations and never decides from an array's shape what a
key is.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from matsciml.errors import InvalidSampleError
from matsciml.fields import REGISTERED_FIELDS, FieldSpec, registered_names

SCHEMA_VERSION = 1
"""Version of the sample schema and the on-disk format built on it."""

MAX_ATOMIC_NUMBER = 118

MIN_INTERATOMIC_DISTANCE = 0.1
"""Å: the default minimum distance between two atoms, or an atom and a periodic
image of any atom (itself included), that :func:`validate_sample` accepts.

Real structures keep atoms at least about 0.5 Å apart (the H-H bond is 0.74 Å),
so 0.1 Å only catches what is certainly broken: duplicated atoms, atoms
wrapped onto each other, a cell too short for its contents. Closer than that,
radial bases and repulsive terms are far outside anything a model was fitted
on, and at zero distance edge directions and forces are undefined (NaN).
"""
REQUIRED_KEYS: tuple[str, ...] = ("atomic_numbers", "pos", "pbc")

KNOWN_KEYS: Mapping[str, FieldSpec] = REGISTERED_FIELDS
"""Every registered field by name (:data:`matsciml.fields.REGISTERED_FIELDS`, kept under its old name)."""

STRUCTURE_KEYS = registered_names(role="structure")
"""Keys that describe the structure (role ``"structure"`` in :mod:`matsciml.fields`)."""

Sample = dict[str, Any]
"""One structure: key -> numpy array (or str for text properties)."""

_OC20_TAGS = (0, 1, 2)


def unit_of(key: str, extra_units: Mapping[str, str] | None = None) -> str | None:
    """The unit of ``key``: user-given, else the registered field's, else None (unknown)."""
    if extra_units and key in extra_units:
        return extra_units[key]
    spec = REGISTERED_FIELDS.get(key)
    return spec.unit if spec is not None else None


def describe_sample(index: int | None, source: str | None) -> str:
    where = f"sample {index}" if index is not None else "sample"
    return f"{where} of {source}" if source else where


def validate_sample(
    sample: Mapping[str, Any],
    *,
    index: int | None = None,
    source: str | None = None,
    required: Iterable[str] = (),
    min_distance: float | None = MIN_INTERATOMIC_DISTANCE,
    declared: Mapping[str, FieldSpec] | None = None,
) -> Sample:
    """Check a structure against the schema and return it with canonical dtypes.

    Every key with a declaration (:mod:`matsciml.fields`: a registered
    field, or one of ``declared``) must have its declared shape (per-atom
    keys one row per atom) and dtype kind, and is returned in its canonical
    dtype (float64, int64, bool); other keys must be numeric arrays or text.
    Beyond keys, shapes, dtypes, elements and finiteness, the geometry must
    make sense: every periodic direction has a lattice vector at least
    ``min_distance`` long (and the periodic vectors are independent), and no
    two atoms, nor an atom and a periodic image of any atom (itself
    included), are closer than ``min_distance``. The distance check is one
    vectorised neighbour search (:func:`matsciml.neighbors.neighbor_pairs`)
    and runs last, on positions and a cell already known to be finite and
    non-degenerate.

    Args:
        sample: key -> array-like (or str).
        index, source: where the sample comes from, for error messages.
        required: extra keys that must be present (e.g. a task's targets).
        min_distance: Å, the closest two atoms may be
            (:data:`MIN_INTERATOMIC_DISTANCE` by default); None skips the
            distance check (a zero-length periodic cell vector is still refused).
        declared: declarations of keys the registry does not know (a
            dataset's custom keys, or those declared at conversion with
            ``--field``), checked like registered ones.

    Raises:
        InvalidSampleError: naming the sample and what is wrong with it.
        ValueError: if ``min_distance`` is neither None nor a positive number.
    """
    if min_distance is not None and not (float(min_distance) > 0 and np.isfinite(min_distance)):
        raise ValueError(f"min_distance must be a positive number of Å or None, got {min_distance!r}")
    where = describe_sample(index, source)

    def fail(problem: str) -> InvalidSampleError:
        return InvalidSampleError(f"{where}: {problem}")

    missing = [key for key in (*REQUIRED_KEYS, *required) if key not in sample]
    if missing:
        present = ", ".join(sorted(sample)) or "nothing"
        raise fail(f"missing required key(s) {', '.join(missing)} (it has {present})")

    out: Sample = {}
    for key, value in sample.items():
        if not isinstance(key, str) or not key:
            raise fail(f"key {key!r} is not a non-empty string")
        if isinstance(value, str):
            out[key] = value
            continue
        try:
            array = np.asarray(value)
        except Exception as exc:  # noqa: BLE001 - ragged lists and the like
            raise fail(f"{key} cannot be read as an array ({exc})") from exc
        if array.dtype.kind not in "biuf":
            raise fail(f"{key} has dtype {array.dtype}; only numbers, booleans and strings can be stored")
        out[key] = array

    numbers = out["atomic_numbers"]
    if numbers.ndim != 1:
        raise fail(f"atomic_numbers has shape {numbers.shape}; expected [N]")
    num_atoms = numbers.shape[0]
    if num_atoms == 0:
        raise fail("the structure is empty (0 atoms)")

    for key, spec in _fields_present(out, declared):
        out[key] = _conform(key, out[key], spec, num_atoms, fail)

    numbers = out["atomic_numbers"]
    unknown = numbers[(numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)]
    if unknown.size:
        shown = sorted(set(unknown.tolist()))[:5]
        raise fail(f"atomic_numbers holds unknown element number(s) {shown}; elements are 1..{MAX_ATOMIC_NUMBER}")

    for key, array in out.items():
        if isinstance(array, np.ndarray) and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            if array.ndim == 0:
                raise fail(f"{key} is {float(array)}, not a finite number; correct or remove the value")
            bad = np.argwhere(~np.isfinite(array))
            first = tuple(int(i) for i in bad[0])
            raise fail(f"{key} holds NaN or infinite values ({len(bad)} of them, first at index {first}); "
                       f"correct or remove them")

    if "tags" in out and not np.isin(out["tags"], _OC20_TAGS).all():
        shown = sorted(set(out["tags"][~np.isin(out["tags"], _OC20_TAGS)].tolist()))[:5]
        raise fail(f"tags holds {shown}; OC20 tags are 0 (subsurface), 1 (surface), 2 (adsorbate)")

    if out["pbc"].any():
        if "cell" not in out:
            raise fail("pbc is set but there is no cell; give the lattice vectors as 'cell'")
        _check_periodic_cell(out["cell"], out["pbc"], min_distance or 0.0, fail)

    if min_distance is not None:
        _check_distances(out, float(min_distance), fail)
    return out


def _fields_present(sample: Mapping[str, Any],
                    declared: Mapping[str, FieldSpec] | None) -> list[tuple[str, FieldSpec]]:
    """Keys of ``sample`` with a declaration: registered ones in registry order, then ``declared`` ones."""
    present = [(key, spec) for key, spec in REGISTERED_FIELDS.items() if key in sample]
    if declared:
        present += [(key, spec) for key, spec in declared.items()
                    if key in sample and key not in REGISTERED_FIELDS]
    return present


def _conform(key: str, value: Any, spec: FieldSpec, num_atoms: int,
             fail: Callable[[str], InvalidSampleError]) -> np.ndarray:
    """``value`` checked against its declaration (shape, dtype kind) and cast to the canonical dtype."""
    if isinstance(value, str):
        raise fail(f"{key} is text ({value[:20]!r}), but it is a {spec.describe()}; store it as numbers")
    shape = value.shape
    if spec.per_atom:
        fits = len(shape) >= 1 and shape[0] == num_atoms and (spec.shape is None or shape[1:] == spec.shape)
    else:
        fits = spec.shape is None or shape == spec.shape
    if not fits:
        extra = f" but the structure has {num_atoms} atoms" if spec.per_atom else ""
        raise fail(f"{key} has shape {tuple(shape)}; expected {spec.shape_text()}{extra}")
    if spec.dtype == "int":
        if value.dtype.kind == "f":
            if not np.all(np.isfinite(value)) or np.any(value != np.round(value)):
                raise fail(f"{key} must hold integers, got non-integer values")
        elif value.dtype.kind not in "iub":
            raise fail(f"{key} must hold integers, got dtype {value.dtype}")
        return value.astype(np.int64)
    if spec.dtype == "bool":
        if value.dtype.kind not in "biu":
            raise fail(f"{key} must hold booleans, got dtype {value.dtype}")
        return value.astype(bool)
    if spec.dtype == "float":
        return value.astype(np.float64)
    return value


def _check_periodic_cell(cell: np.ndarray, pbc: np.ndarray, min_length: float,
                         fail: Callable[[str], InvalidSampleError]) -> None:
    """Refuse periodic directions whose lattice vector is missing, too short or not independent."""
    from matsciml.neighbors import degenerate_lattice  # lazy: vesin >= 0.5 imports torch

    lengths = np.linalg.norm(cell, axis=1)
    for direction in np.flatnonzero(pbc):
        if lengths[direction] == 0 or lengths[direction] < min_length:
            minimum = f" (the minimum is {min_length:g} Å)" if min_length else ""
            raise fail(f"cell vector {direction} of periodic direction {direction} is {lengths[direction]:.3f} Å "
                       f"long{minimum}; each atom would sit on its own periodic image; give the full cell, "
                       f"or set pbc to False along direction {direction}")
    if degenerate_lattice(cell[pbc]):
        raise fail(f"the cell vectors of the periodic directions {np.flatnonzero(pbc).tolist()} are degenerate "
                   f"((nearly) parallel or coplanar: {cell[pbc].round(6).tolist()}); give independent lattice "
                   f"vectors")


def _check_distances(sample: Sample, min_distance: float, fail: Callable[[str], InvalidSampleError]) -> None:
    """Refuse atoms (or an atom and a periodic image) closer than ``min_distance``; name the closest pair."""
    from matsciml.neighbors import neighbor_pairs  # lazy: vesin >= 0.5 imports torch

    pairs = neighbor_pairs(sample["pos"], sample.get("cell"), sample["pbc"], min_distance)
    if len(pairs.distances) == 0:
        return
    closest = int(np.lexsort((pairs.second, pairs.first, pairs.distances))[0])
    first, second = int(pairs.first[closest]), int(pairs.second[closest])
    image = pairs.images[closest]
    if second < first:  # name the lower index first: j seen from i at S is i seen from j at -S
        first, second, image = second, first, -image
    distance = float(pairs.distances[closest])
    count = len(pairs.distances)
    limit = f"(the minimum is {min_distance:g} Å" + (f"; {count} pairs are closer than that)" if count > 1 else ")")
    shown_image = "(" + ", ".join(str(int(k)) for k in image) + ")"
    if first == second:
        raise fail(f"atom {first} is {distance:.3f} Å from its own periodic image {shown_image} {limit}; "
                   f"the lattice has a vector that short (a sum of cell vectors), which puts every atom on "
                   f"its own image; check the cell")
    if not image.any():
        raise fail(f"atoms {first} and {second} are {distance:.3f} Å apart {limit}; two atoms at one "
                   f"position make forces and energies undefined; remove the duplicate atom")
    raise fail(f"atom {first} and the periodic image {shown_image} of atom {second} are {distance:.3f} Å "
               f"apart {limit}; two atoms at one position make forces and energies undefined; remove the "
               f"duplicate atom or check the cell")


def require_keys(sample: Mapping[str, Any], keys: Iterable[str], *, index: int | None = None,
                 source: str | None = None, purpose: str = "this task") -> None:
    """Raise if ``sample`` lacks any of ``keys`` (e.g. a task's targets)."""
    missing = [key for key in keys if key not in sample]
    if missing:
        raise InvalidSampleError(
            f"{describe_sample(index, source)}: {purpose} needs {', '.join(missing)}, "
            f"which the sample does not have (it has {', '.join(sorted(sample))})"
        )


ELEMENT_SYMBOLS: tuple[str, ...] = tuple(
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br "
    "Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm "
    "Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr "
    "Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og".split()
)
"""Chemical symbol of each atomic number (index 0 is a placeholder)."""
