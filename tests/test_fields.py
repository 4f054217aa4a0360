"""The field registry: every sample key declared once, and everything else reading it."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from matsciml import fields
from matsciml.errors import MatscimlError
from matsciml.fields import (
    FieldConflictError,
    FieldSpec,
    UnknownFieldError,
    check_declaration,
    declare_dataset_fields,
    field_spec,
    parse_field_option,
    register_field,
    registered_names,
)

CORE = Path(__file__).resolve().parents[1] / "core" / "matsciml"


@pytest.fixture(autouse=True)
def _no_leaks():
    """Registrations and dataset declarations of a test end with it."""
    with fields.isolated():
        yield


def _metadata(name: str = "mol", **keys: dict) -> dict:
    return {"name": name, "count": 4, "keys": keys}


# ---------------------------------------------------------------- the built-in declarations
@pytest.mark.parametrize("name, role, arity, shape, unit", [
    ("atomic_numbers", "structure", "atom", (), ""),
    ("pos", "structure", "atom", (3,), "Å"),
    ("cell", "structure", "structure", (3, 3), "Å"),
    ("pbc", "structure", "structure", (3,), ""),
    ("tags", "structure", "atom", (), ""),
    ("fixed", "structure", "atom", (), ""),
    ("energy", "target", "structure", (), "eV"),
    ("forces", "target", "atom", (3,), "eV/Å"),
    ("stress", "target", "structure", (3, 3), "eV/Å³"),
    ("relaxed_energy", "target", "structure", (), "eV"),
    ("free_energy", "target", "structure", (), "eV"),
    ("charges", "target", "atom", (), "e"),
    ("magmoms", "target", "atom", None, "μB"),
    ("dipole", "target", "structure", (3,), "e·Å"),
    ("band_gap", "target", "structure", (), "eV"),
    ("formation_energy_per_atom", "target", "structure", (), "eV/atom"),
    ("total_charge", "input", "structure", (), "e"),
    ("spin_multiplicity", "input", "structure", (), ""),
])
def test_builtin_fields(name, role, arity, shape, unit):
    """The data contract's keys and the field's common properties are declared with role, arity, shape, unit."""
    spec = field_spec(name)
    assert (spec.name, spec.role, spec.arity, spec.shape, spec.unit) == (name, role, arity, shape, unit)
    assert spec.meaning


def test_spec_describes_itself_for_people():
    spec = field_spec("charges")
    assert spec.describe() == "per-atom target in e (partial charge of each atom)"
    assert spec.shape_text() == "[N]" and field_spec("forces").shape_text() == "[N, 3]"
    assert field_spec("energy").shape_text() == "scalar" and field_spec("magmoms").shape_text() == "[N, ...]"
    assert field_spec("total_charge").describe().startswith("per-structure model input in e")


def test_old_names_are_derived_from_the_registry():
    """KNOWN_KEYS, STRUCTURE_KEYS and PER_ATOM_TARGETS are views of the one registry, not lists of their own."""
    from matsciml.batch import PER_ATOM_TARGETS
    from matsciml.data.schema import KNOWN_KEYS, STRUCTURE_KEYS

    assert STRUCTURE_KEYS == {"atomic_numbers", "pos", "cell", "pbc", "tags", "fixed", "dataset_index"}
    assert STRUCTURE_KEYS == registered_names(role="structure")
    assert {"forces", "charges", "magmoms", "energies"} <= PER_ATOM_TARGETS
    assert PER_ATOM_TARGETS == registered_names(role="target", arity="atom")
    register_field(FieldSpec("bader_charges", "target", "atom", (), "float", "e", "Bader charge"))
    assert "bader_charges" in KNOWN_KEYS  # a live view


def test_the_shape_heuristics_are_gone():
    """No module decides from an array's shape at read time whether a key is per atom."""
    for path in sorted(CORE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for old in ("is_per_atom", "_PER_ATOM_KEYS", "WELL_KNOWN_UNITS", "KeySpec", '"N" in spec.shape'):
            assert old not in text, (path, old)
    # the one place that reads an arity from shapes: the metadata written at conversion (schema and
    # collate compare rows with the atom count only to check a declared per-atom key)
    inferring = [path.relative_to(CORE).as_posix() for path in sorted(CORE.rglob("*.py"))
                 if re.search(r"shape\[0\] == natoms", path.read_text(encoding="utf-8"))]
    assert inferring == ["data/storage.py"]


# ---------------------------------------------------------------- registering
def test_register_field_for_a_plugin():
    spec = FieldSpec("bader_charges", "target", "atom", (), "float", "e", "Bader partial charge of each atom")
    assert register_field(spec, source="my-plugin") is spec
    assert field_spec("bader_charges") is spec
    assert register_field(FieldSpec("bader_charges", "target", "atom", (), "float", "e",
                                    "Bader partial charge of each atom")) is spec  # the same again: no-op
    assert "bader_charges" in registered_names(role="target", arity="atom")


def test_conflicting_registration_names_both():
    with pytest.raises(FieldConflictError) as info:
        register_field(FieldSpec("charges", "input", "structure", unit="e"), source="other-plugin")
    message = str(info.value)
    assert "'charges' is already registered by matsciml (built-in) as a per-atom target in e" in message
    assert "other-plugin declares it as a per-structure model input in e" in message
    assert "give the new field another name" in message
    assert field_spec("charges").role == "target"  # unchanged
    assert isinstance(info.value, MatscimlError)


def test_registered_field_leaves_with_isolated():
    with fields.isolated():
        register_field(FieldSpec("temporary_key", "target", "structure"))
        assert "temporary_key" in fields.REGISTERED_FIELDS
    assert "temporary_key" not in fields.REGISTERED_FIELDS


@pytest.mark.parametrize("kwargs, fragment", [
    ({"role": "label", "arity": "atom"}, "role 'label' is not one of structure, input, target"),
    ({"role": "target", "arity": "edge"}, "arity 'edge' is not one of atom, structure"),
    ({"role": "target", "arity": "atom", "dtype": "float32"}, "dtype 'float32' is not one of float, int, bool"),
    ({"role": "target", "arity": "atom", "shape": (3.0,)}, "shape (3.0,) is not a tuple of sizes"),
])
def test_bad_spec_is_refused_naming_the_field(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)) as info:
        FieldSpec("hirshfeld", **kwargs)
    assert "field 'hirshfeld'" in str(info.value)


# ---------------------------------------------------------------- looking up
def test_unknown_key_is_one_clear_error():
    with pytest.raises(UnknownFieldError) as info:
        field_spec("hirshfeld")
    message = str(info.value)
    assert "\n" not in message
    assert "key 'hirshfeld' is not a declared field" in message
    assert "--field hirshfeld=atom" in message and "register_field" in message
    with pytest.raises(UnknownFieldError, match="dataset 'mol' does not record its role and arity"):
        field_spec("hirshfeld", _metadata(other={"dtype": "float64", "shape": [], "count": 4}))


def test_custom_key_resolves_from_the_datasets_metadata():
    metadata = _metadata(hirshfeld={"dtype": "float64", "shape": ["N"], "count": 4, "role": "target",
                                    "arity": "atom", "unit": "e"},
                         solvent={"dtype": "int64", "shape": [], "count": 4, "role": "input",
                                  "arity": "structure", "unit": None})
    spec = field_spec("hirshfeld", metadata)
    assert (spec.role, spec.arity, spec.shape, spec.dtype, spec.unit) == ("target", "atom", (), "float", "e")
    spec = field_spec("solvent", metadata)
    assert (spec.role, spec.arity, spec.dtype, spec.unit) == ("input", "structure", "int", None)
    assert field_spec("charges", metadata).role == "target"  # registered: the registry's declaration
    assert set(fields.dataset_fields(metadata)) == {"hirshfeld", "solvent"}


def test_metadata_written_before_roles_falls_back_to_its_per_atom_flag():
    """Older metadata recorded only ``per_atom`` at conversion: that is used, never the shapes at read time."""
    metadata = _metadata(hirshfeld={"dtype": "float64", "shape": ["N"], "count": 4, "per_atom": True},
                         gap={"dtype": "float64", "shape": [], "count": 4, "per_atom": False},
                         dipole={"dtype": "float64", "shape": ["N"], "count": 4, "per_atom": True})
    assert field_spec("hirshfeld", metadata).arity == "atom"
    assert field_spec("gap", metadata).arity == "structure" and field_spec("gap", metadata).role == "target"
    # a 3-atom molecule's dipole looked per atom to the old shape rule; the registry wins over that guess
    assert field_spec("dipole", metadata).arity == "structure"


def test_metadata_contradicting_the_registry_is_refused():
    metadata = _metadata(charges={"dtype": "float64", "shape": [], "count": 4, "role": "input",
                                  "arity": "structure"})
    with pytest.raises(FieldConflictError, match="dataset 'mol' records 'charges' as a per-structure model "
                                                 "input, but the registered field 'charges'"):
        field_spec("charges", metadata)


def test_dataset_declarations_reach_code_without_metadata():
    """Opening a dataset declares its custom keys to the process: collate, handed bare samples, resolves them."""
    metadata = _metadata(hirshfeld={"dtype": "float64", "shape": ["N"], "count": 4, "role": "target",
                                    "arity": "atom", "unit": "e"})
    specs = declare_dataset_fields(metadata)
    assert specs["hirshfeld"].arity == "atom"
    assert field_spec("hirshfeld").arity == "atom"
    other = _metadata("other", hirshfeld={"dtype": "float64", "shape": [], "count": 2, "role": "target",
                                          "arity": "structure"})
    with pytest.warns(UserWarning, match="dataset 'other' declares 'hirshfeld' as a per-structure target, "
                                         "dataset 'mol' opened earlier as a per-atom target"):
        declare_dataset_fields(other)
    assert field_spec("hirshfeld").arity == "structure"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        declare_dataset_fields(other)  # the same dataset again: quiet


# ---------------------------------------------------------------- declarations at conversion
@pytest.mark.parametrize("option, expected", [
    ("total_charge=input", ("total_charge", {"role": "input"})),
    ("q=atom", ("q", {"arity": "atom"})),
    ("q=target,atom", ("q", {"role": "target", "arity": "atom"})),
    ("solvent = input , structure", ("solvent", {"role": "input", "arity": "structure"})),
])
def test_field_option_parses(option, expected):
    assert parse_field_option(option) == expected


@pytest.mark.parametrize("option, fragment", [
    ("q", "expected KEY=WORD"),
    ("q=per-atom", "'per-atom' is not a role or an arity"),
    ("q=input,target", "gives two roles (input and target)"),
])
def test_bad_field_option_names_it_and_the_words(option, fragment):
    with pytest.raises(MatscimlError) as info:
        parse_field_option(option)
    assert str(info.value).startswith(f"--field {option!r}") and fragment in str(info.value)


def test_declaration_must_agree_with_the_registry():
    assert check_declaration("charges", {"arity": "atom", "role": "target"}) == {"arity": "atom", "role": "target"}
    with pytest.raises(FieldConflictError, match="'charges' is declared a per-structure, but it is a registered "
                                                 "field .* a per-atom target in e"):
        check_declaration("charges", {"arity": "structure"})


def test_merging_files_that_disagree_is_refused():
    from matsciml.data.storage import merge_metadata

    def part(name: str, arity: str) -> dict:
        return {"name": name, "count": 1, "keys": {"q": {"dtype": "float64", "shape": [], "count": 1,
                                                         "role": "target", "arity": arity}},
                "statistics": {}, "elements": {}, "num_atoms": {"min": 1, "max": 1, "mean": 1.0, "total": 1}}

    with pytest.raises(FieldConflictError, match="datasets 'a' and 'b' record key 'q' with different arities"):
        merge_metadata([part("a", "atom"), part("b", "structure")])
    assert merge_metadata([part("a", "atom"), part("c", "atom")])["keys"]["q"]["arity"] == "atom"
