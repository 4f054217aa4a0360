"""The sample schema: every bad input is refused with a message naming the sample and the problem."""
from __future__ import annotations

import inspect
import re
import subprocess
import sys

import numpy as np
import pytest

from matsciml.data.schema import MIN_INTERATOMIC_DISTANCE, require_keys, validate_sample
from matsciml.errors import InvalidSampleError, MatscimlError

WHERE = "sample 17 of lips.extxyz"
NATOMS = 83


def good_sample(natoms: int = NATOMS, seed: int = 0) -> dict:
    """A valid periodic structure with energy, forces, stress and OC20-style tags.

    Atoms sit on a jittered 5 x 5 x 4 grid of the 10 x 11 x 12 Å cell, so no two
    (images included) are closer than 1.4 Å.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(5), np.arange(5), np.arange(4), indexing="ij"), -1).reshape(-1, 3)
    sites = (grid[rng.permutation(len(grid))[:natoms]] + 0.5) * np.array([2.0, 2.2, 3.0])
    return {
        "atomic_numbers": rng.choice([3, 15, 16], size=natoms).astype(np.int64),
        "pos": sites + rng.uniform(-0.3, 0.3, size=(natoms, 3)),
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
    refuse(with_(energy=np.float64(bad)), f"energy is {bad}", "not a finite number")


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_non_finite_forces(bad):
    """NaN or inf in forces is refused naming forces and how many values are bad."""
    forces = good_sample()["forces"]
    forces[0, 0] = bad
    forces[40, 2] = bad
    refuse(with_(forces=forces), "forces", "NaN or infinite", "2 of them", "(0, 0)")


def test_non_finite_property():
    """A NaN in any float property (not only schema keys) is refused."""
    refuse(with_(band_gap=float("nan")), "band_gap is nan", "not a finite number")


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
    np.array([[10.0, 0, 0], [20.0, 0, 0], [0, 0, 12.0]]),
    np.array([[10.0, 0, 0], [10.0, 1e-5, 0], [0, 0, 12.0]]),  # parallel to 1e-6 rad: vesin would divide by ~0
    np.array([[10.0, 0, 0], [0, 11.0, 0], [10.0, 11.0, 0]]),  # coplanar
])
def test_degenerate_cell(cell):
    """Parallel or coplanar lattice vectors of the periodic directions are refused, naming them."""
    refuse(with_(cell=cell), "degenerate", "periodic directions [0, 1, 2]", "independent lattice vectors")


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


# ------------------------------------------------------------------ geometry: coincident atoms, short cells
def test_default_minimum_distance_is_a_tenth_of_an_angstrom():
    """The documented default: 0.1 Å."""
    assert MIN_INTERATOMIC_DISTANCE == 0.1
    assert inspect.signature(validate_sample).parameters["min_distance"].default == MIN_INTERATOMIC_DISTANCE


def test_coincident_atoms_are_refused_naming_both():
    """Two atoms at one position: the message names both indices, the distance, the minimum and the fix."""
    sample = good_sample()
    sample["pos"][17] = sample["pos"][3]
    message = refuse(sample, "atoms 3 and 17 are 0.000 Å apart", "(the minimum is 0.1 Å)",
                     "remove the duplicate atom")
    assert "image" not in message


def test_the_closest_of_several_close_pairs_is_named():
    """With several pairs too close, the closest is named and the others are counted."""
    sample = good_sample()
    sample["pos"][40] = sample["pos"][5] + [0.05, 0, 0]
    sample["pos"][60] = sample["pos"][2] + [0, 0.02, 0]
    refuse(sample, "atoms 2 and 60 are 0.020 Å apart (the minimum is 0.1 Å; 2 pairs are closer than that)")


def boundary_pair_sample(pbc: list[bool]) -> dict:
    """Atoms 0 and 1 near opposite faces of a 6 Å cubic cell: 5.96 Å apart directly,
    0.04 Å apart through the periodic boundary along x."""
    return {
        "atomic_numbers": np.array([29, 29, 29]),
        "pos": np.array([[0.02, 3.0, 3.0], [5.98, 3.0, 3.0], [3.0, 1.0, 4.0]]),
        "cell": np.eye(3) * 6.0,
        "pbc": np.array(pbc),
    }


def test_atom_on_a_periodic_image_of_another_is_refused():
    """Periodic images count: an atom 0.04 Å from an image of another across the boundary is refused,
    naming both atoms and the image."""
    message = refuse(boundary_pair_sample([True, True, True]), "atom 0 and the periodic image (-1, 0, 0) of "
                     "atom 1 are 0.040 Å apart", "(the minimum is 0.1 Å)", "check the cell")
    assert "atoms 0 and 1" not in message


def test_the_same_pair_without_periodicity_is_accepted():
    """The structure of the previous test without periodic boundaries: 5.96 Å apart, accepted."""
    for pbc in ([False, False, False], [False, True, True]):
        out = validate_sample(boundary_pair_sample(pbc), index=17, source="lips.extxyz")
        assert out["pbc"].tolist() == pbc


def test_atom_on_its_own_periodic_image_is_refused():
    """Lattice vectors that are long one by one but nearly cancel (a - b is 0.07 Å) put every atom
    0.07 Å from its own image."""
    cell = np.array([[5.0, 0.0, 0.0], [4.95, 0.05, 0.0], [0.0, 0.0, 5.0]])
    sample = {"atomic_numbers": [8], "pos": [[1.0, 1.0, 1.0]], "cell": cell, "pbc": [True, True, True]}
    refuse(sample, "atom 0 is 0.071 Å from its own periodic image", "check the cell")


def test_atoms_just_above_the_minimum_are_accepted():
    """0.11 Å apart, directly or through the periodic boundary: accepted."""
    sample = good_sample()
    sample["pos"][17] = sample["pos"][3] + [0.0, 0.11, 0.0]
    validate_sample(sample, index=17, source="lips.extxyz")
    across = boundary_pair_sample([True, True, True])
    across["pos"][1, 0] = 6.0 - 0.09  # 0.11 Å from atom 0's image at 6.02
    validate_sample(across, index=17, source="lips.extxyz")


def test_min_distance_none_disables_the_check_and_other_minimums_apply():
    """min_distance=None accepts coincident atoms; a larger minimum refuses pairs closer than it."""
    sample = good_sample()
    sample["pos"][17] = sample["pos"][3]
    out = validate_sample(sample, min_distance=None)
    np.testing.assert_array_equal(out["pos"][17], out["pos"][3])
    validate_sample(boundary_pair_sample([True, True, True]), min_distance=None)
    spaced = good_sample()
    spaced["pos"][17] = spaced["pos"][3] + [0.0, 0.0, 0.8]
    validate_sample(spaced)
    refuse(spaced, "atoms 3 and 17 are 0.800 Å apart", "(the minimum is 1 Å)", min_distance=1.0)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_min_distance_must_be_positive(bad):
    """A nonsensical minimum is a programming error, said as such."""
    with pytest.raises(ValueError, match="min_distance must be a positive number"):
        validate_sample(good_sample(), min_distance=bad)


@pytest.mark.parametrize("direction", [0, 1, 2])
def test_zero_length_cell_vector_in_a_periodic_direction(direction):
    """A periodic direction whose lattice vector has length zero is refused, naming the direction,
    also with the distance check off."""
    cell = np.diag([10.0, 11.0, 12.0])
    cell[direction] = 0.0
    for options in ({}, {"min_distance": None}):
        refuse(with_(cell=cell), f"cell vector {direction} of periodic direction {direction} is 0.000 Å long",
               f"set pbc to False along direction {direction}", **options)


def test_all_zero_cell_with_periodic_boundaries():
    """A cell of zeros with pbc set (what a CIF with zero cell lengths gives) is refused."""
    refuse(with_(cell=np.zeros((3, 3))), "cell vector 0 of periodic direction 0 is 0.000 Å long")


def test_cell_vector_shorter_than_the_minimum():
    """A periodic lattice vector of 0.05 Å would put each atom 0.05 Å from its own image: refused."""
    cell = np.diag([10.0, 11.0, 0.05])
    sample = {"atomic_numbers": [8], "pos": [[1.0, 1.0, 0.0]], "cell": cell, "pbc": [True, True, True]}
    refuse(sample, "cell vector 2 of periodic direction 2 is 0.050 Å long", "(the minimum is 0.1 Å)")


def test_single_atoms_and_molecules_without_cell():
    """One atom, periodic or not, is valid; so is a molecule with no cell at all."""
    validate_sample({"atomic_numbers": [8], "pos": [[0.0, 0.0, 0.0]], "pbc": [False] * 3})
    validate_sample({"atomic_numbers": [8], "pos": [[0.3, 0.2, 0.1]], "cell": np.eye(3) * 3.0, "pbc": [True] * 3})
    water = {"atomic_numbers": [8, 1, 1], "pos": [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]],
             "pbc": [False] * 3}
    assert "cell" not in validate_sample(water)
    water["pos"][2] = [0.96, 0.0, 0.0]
    refuse(water, "atoms 1 and 2 are 0.000 Å apart")


def test_importing_the_schema_does_not_import_vesin_or_torch():
    """The neighbour search (vesin, which imports torch from 0.5 on) is imported when a distance is
    checked, not with the schema: listing and inspecting stay quick."""
    code = ("import sys, matsciml.data.schema; "
            "print(sorted(m for m in ('torch', 'vesin', 'matsciml.neighbors') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_convert_leaves_out_a_frame_with_coincident_atoms(tmp_path, capsys):
    """`matsciml data convert` of an extxyz whose frame 1 has two atoms at one position writes the
    other frames, and reports frame 1 with the atoms and the reason."""
    pytest.importorskip("ase")
    import ase.io
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from matsciml.cli import main
    from matsciml.data.dataset import LMDBDataset

    frames = []
    for number in range(3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=number)
        if number == 1:
            atoms.positions[2] = atoms.positions[0]
        atoms.info["source_index"] = number
        forces = np.random.default_rng(number).normal(size=(len(atoms), 3))
        atoms.calc = SinglePointCalculator(atoms, energy=-14.0 - number, forces=forces)
        frames.append(atoms)
    source = tmp_path / "copper.extxyz"
    ase.io.write(source, frames)
    output = tmp_path / "copper.lmdb"

    assert main(["data", "convert", str(source), "-o", str(output), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 structures" in printed
    assert "left out 1 invalid structure(s)" in printed
    assert f"sample 1 of {source}: atoms 0 and 2 are 0.000 Å apart (the minimum is 0.1 Å)" in printed

    dataset = LMDBDataset(output)
    try:
        assert [int(dataset[i]["source_index"]) for i in range(len(dataset))] == [0, 2]
        [rejected] = dataset.metadata["rejected"]
        assert rejected["index"] == 1 and "atoms 0 and 2 are 0.000 Å apart" in rejected["reason"]
    finally:
        dataset.close()


# ------------------------------------------------------------------ shapes from the field registry
def test_registered_per_atom_property_needs_one_row_per_atom():
    """charges is declared per atom (matsciml.fields): one value per atom, or the sample is refused."""
    out = validate_sample(with_(charges=np.zeros(NATOMS, dtype=np.float32)))
    assert out["charges"].dtype == np.float64
    refuse(with_(charges=np.zeros(NATOMS - 2)), "charges", "(81,)", "[N]", "83 atoms")
    refuse(with_(charges=np.asarray(0.0)), "charges", "()", "83 atoms")


def test_magnetic_moments_collinear_or_not():
    """magmoms may be [N] (collinear) or [N, 3] (non-collinear), always one row per atom."""
    validate_sample(with_(magmoms=np.ones(NATOMS)))
    validate_sample(with_(magmoms=np.ones((NATOMS, 3))))
    refuse(with_(magmoms=np.ones(3)), "magmoms", "(3,)", "[N, ...]", "83 atoms")


def test_model_inputs_are_checked_like_targets():
    """total_charge is one number per structure; spin_multiplicity an integer."""
    out = validate_sample(with_(total_charge=1, spin_multiplicity=2.0))
    assert out["total_charge"].dtype == np.float64 and out["spin_multiplicity"].dtype == np.int64
    refuse(with_(total_charge=np.zeros(NATOMS)), "total_charge", "(83,)", "scalar")
    refuse(with_(spin_multiplicity=1.5), "spin_multiplicity", "integers")


def test_text_in_a_numeric_field_is_refused():
    refuse(with_(energy="-357.5"), "energy is text ('-357.5')", "per-structure target in eV", "store it as numbers")


def test_declared_custom_key_is_checked_like_a_registered_one():
    """A key declared per atom at conversion (--field q=atom) must have one row per atom."""
    from matsciml.fields import FieldSpec

    declared = {"hirshfeld": FieldSpec("hirshfeld", "target", "atom", None, None)}
    validate_sample(with_(hirshfeld=np.zeros(NATOMS)), declared=declared)
    refuse(with_(hirshfeld=np.zeros(3)), "hirshfeld", "(3,)", "83 atoms", declared=declared)
    # undeclared, any numeric array is stored as it is
    assert validate_sample(with_(hirshfeld=np.zeros(3, dtype=np.float32)))["hirshfeld"].dtype == np.float32
