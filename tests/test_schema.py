"""The sample schema: every bad input is refused with a message naming the sample and the problem."""
from __future__ import annotations

import re

import numpy as np
import pytest

from matsciml.data.schema import require_keys, validate_sample
from matsciml.errors import InvalidSampleError, MatscimlError

WHERE = "sample 17 of lips.extxyz"
NATOMS = 83


def good_sample(natoms: int = NATOMS, seed: int = 0) -> dict:
    """A valid periodic structure with energy, forces, stress and OC20-style tags."""
    rng = np.random.default_rng(seed)
    return {
        "atomic_numbers": rng.choice([3, 15, 16], size=natoms).astype(np.int64),
        "pos": rng.uniform(0.0, 10.0, size=(natoms, 3)),
        "cell": np.diag([10.0, 11.0, 12.0]),
        "pbc": np.array([True, True, True]),
        "tags": rng.integers(0, 3, size=natoms),
        "fixed": rng.integers(0, 2, size=natoms).astype(bool),
        "energy": np.float64(-357.5),
        "forces": rng.normal(size=(natoms, 3)),
        "stress": np.eye(3) * 0.01,
        "band_gap": 1.25,
        "crystal_system": "Trigonal",
    }


def refuse(sample: dict, *fragments: str, **options) -> str:
    """Validate ``sample`` as sample 17 of lips.extxyz; assert it fails naming it and every fragment."""
    with pytest.raises(InvalidSampleError) as info:
        validate_sample(sample, index=17, source="lips.extxyz", **options)
    message = str(info.value)
    assert message.startswith(WHERE + ":"), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def with_(**changes) -> dict:
    sample = good_sample()
    sample.update(changes)
    return sample


def test_valid_sample_passes_with_canonical_dtypes():
    """A valid sample is accepted and returned with int64 / float64 / bool arrays, other keys untouched."""
    sample = good_sample()
    sample["atomic_numbers"] = sample["atomic_numbers"].astype(np.int32)
    sample["pos"] = sample["pos"].astype(np.float32)
    sample["pbc"] = np.array([1, 1, 0])
    sample["cell"] = sample["cell"].tolist()
    sample["tags"] = sample["tags"].astype(np.uint8)
    sample["fixed"] = sample["fixed"].astype(np.int8)
    sample["energy"] = -357.5
    out = validate_sample(sample, index=17, source="lips.extxyz")
    assert out["atomic_numbers"].dtype == np.int64
    assert out["tags"].dtype == np.int64
    for key in ("pos", "cell", "energy", "forces", "stress"):
        assert out[key].dtype == np.float64, key
    assert out["pbc"].dtype == np.bool_ and out["pbc"].tolist() == [True, True, False]
    assert out["fixed"].dtype == np.bool_
    assert out["energy"].shape == ()
    assert out["pos"].shape == (NATOMS, 3)
    np.testing.assert_array_equal(out["atomic_numbers"], sample["atomic_numbers"])
    np.testing.assert_allclose(out["pos"], sample["pos"].astype(np.float64), rtol=0, atol=0)
    assert out["crystal_system"] == "Trigonal"
    assert float(out["band_gap"]) == 1.25


def test_valid_sample_without_optional_keys():
    """Only atomic_numbers, pos and pbc are required; a molecule without cell is valid."""
    out = validate_sample({"atomic_numbers": [8, 1, 1], "pos": np.zeros((3, 3)) + np.arange(3)[:, None],
                           "pbc": [False, False, False]})
    assert set(out) == {"atomic_numbers", "pos", "pbc"}


def test_integral_float_atomic_numbers_are_accepted():
    """Atomic numbers given as integral floats become int64."""
    out = validate_sample(with_(atomic_numbers=np.full(NATOMS, 3.0)))
    assert out["atomic_numbers"].dtype == np.int64 and (out["atomic_numbers"] == 3).all()


def test_error_is_a_matsciml_and_value_error():
    """InvalidSampleError is both a MatscimlError (CLI one-liner) and a ValueError."""
    with pytest.raises(MatscimlError):
        validate_sample(with_(pos=np.zeros((NATOMS, 2))))
    with pytest.raises(ValueError):
        validate_sample(with_(pos=np.zeros((NATOMS, 2))))


def test_message_without_source_or_index():
    """Without index/source the message still starts with 'sample' and names the problem."""
    with pytest.raises(InvalidSampleError, match=r"^sample 4: pos has shape"):
        validate_sample(with_(pos=np.zeros((NATOMS, 2))), index=4)
    with pytest.raises(InvalidSampleError, match=r"^sample of x\.xyz: pos has shape"):
        validate_sample(with_(pos=np.zeros((NATOMS, 2))), source="x.xyz")


# ------------------------------------------------------------------ shapes
def test_pos_with_two_columns():
    """pos of shape [N,2] names pos, the shape found and the expected [N, 3]."""
    refuse(with_(pos=np.zeros((NATOMS, 2))), "pos", "(83, 2)", "[N, 3]", "83 atoms")


def test_pos_with_wrong_number_of_rows():
    """pos with fewer rows than atoms names the atom count."""
    refuse(with_(pos=np.zeros((NATOMS - 1, 3))), "pos", "(82, 3)", "83 atoms")


def test_cell_flat_vector():
    """A cell given as [3] instead of [3,3] is refused naming cell and both shapes."""
    refuse(with_(cell=np.array([10.0, 10.0, 10.0])), "cell", "(3,)", "[3, 3]")


def test_forces_one_row_short():
    """forces [N-1,3] is refused naming forces, the shape and the number of atoms."""
    refuse(with_(forces=np.zeros((NATOMS - 1, 3))), "forces", "(82, 3)", "83 atoms")


def test_pbc_wrong_length():
    """pbc must have three entries."""
    refuse(with_(pbc=np.array([True, True])), "pbc", "(2,)", "[3]")


def test_atomic_numbers_two_dimensional():
    """atomic_numbers must be a vector."""
    refuse(with_(atomic_numbers=np.ones((NATOMS, 1), dtype=int)), "atomic_numbers", "(83, 1)")


def test_energy_not_scalar():
    """A vector energy is refused: energy is one number per structure."""
    refuse(with_(energy=np.array([1.0, 2.0])), "energy", "(2,)")


def test_tags_wrong_length():
    """tags with a length other than the atom count is refused."""
    refuse(with_(tags=np.zeros(NATOMS + 1, dtype=int)), "tags", "(84,)", "83 atoms")


def test_stress_wrong_shape():
    """stress must be [3,3]."""
    refuse(with_(stress=np.zeros(6)), "stress", "(6,)", "[3, 3]")


# ------------------------------------------------------------------ finiteness
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_position(bad):
    """NaN or inf in pos is refused naming pos, NaN/infinite and the first bad index."""
    pos = good_sample()["pos"]
    pos[5, 1] = bad
    refuse(with_(pos=pos), "pos", "NaN or infinite", "(5, 1)")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_energy(bad):
    """A NaN or infinite energy is refused naming energy."""
    refuse(with_(energy=np.float64(bad)), "energy", "NaN or infinite")


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_non_finite_forces(bad):
    """NaN or inf in forces is refused naming forces and how many values are bad."""
    forces = good_sample()["forces"]
    forces[0, 0] = bad
    forces[40, 2] = bad
    refuse(with_(forces=forces), "forces", "NaN or infinite", "2 of them", "(0, 0)")


def test_non_finite_property():
    """A NaN in any float property (not only schema keys) is refused."""
    refuse(with_(band_gap=float("nan")), "band_gap", "NaN")


def test_non_finite_cell():
    """An infinite cell entry is refused naming cell."""
    cell = np.diag([10.0, 10.0, 10.0])
    cell[2, 2] = np.inf
    refuse(with_(cell=cell), "cell", "NaN or infinite")


# ------------------------------------------------------------------ elements
@pytest.mark.parametrize("z", [0, 119, -1, 200])
def test_unknown_element_number(z):
    """Element numbers outside 1..118 are refused naming the number and the valid range."""
    numbers = good_sample()["atomic_numbers"]
    numbers[10] = z
    refuse(with_(atomic_numbers=numbers), "atomic_numbers", f"[{z}]", "1..118")


def test_element_118_and_1_are_valid():
    """The edges of the periodic table are valid elements."""
    numbers = np.full(NATOMS, 1)
    numbers[0] = 118
    assert validate_sample(with_(atomic_numbers=numbers))["atomic_numbers"][0] == 118


def test_non_integral_atomic_numbers():
    """Atomic numbers such as 3.5 are refused."""
    refuse(with_(atomic_numbers=np.full(NATOMS, 3.5)), "atomic_numbers", "integers")


# ------------------------------------------------------------------ empty / missing
def test_empty_structure():
    """A structure with zero atoms is refused as empty."""
    sample = {"atomic_numbers": np.zeros(0, dtype=np.int64), "pos": np.zeros((0, 3)),
              "pbc": np.array([False] * 3)}
    refuse(sample, "empty", "0 atoms")


def test_missing_pos():
    """A sample without pos is refused naming the missing key and what it has."""
    sample = good_sample()
    del sample["pos"]
    message = refuse(sample, "missing", "pos")
    assert "atomic_numbers" in message  # says what the sample does have


def test_missing_several_required_keys():
    """Every missing required key is named."""
    refuse({"pos": np.zeros((2, 3))}, "atomic_numbers", "pbc")


def test_missing_required_task_keys_in_validate():
    """validate_sample(required=...) refuses a sample lacking a task's targets."""
    sample = good_sample()
    del sample["forces"]
    refuse(sample, "forces", required=("energy", "forces"))


def test_require_keys_names_sample_purpose_and_keys():
    """require_keys names the sample, the purpose and each missing key."""
    sample = validate_sample(good_sample())
    del sample["energy"], sample["forces"]
    with pytest.raises(InvalidSampleError) as info:
        require_keys(sample, ("energy", "forces"), index=17, source="lips.extxyz", purpose="task s2ef")
    message = str(info.value)
    assert message.startswith(WHERE + ":")
    assert "task s2ef" in message and "energy" in message and "forces" in message
    require_keys(good_sample(), ("energy", "forces"))  # present: no error


# ------------------------------------------------------------------ tags, cell
@pytest.mark.parametrize("bad", [3, -1, 7])
def test_tags_outside_oc20_convention(bad):
    """Tags other than 0/1/2 are refused naming the value and the convention."""
    tags = np.zeros(NATOMS, dtype=np.int64)
    tags[3] = bad
    refuse(with_(tags=tags), "tags", f"[{bad}]", "0 (subsurface)", "2 (adsorbate)")


def test_pbc_without_cell():
    """Periodic boundaries without a cell are refused."""
    sample = good_sample()
    del sample["cell"]
    refuse(sample, "pbc", "no cell")


@pytest.mark.parametrize("cell", [
    np.zeros((3, 3)),
    np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]]),
    np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 0.0]]),
])
def test_degenerate_cell(cell):
    """A zero, parallel or missing lattice vector in a periodic direction is refused."""
    refuse(with_(cell=cell), "degenerate")


def test_zero_vector_in_non_periodic_direction_is_allowed():
    """A slab (pbc T,T,F) may have a zero third cell vector."""
    cell = np.diag([5.0, 5.0, 0.0])
    out = validate_sample(with_(cell=cell, pbc=np.array([True, True, False])))
    assert out["pbc"].tolist() == [True, True, False]


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("key, value, fragment", [
    ("pos", np.full((NATOMS, 3), "x"), "pos"),
    ("pos", np.zeros((NATOMS, 3), dtype=complex), "complex"),
    ("energy", np.array(None, dtype=object), "energy"),
    ("band_gap", np.array([b"a", b"b"]), "band_gap"),
])
def test_non_numeric_dtype(key, value, fragment):
    """Arrays of strings, complex numbers or objects are refused naming key and dtype."""
    message = refuse(with_(**{key: value}), fragment, "dtype")
    assert re.search(r"dtype \S+", message)


def test_ragged_array():
    """A ragged list that is not an array is refused naming the key."""
    refuse(with_(extra=[[1.0, 2.0], [3.0]]), "extra")


def test_fixed_must_be_boolean():
    """fixed given as floats is refused (it must hold booleans)."""
    refuse(with_(fixed=np.zeros(NATOMS, dtype=float)), "fixed", "boolean")
