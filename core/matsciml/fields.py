"""The field registry: every sample key is declared once, here.

A sample (:mod:`matsciml.data.schema`) is a mapping of named arrays. What a
name means is declared once, as a :class:`FieldSpec`:

- role: ``"structure"`` (describes the structure: positions, cell, tags...),
  ``"input"`` (a condition the model is given: a total charge, a spin
  multiplicity) or ``"target"`` (a label a task may learn: energy, forces,
  partial charges);
- arity: ``"atom"`` (one row per atom, ``[N, ...]``) or ``"structure"``
  (one value per structure);
- for a per-structure value, whether it is **extensive** (a total over the
  atoms, which doubles in a structure twice the size: energy, total magnetic
  moment) or **intensive** (the same in a bigger copy: band gap, energy per
  atom); regression pools atom features by ``sum`` or ``mean`` accordingly;
- trailing shape, dtype kind, unit and meaning.

Validation, the metadata written at conversion, collation, statistics,
inspection and the test helpers all read these declarations.

Why declarations and not shapes: an array's shape cannot tell a per-atom
property from a per-structure vector that happens to be as long as the
structure has atoms (the dipole of a 3-atom molecule), nor a model input
from a target; deciding it from shapes in several places gave several
answers. So a key's role and arity come from one of three places, in this
order, and nothing decides them from an array at read time:

1. the registry: the built-in fields below and those a plugin adds with
   :func:`register_field`;
2. a dataset's metadata: conversion records the role and arity of every key
   it writes (``metadata["keys"][name]["role"]`` and ``["arity"]``); a key
   the registry does not know gets its arity from its shapes then, once
   (``matsciml data convert --field KEY=atom|structure|input|target`` to
   declare it instead; ``--field KEY=extensive|intensive`` records
   ``metadata["keys"][name]["extensive"]``);
3. the fields of datasets opened in this process
   (:func:`declare_dataset_fields`), so that code handed bare samples (a
   representation's collate) can resolve a dataset's custom keys without
   the dataset's metadata in hand.

This module needs only the standard library: importing it is cheap.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from matsciml.errors import MatscimlError

ROLES = ("structure", "input", "target")
"""What a key is for: describes the structure, is given to the model, or is learnt."""
ARITIES = ("atom", "structure")
"""How many values a key has: one per atom (``[N, ...]``) or one per structure."""
DTYPE_KINDS = ("float", "int", "bool")
"""Canonical dtypes: float64, int64 and bool (None in a spec: any numeric dtype)."""

_ROLE_WORDS = {"structure": "structure annotation", "input": "model input", "target": "target"}
_ARITY_WORDS = {"atom": "per-atom", "structure": "per-structure"}
_EXTENT_WORDS = {True: "extensive", False: "intensive"}


class UnknownFieldError(MatscimlError, LookupError):
    """A sample key that neither the registry nor the dataset's metadata declares."""


class FieldConflictError(MatscimlError, ValueError):
    """Two declarations of one key disagree (a key is declared once)."""


@dataclass(frozen=True)
class FieldSpec:
    """The declaration of one sample key.

    Attributes:
        name: the sample key.
        role: ``"structure"``, ``"input"`` or ``"target"`` (see :data:`ROLES`).
        arity: ``"atom"`` (the array is ``[N, *shape]``) or ``"structure"``
            (the array is ``shape``).
        shape: the trailing shape: ``()`` for one number per atom or per
            structure, ``(3,)`` for forces, ``(3, 3)`` for stress and cell;
            None when it may vary (collinear ``[N]`` or non-collinear
            ``[N, 3]`` magnetic moments).
        dtype: ``"float"``, ``"int"`` or ``"bool"`` (stored as float64, int64,
            bool), or None for any numeric dtype.
        unit: e.g. ``"eV/Å"``; ``""`` for a dimensionless number, None when
            unknown.
        meaning: one line for people (``matsciml data inspect``, the README).
        extensive: for a per-structure value, True when it is extensive (a
            sum over the atoms: a structure and a copy of it twice the size
            have values x and 2x; total energy, total magnetic moment), False
            when it is intensive (both have the same value: band gap, energy
            per atom, Fermi level); None when not said, and always None for a
            per-atom key. Property regression reads it for the default readout
            of a target: ``sum`` for extensive, ``mean`` for intensive.
    """

    name: str
    role: str
    arity: str
    shape: tuple[int, ...] | None = ()
    dtype: str | None = "float"
    unit: str | None = None
    meaning: str = ""
    extensive: bool | None = None

    def __post_init__(self) -> None:
        where = f"field {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"field name {self.name!r} is not a non-empty string; name the sample key")
        if self.role not in ROLES:
            raise ValueError(f"{where}: role {self.role!r} is not one of {', '.join(ROLES)}")
        if self.arity not in ARITIES:
            raise ValueError(f"{where}: arity {self.arity!r} is not one of {', '.join(ARITIES)}")
        if self.dtype is not None and self.dtype not in DTYPE_KINDS:
            raise ValueError(f"{where}: dtype {self.dtype!r} is not one of {', '.join(DTYPE_KINDS)} (or None)")
        if self.shape is not None:
            shape = tuple(self.shape)
            if not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape):
                raise ValueError(f"{where}: shape {self.shape!r} is not a tuple of sizes (or None)")
            object.__setattr__(self, "shape", shape)
        if self.extensive is not None and not isinstance(self.extensive, bool):
            raise ValueError(f"{where}: extensive {self.extensive!r} is not True, False or None")
        if self.extensive is not None and self.per_atom:
            raise ValueError(f"{where}: a per-atom field is neither extensive nor intensive (it has a value per "
                             f"atom, nothing to pool); leave extensive None")

    @property
    def per_atom(self) -> bool:
        """True when the array has one row per atom."""
        return self.arity == "atom"

    def shape_text(self) -> str:
        """The full shape for people: ``[N, 3]``, ``[3, 3]``, ``scalar``, ``[N, ...]``."""
        if self.shape is None:
            return "[N, ...]" if self.per_atom else "any shape"
        dims = (["N"] if self.per_atom else []) + [str(size) for size in self.shape]
        return "[" + ", ".join(dims) + "]" if dims else "scalar"

    def describe(self) -> str:
        """``per-atom target in e (partial charge of each atom)``: role, arity, unit, extent, meaning."""
        unit = "" if self.unit in (None, "") else f" in {self.unit}"
        extent = "" if self.extensive is None else f", {_EXTENT_WORDS[self.extensive]}"
        meaning = f" ({self.meaning})" if self.meaning else ""
        return f"{_ARITY_WORDS[self.arity]} {_ROLE_WORDS[self.role]}{unit}{extent}{meaning}"


# ---------------------------------------------------------------- the registry
_REGISTERED: dict[str, FieldSpec] = {}
_REGISTERED_BY: dict[str, str] = {}
_DECLARED: dict[str, tuple[FieldSpec, str]] = {}  # fields of datasets opened in this process, by name

REGISTERED_FIELDS: Mapping[str, FieldSpec] = MappingProxyType(_REGISTERED)
"""Every registered field by name, in registration order (a live, read-only view)."""


def register_field(spec: FieldSpec, *, source: str | None = None) -> FieldSpec:
    """Declare a sample key for every dataset, model and task of this process.

    Plugins call this at import time for the keys their datasets or models
    bring (``register_field(FieldSpec("bader_charges", "target", "atom",
    unit="e", meaning="Bader partial charge of each atom"), source="my-plugin")``).
    Registering the same declaration again does nothing.

    Args:
        spec: the declaration.
        source: who declares it, named in conflict messages (a distribution name).

    Returns:
        The registered spec.

    Raises:
        FieldConflictError: the name is registered with another declaration;
            the message names both and their sources.
    """
    if not isinstance(spec, FieldSpec):
        raise TypeError(f"register_field takes a FieldSpec, got {type(spec).__name__}")
    source = source or "a call to matsciml.fields.register_field"
    existing = _REGISTERED.get(spec.name)
    if existing is not None:
        if existing == spec:
            return existing
        raise FieldConflictError(
            f"field {spec.name!r} is already registered by {_REGISTERED_BY[spec.name]} as a {existing.describe()}; "
            f"{source} declares it as a {spec.describe()}; a key is declared once: give the new field another name"
        )
    _REGISTERED[spec.name] = spec
    _REGISTERED_BY[spec.name] = source
    return spec


@contextmanager
def isolated() -> Iterator[None]:
    """Undo, on leaving the block, every registration and dataset declaration made in it.

    For tests (the core's and plugins'): a field registered or a dataset
    opened in one test does not leak into the next.
    """
    saved = dict(_REGISTERED), dict(_REGISTERED_BY), dict(_DECLARED)
    try:
        yield
    finally:
        for table, content in zip((_REGISTERED, _REGISTERED_BY, _DECLARED), saved):
            table.clear()
            table.update(content)


def registered_names(role: str | None = None, arity: str | None = None) -> frozenset[str]:
    """Names of the registered fields, optionally only those of one role and/or arity."""
    return frozenset(name for name, spec in _REGISTERED.items()
                     if (role is None or spec.role == role) and (arity is None or spec.arity == arity))


def field_spec(name: str, metadata: Mapping[str, Any] | None = None) -> FieldSpec:
    """The declaration of sample key ``name``.

    Looked up in the registry first; for a key it does not know, in
    ``metadata`` (a dataset's metadata record, whose ``keys`` entry records
    each key's role and arity at conversion) when given, else among the
    fields of the datasets opened in this process.

    Raises:
        UnknownFieldError: no declaration anywhere; the message says how to declare one.
        FieldConflictError: ``metadata`` records a role or arity for a
            registered key that the registry contradicts.
    """
    spec = _REGISTERED.get(name)
    if spec is not None:
        if metadata is not None:
            _check_recorded(spec, _key_info(metadata, name), _dataset_name(metadata))
        return spec
    if metadata is not None:
        info = _key_info(metadata, name)
        if info is not None:
            recorded = _spec_from_record(name, info, _dataset_name(metadata))
            if recorded is not None:
                return recorded
        raise UnknownFieldError(
            f"key {name!r} is not a registered field and dataset {_dataset_name(metadata)} does not record its "
            f"role and arity; convert the data again with `matsciml data convert` (add --field {name}=atom or "
            f"--field {name}=structure to declare it), or register it with matsciml.fields.register_field"
        )
    declared = _DECLARED.get(name)
    if declared is not None:
        return declared[0]
    raise UnknownFieldError(
        f"key {name!r} is not a declared field: it is not registered (matsciml.fields) and no dataset opened in "
        f"this process declares it; open its dataset first (conversion records every key's role and arity; "
        f"--field {name}=atom or --field {name}=structure declares it), or register it with "
        f"matsciml.fields.register_field"
    )


def dataset_fields(metadata: Mapping[str, Any]) -> dict[str, FieldSpec]:
    """The declaration of every key of a dataset, from the registry or its metadata."""
    return {name: field_spec(name, metadata) for name in metadata.get("keys", {})}


def declare_dataset_fields(metadata: Mapping[str, Any], source: str | None = None) -> dict[str, FieldSpec]:
    """Make a dataset's custom keys known to this process; call it when the dataset is opened.

    A representation's collate is handed bare samples: this is how it learns
    the role and arity that conversion recorded for keys the registry does
    not know. Registered keys are checked against the metadata instead. A
    key declared differently by a dataset opened earlier in this process
    takes this dataset's declaration, with a warning naming both datasets.

    Returns:
        The declaration of every key of the dataset.

    Raises:
        FieldConflictError: the metadata contradicts a registered field.
        UnknownFieldError: the metadata records a key without role or arity.
    """
    source = source or _dataset_name(metadata)
    specs = dataset_fields(metadata)
    for name, spec in specs.items():
        if name in _REGISTERED:
            continue
        earlier = _DECLARED.get(name)
        if (earlier is not None and earlier[1] != source
                and (earlier[0].role, earlier[0].arity, earlier[0].extensive)
                != (spec.role, spec.arity, spec.extensive)):
            warnings.warn(
                f"dataset {source} declares {name!r} as a {spec.describe()}, dataset {earlier[1]} opened earlier "
                f"as a {earlier[0].describe()}; batches collated from now on in this process use the declaration "
                f"of {source}", stacklevel=2)
        _DECLARED[name] = (spec, source)
    return specs


# ---------------------------------------------------------------- declarations at conversion
_OPTION_WORDS = {"target": ("role", "target"), "input": ("role", "input"),
                 "atom": ("arity", "atom"), "structure": ("arity", "structure"),
                 "extensive": ("extent", "extensive"), "intensive": ("extent", "intensive")}
_ASPECT_PLURALS = {"role": "roles", "arity": "arities", "extent": "extents"}
EXTENTS = ("extensive", "intensive")
"""The words of a declaration's ``extent``: a total over the atoms, or a value independent of the size."""
_OPTION_HELP = ("use target or input (the role), atom or structure (one value per atom or per structure) and/or "
                "extensive or intensive (a per-structure total over the atoms, or a value independent of the "
                "size), comma-separated, e.g. --field total_charge=input, --field q=target,atom or "
                "--field gap=target,intensive")


def parse_field_option(text: str) -> tuple[str, dict[str, str]]:
    """One ``--field KEY=WORD[,WORD]`` option of ``matsciml data convert`` as ``(key, declaration)``.

    The words are ``target`` or ``input`` (the role), ``atom`` or
    ``structure`` (the arity) and ``extensive`` or ``intensive`` (the
    extent of a per-structure value, the default readout of a regression on
    it: sum or mean); ``"q=input,atom"`` gives
    ``("q", {"role": "input", "arity": "atom"})`` and ``"gap=intensive"``
    ``("gap", {"extent": "intensive"})``.

    Raises:
        MatscimlError: naming the option, what is wrong and the words it takes.
    """
    key, sep, words = text.partition("=")
    key = key.strip()
    if not sep or not key or not words.strip():
        raise MatscimlError(f"--field {text!r}: expected KEY=WORD; {_OPTION_HELP}")
    declaration: dict[str, str] = {}
    for word in (part.strip() for part in words.split(",")):
        if word not in _OPTION_WORDS:
            raise MatscimlError(f"--field {text!r}: {word!r} is not a role or an arity, nor extensive or "
                                f"intensive; {_OPTION_HELP}")
        aspect, value = _OPTION_WORDS[word]
        if declaration.get(aspect, value) != value:
            raise MatscimlError(f"--field {text!r} gives two {_ASPECT_PLURALS[aspect]} "
                                f"({declaration[aspect]} and {value}); give one")
        declaration[aspect] = value
    return key, declaration


def check_declaration(name: str, declaration: Mapping[str, str]) -> dict[str, str]:
    """A conversion-time declaration (``{"role": ..., "arity": ..., "extent": ...}``, each optional) checked.

    ``extent`` is ``"extensive"`` or ``"intensive"``; only a per-structure
    value has one, so a declaration with an extent and no arity is returned
    with ``"arity": "structure"`` (the word says what the shapes could only
    guess). Declaring a registered key again is allowed when it agrees with
    the registry, so scripts may spell out what they rely on.

    Raises:
        FieldConflictError: it contradicts the registered field (both named).
        MatscimlError: an unknown aspect, role, arity or extent, or an extent
            declared for a per-atom key.
    """
    unknown = sorted(set(declaration) - {"role", "arity", "extent"})
    if unknown:
        raise MatscimlError(f"declaration of {name!r}: {', '.join(unknown)} is not role, arity or extent")
    role, arity, extent = declaration.get("role"), declaration.get("arity"), declaration.get("extent")
    if role is not None and role not in ROLES:
        raise MatscimlError(f"declaration of {name!r}: role {role!r} is not one of {', '.join(ROLES)}")
    if arity is not None and arity not in ARITIES:
        raise MatscimlError(f"declaration of {name!r}: arity {arity!r} is not one of {', '.join(ARITIES)}")
    if extent is not None and extent not in EXTENTS:
        raise MatscimlError(f"declaration of {name!r}: extent {extent!r} is not one of {', '.join(EXTENTS)}")
    spec = _REGISTERED.get(name)
    extensive = None if extent is None else extent == "extensive"
    if spec is not None and (role not in (None, spec.role) or arity not in (None, spec.arity)
                             or extensive not in (None, spec.extensive)):
        said = " ".join(word for word in (arity and _ARITY_WORDS[arity], role and _ROLE_WORDS[role]) if word)
        said = ", ".join(word for word in (said and _article(said), extent) if word)
        raise FieldConflictError(
            f"{name!r} is declared {said}, but it is a registered field ({_REGISTERED_BY[name]}): a "
            f"{spec.describe()}; a registered key cannot be declared otherwise: drop the declaration, or rename "
            f"the key in the source files")
    if extent is not None and (arity or (spec.arity if spec is not None else None)) == "atom":
        raise MatscimlError(
            f"{name!r} is declared {extent} and per atom: only a per-structure value (one number per structure) "
            f"is extensive or intensive; drop {extent}, or declare it structure")
    checked = dict(declaration)
    if extent is not None:
        checked.setdefault("arity", "structure")
    return checked


def _article(words: str) -> str:
    return f"an {words}" if words[:1] in ("a", "e", "i", "o", "u") else f"a {words}"


def _dataset_name(metadata: Mapping[str, Any]) -> str:
    name = metadata.get("name")
    return repr(name) if name else "(unnamed)"


def _key_info(metadata: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    keys = metadata.get("keys")
    info = keys.get(name) if isinstance(keys, Mapping) else None
    return info if isinstance(info, Mapping) else None


def _recorded_arity(info: Mapping[str, Any]) -> str | None:
    arity = info.get("arity")
    if arity in ARITIES:
        return arity
    if isinstance(info.get("per_atom"), bool):  # metadata written before roles and arities were recorded
        return "atom" if info["per_atom"] else "structure"
    return None


def _check_recorded(spec: FieldSpec, info: Mapping[str, Any] | None, dataset: str) -> None:
    """Refuse metadata that records another role or arity for a registered key."""
    if info is None:
        return
    # Only what conversion declared counts: the "per_atom" flag of older metadata was read from
    # shapes for keys the schema did not know then (a 3-atom molecule's dipole looked per atom).
    role = info.get("role", spec.role)
    arity = info.get("arity", spec.arity)
    extensive = info.get("extensive")
    if isinstance(extensive, bool) and spec.extensive is not None and extensive != spec.extensive:
        raise FieldConflictError(
            f"dataset {dataset} records {spec.name!r} as {_EXTENT_WORDS[extensive]}, but the registered field "
            f"{spec.name!r} ({_REGISTERED_BY.get(spec.name, 'the registry')}) is a {spec.describe()}; "
            f"convert the data again, renaming the key in the source files")
    if role != spec.role or arity != spec.arity:
        recorded = f"{_ARITY_WORDS.get(arity, arity)} {_ROLE_WORDS.get(role, role)}"
        raise FieldConflictError(
            f"dataset {dataset} records {spec.name!r} as a {recorded}, but the registered field "
            f"{spec.name!r} ({_REGISTERED_BY.get(spec.name, 'the registry')}) is a {spec.describe()}; "
            f"convert the data again, renaming the key in the source files")


_DTYPE_KIND_OF = {"f": "float", "i": "int", "u": "int", "b": "bool"}


def _spec_from_record(name: str, info: Mapping[str, Any], dataset: str) -> FieldSpec | None:
    """The spec a dataset's metadata records for a key the registry does not know (None if incomplete)."""
    arity = _recorded_arity(info)
    if arity is None:
        return None
    role = info.get("role", "target")
    if role not in ROLES:
        raise UnknownFieldError(f"dataset {dataset} records role {role!r} for key {name!r}, which is not one of "
                                f"{', '.join(ROLES)}; convert the data again")
    shape = info.get("shape")
    trailing: tuple[int, ...] | None = None
    if isinstance(shape, list) and all(isinstance(size, int) for size in shape[1 if arity == "atom" else 0:]):
        trailing = tuple(shape[1:]) if arity == "atom" else tuple(shape)
    dtype = info.get("dtype")
    kind = None
    if isinstance(dtype, str) and dtype != "str":
        try:
            import numpy as np

            kind = _DTYPE_KIND_OF.get(np.dtype(dtype).kind)
        except TypeError:
            kind = None
    unit = info.get("unit")
    extensive = info.get("extensive")
    if extensive is not None and (not isinstance(extensive, bool) or arity == "atom"):
        raise UnknownFieldError(f"dataset {dataset} records extensive={extensive!r} for the {_ARITY_WORDS[arity]} "
                                f"key {name!r}; only a per-structure key is extensive (true) or intensive "
                                f"(false); convert the data again")
    return FieldSpec(name, role, arity, trailing, kind, unit if isinstance(unit, str) else None,
                     extensive=extensive)


# ---------------------------------------------------------------- built-in fields
def _register_builtins(specs: Iterable[FieldSpec]) -> None:
    for spec in specs:
        register_field(spec, source="matsciml (built-in)")


_register_builtins([
    # the structure (DESIGN.md, "The data contract")
    FieldSpec("atomic_numbers", "structure", "atom", (), "int", "", "element of each atom (1..118)"),
    FieldSpec("pos", "structure", "atom", (3,), "float", "Å", "Cartesian positions"),
    FieldSpec("cell", "structure", "structure", (3, 3), "float", "Å", "lattice vectors as rows"),
    FieldSpec("pbc", "structure", "structure", (3,), "bool", "", "periodic directions"),
    FieldSpec("tags", "structure", "atom", (), "int", "", "OC20 tags: 0 fixed subsurface, 1 surface, 2 adsorbate"),
    FieldSpec("fixed", "structure", "atom", (), "bool", "", "atoms held fixed in the source calculation"),
    FieldSpec("dataset_index", "structure", "structure", (), "int", "",
              "which dataset of a run on several datasets the structure comes from (0, 1, ... as listed)"),
    # the targets of the energy tasks; per-structure targets say whether they are totals over the atoms
    # (extensive) or not (intensive); per-atom fields leave it None
    FieldSpec("energy", "target", "structure", (), "float", "eV", "total energy of the structure", extensive=True),
    FieldSpec("forces", "target", "atom", (3,), "float", "eV/Å", "force on each atom"),
    # stress is the energy's derivative per unit volume: the same for a supercell
    FieldSpec("stress", "target", "structure", (3, 3), "float", "eV/Å³", "stress tensor", extensive=False),
    FieldSpec("relaxed_energy", "target", "structure", (), "float", "eV", "energy after relaxation (IS2RE target)",
              extensive=True),
    FieldSpec("free_energy", "target", "structure", (), "float", "eV",
              "free energy of the structure (with electronic smearing)", extensive=True),
    # properties common in the field's data files (ASE calculator results, Materials Project)
    FieldSpec("energies", "target", "atom", (), "float", "eV", "energy of each atom"),
    FieldSpec("charges", "target", "atom", (), "float", "e", "partial charge of each atom"),
    FieldSpec("magmoms", "target", "atom", None, "float", "μB",
              "magnetic moment of each atom: [N] collinear or [N, 3] non-collinear"),
    FieldSpec("magmom", "target", "structure", (), "float", "μB", "total magnetic moment", extensive=True),
    # A dipole moment is a sum over the charges (Σ q_i r_i): two far-apart copies of a molecule, or a 2x1x1
    # supercell's cell, carry twice the dipole. Extensive; its intensive counterpart is the polarisation
    # (dipole per volume), a key of its own.
    FieldSpec("dipole", "target", "structure", (3,), "float", "e·Å", "electric dipole moment", extensive=True),
    FieldSpec("band_gap", "target", "structure", (), "float", "eV", "electronic band gap", extensive=False),
    FieldSpec("efermi", "target", "structure", (), "float", "eV", "Fermi energy", extensive=False),
    FieldSpec("energy_per_atom", "target", "structure", (), "float", "eV/atom", "total energy per atom",
              extensive=False),
    FieldSpec("uncorrected_energy_per_atom", "target", "structure", (), "float", "eV/atom",
              "total energy per atom before Materials Project corrections", extensive=False),
    FieldSpec("formation_energy_per_atom", "target", "structure", (), "float", "eV/atom",
              "formation energy per atom", extensive=False),
    FieldSpec("energy_above_hull", "target", "structure", (), "float", "eV/atom",
              "energy above the convex hull of stability", extensive=False),
    # conditions a model is given, never learnt (nothing pools them: neither extensive nor intensive is said)
    FieldSpec("total_charge", "input", "structure", (), "float", "e", "net charge of the structure"),
    FieldSpec("spin_multiplicity", "input", "structure", (), "int", "", "spin multiplicity 2S+1 of the structure"),
])

__all__ = [
    "ARITIES",
    "DTYPE_KINDS",
    "EXTENTS",
    "REGISTERED_FIELDS",
    "ROLES",
    "FieldConflictError",
    "FieldSpec",
    "UnknownFieldError",
    "check_declaration",
    "dataset_fields",
    "declare_dataset_fields",
    "field_spec",
    "isolated",
    "parse_field_option",
    "register_field",
    "registered_names",
]
