"""Import through ASE: real DFT devsets convert exactly, bad structures are reported, CLI, shipped devsets."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ase_io = pytest.importorskip("ase.io")

from ase.build import bulk  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from matsciml.data.ase_import import atoms_to_sample, convert  # noqa: E402
from matsciml.data.dataset import LMDBDataset  # noqa: E402
from matsciml.data.schema import validate_sample  # noqa: E402
from matsciml.errors import MatscimlError  # noqa: E402

DEVSET_COUNTS = {"lips.extxyz": 200, "colabfit.extxyz": 262, "materials_project.extxyz": 200}


def run_cli(*args: str, check: int | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m matsciml ARGS`` and return the finished process (text output)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "matsciml", *map(str, args)], capture_output=True,
                            text=True, encoding="utf-8", env=env, timeout=120)
    if check is not None:
        assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
    return result


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("matsciml: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, stderr)


# ---------------------------------------------------------------- real devsets, every structure
def assert_property_equal(key: str, stored, original) -> None:
    if isinstance(original, str):
        assert stored == original, key
        return
    original = np.asarray(original)
    assert isinstance(stored, np.ndarray), key
    assert stored.shape == original.shape, (key, stored.shape, original.shape)
    if original.dtype.kind == "b":
        assert stored.dtype == np.bool_, key
        assert np.array_equal(stored, original), key
    elif original.dtype.kind in "iu":
        assert stored.dtype.kind in "iu", key
        assert np.array_equal(stored, original), key
    else:
        assert stored.dtype == np.float64, key
        np.testing.assert_allclose(stored, original, rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.devsets
@pytest.mark.parametrize("name", sorted(DEVSET_COUNTS))
def test_every_devset_structure_converts_exactly(devsets_dir, tmp_path, name):
    """Every structure of each DFT devset reads back equal to ase.io.read: geometry, labels, every info entry."""
    source = devsets_dir / name
    images = ase_io.read(source, index=":")
    assert len(images) == DEVSET_COUNTS[name]
    report = convert([source], tmp_path / "out.lmdb", progress=False)
    assert report.written == len(images) and report.num_rejected == 0 and report.rejected == []

    dataset = LMDBDataset(tmp_path / "out.lmdb")
    try:
        assert len(dataset) == len(images)
        meta = dataset.metadata
        assert meta["count"] == len(images) and meta["num_rejected"] == 0
        assert meta["provenance"]["sources"] == [str(source.resolve())]
        for index, atoms in enumerate(images):
            sample = dataset[index]
            expected_keys = {"atomic_numbers", "pos", "pbc", "cell"}
            assert sample["atomic_numbers"].dtype == np.int64
            assert np.array_equal(sample["atomic_numbers"], atoms.numbers), index
            assert sample["pos"].dtype == np.float64
            np.testing.assert_allclose(sample["pos"], atoms.positions, rtol=0, atol=1e-12)
            np.testing.assert_allclose(sample["cell"], atoms.cell[:], rtol=0, atol=1e-12)
            assert sample["pbc"].dtype == np.bool_ and np.array_equal(sample["pbc"], atoms.pbc)

            results = atoms.calc.results if atoms.calc is not None else {}
            if "energy" in results:
                expected_keys.add("energy")
                assert sample["energy"].shape == () and sample["energy"].dtype == np.float64
                assert float(sample["energy"]) == pytest.approx(results["energy"], rel=0, abs=1e-12)
            if "forces" in results:
                expected_keys.add("forces")
                np.testing.assert_allclose(sample["forces"], results["forces"], rtol=0, atol=1e-12)
            for key, value in results.items():  # every calculator result is kept, none dropped
                expected_keys.add(key)
                if key not in ("energy", "forces", "stress"):
                    assert_property_equal(key, sample[key], value)
            for key, value in atoms.info.items():
                expected_keys.add(key)
                assert_property_equal(key, sample[key], value)
            assert set(sample) == expected_keys, (index, set(sample) ^ expected_keys)
            validate_sample(sample, index=index, source=name)
    finally:
        dataset.close()


@pytest.mark.devsets
def test_devset_specific_contents(devsets_dir, tmp_path):
    """The converted devsets hold what their README says: LiPS 83 atoms with forces, MP properties without."""
    lips = tmp_path / "lips.lmdb"
    mp = tmp_path / "mp.lmdb"
    convert([devsets_dir / "lips.extxyz"], lips, progress=False)
    convert([devsets_dir / "materials_project.extxyz"], mp, progress=False)
    data = LMDBDataset(lips)
    assert data.metadata["num_atoms"]["min"] == data.metadata["num_atoms"]["max"] == 83
    assert set(data.metadata["elements"]) == {"3", "15", "16"}
    assert data.targets == ["energy", "forces", "source_index"]
    data.close()
    data = LMDBDataset(mp)
    keys = data.metadata["keys"]
    assert "forces" not in keys and "energy" not in keys
    assert keys["crystal_system"]["dtype"] == "str" and keys["is_metal"]["dtype"] == "bool"
    assert {"band_gap", "formation_energy_per_atom", "efermi", "space_group_number"} <= set(data.targets)
    systems = {data[i]["crystal_system"] for i in range(len(data))}
    assert systems <= {"Triclinic", "Monoclinic", "Orthorhombic", "Tetragonal", "Trigonal", "Hexagonal", "Cubic"}
    assert len(data.metadata["elements"]) >= 50
    data.close()


# ---------------------------------------------------------------- units
@pytest.mark.devsets
def test_units_in_metadata(devsets_dir, tmp_path):
    """Schema and well-known keys get their units; unknown keys get None unless units={...} names them."""
    convert([devsets_dir / "lips.extxyz"], tmp_path / "lips.lmdb", index=":5", progress=False)
    keys = LMDBDataset(tmp_path / "lips.lmdb").metadata["keys"]
    assert keys["energy"]["unit"] == "eV" and keys["forces"]["unit"] == "eV/Å"
    assert keys["pos"]["unit"] == "Å" and keys["cell"]["unit"] == "Å"
    assert keys["source_index"]["unit"] is None

    source = devsets_dir / "materials_project.extxyz"
    convert([source], tmp_path / "mp.lmdb", index=":5", progress=False)
    keys = LMDBDataset(tmp_path / "mp.lmdb").metadata["keys"]
    assert keys["band_gap"]["unit"] == "eV" and keys["efermi"]["unit"] == "eV"
    assert keys["formation_energy_per_atom"]["unit"] == "eV/atom"
    for unknown in ("is_metal", "crystal_system", "space_group_number", "source_index"):
        assert keys[unknown]["unit"] is None, unknown

    convert([source], tmp_path / "mp2.lmdb", index=":5", progress=False,
            units={"space_group_number": "", "band_gap": "meV"})
    keys = LMDBDataset(tmp_path / "mp2.lmdb").metadata["keys"]
    assert keys["space_group_number"]["unit"] == ""
    assert keys["band_gap"]["unit"] == "meV"
    assert keys["is_metal"]["unit"] is None


# ---------------------------------------------------------------- rejected structures
def _copper(seed: int, energy: float | None = None) -> object:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=seed)
    forces = np.random.default_rng(seed).normal(size=(len(atoms), 3))
    atoms.info["source_index"] = seed
    atoms.calc = SinglePointCalculator(atoms, energy=-10.0 - seed if energy is None else energy, forces=forces)
    return atoms


@pytest.fixture
def mixed_file(tmp_path) -> tuple[Path, list[int], dict[int, tuple[str, ...]]]:
    """An extxyz with 4 valid copper cells and 4 invalid ones (NaN position, Z=0, tag 5, NaN energy)."""
    images = []
    good, bad = [], {}
    for index in range(8):
        atoms = _copper(index)
        if index == 1:
            atoms.positions[1, 2] = np.nan
            bad[index] = ("pos", "NaN")
        elif index == 3:
            atoms.numbers[2] = 0
            bad[index] = ("atomic_numbers", "[0]")
        elif index == 4:
            atoms.set_tags([0, 1, 5, 2])
            bad[index] = ("tags", "[5]")
        elif index == 6:
            atoms = _copper(index, energy=float("nan"))
            bad[index] = ("energy is nan", "not a finite number")
        else:
            good.append(index)
        images.append(atoms)
    path = tmp_path / "mixed.extxyz"
    ase_io.write(path, images)
    return path, good, bad


def test_invalid_structures_are_reported_and_left_out(mixed_file, tmp_path):
    """Good structures are converted in order; each bad one is reported with its index and reason."""
    path, good, bad = mixed_file
    report = convert([path], tmp_path / "out.lmdb", progress=False)
    assert report.written == len(good)
    assert report.num_rejected == len(bad)
    assert [r["index"] for r in report.rejected] == sorted(bad)
    for rejected in report.rejected:
        assert rejected["source"] == str(path)
        assert rejected["reason"].startswith(f"sample {rejected['index']} of {path}: ")
        for fragment in bad[rejected["index"]]:
            assert fragment in rejected["reason"], rejected
    dataset = LMDBDataset(tmp_path / "out.lmdb")
    assert [int(dataset[i]["source_index"]) for i in range(len(dataset))] == good
    assert dataset.metadata["num_rejected"] == len(bad)
    assert dataset.metadata["rejected"] == report.rejected
    dataset.close()


def test_all_invalid_input_writes_nothing(tmp_path):
    """A file whose every structure is invalid fails with the first reason and leaves no dataset."""
    atoms = _copper(0, energy=float("nan"))
    path = tmp_path / "bad.extxyz"
    ase_io.write(path, [atoms, atoms])
    with pytest.raises(MatscimlError, match="none of the 2 structures.*energy"):
        convert([path], tmp_path / "out.lmdb", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["bad.extxyz"]


def test_atoms_to_sample_constraints_tags_and_stress():
    """FixAtoms becomes 'fixed', tags are kept, a Voigt stress becomes a symmetric 3x3 matrix."""
    from ase.constraints import FixAtoms

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_tags([0, 0, 1, 2])
    atoms.set_constraint(FixAtoms(indices=[0, 1]))
    voigt = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, stress=voigt)
    sample = validate_sample(atoms_to_sample(atoms))
    assert sample["fixed"].tolist() == [True, True, False, False]
    assert sample["tags"].tolist() == [0, 0, 1, 2]
    np.testing.assert_array_equal(sample["stress"], [[1, 6, 5], [6, 2, 4], [5, 4, 3]])


def test_cli_reports_left_out_structures(mixed_file, tmp_path):
    """Without --strict the CLI writes the good structures and prints each rejected one."""
    path, good, bad = mixed_file
    out = tmp_path / "cli.lmdb"
    result = run_cli("data", "convert", path, "-o", out, "--quiet", check=0)
    assert f"wrote {len(good)} structures" in result.stdout
    assert f"left out {len(bad)} invalid structure(s)" in result.stdout
    for index in bad:
        assert f"sample {index} of {path}" in result.stdout


def test_cli_strict_fails_and_writes_nothing(mixed_file, tmp_path):
    """--strict exits 1 with a one-line error and leaves no dataset and no temp file."""
    path, _, bad = mixed_file
    out = tmp_path / "strict" / "s.lmdb"
    out.parent.mkdir()
    result = run_cli("data", "convert", path, "-o", out, "--quiet", "--strict", check=1)
    first = min(bad)
    assert_one_line_error(result.stderr, "--strict", f"sample {first} of {path}", *bad[first])
    assert not out.exists()
    assert os.listdir(out.parent) == []


# CORE BUG (cli/data.py run_convert): with --strict the conversion is first completed,
# renamed over the existing output, and only then unlinked, so a strict failure with
# --overwrite destroys the previous dataset. Fix: give convert() a ``strict`` flag that
# raises inside the DatasetWriter block at the first invalid structure (the writer
# aborts; the old file stays), and drop the unlink from run_convert.
def test_cli_strict_failure_keeps_existing_dataset(mixed_file, tmp_path):
    """A failed --strict --overwrite conversion leaves the dataset already at the output untouched."""
    path, good, _ = mixed_file
    out = tmp_path / "keep.lmdb"
    convert([path], out, progress=False)
    before = out.read_bytes()
    result = run_cli("data", "convert", path, "-o", out, "--quiet", "--strict", "--overwrite", check=1)
    assert result.stderr.startswith("matsciml: error: ")
    assert out.exists(), "a failed --strict conversion deleted the existing dataset"
    assert out.read_bytes() == before


# ---------------------------------------------------------------- CLI on a real devset
@pytest.mark.devsets
def test_cli_convert_and_inspect_lips(devsets_dir, tmp_path):
    """`data convert` then `data inspect` (text and --json) show count, elements, atoms and units."""
    lips = devsets_dir / "lips.extxyz"
    out = tmp_path / "lips.lmdb"
    result = run_cli("data", "convert", lips, "-o", out, "--quiet", check=0)
    assert "wrote 200 structures" in result.stdout and result.stderr == ""
    assert sorted(os.listdir(tmp_path)) == ["lips.lmdb"]

    text = run_cli("data", "inspect", out, check=0).stdout
    assert re.search(r"^samples\s+200$", text, re.M), text
    assert re.search(r"^atoms\s+83 per structure", text, re.M), text
    elements = re.search(r"^elements\s+3: (.*)$", text, re.M)
    assert elements and [part.split()[0] for part in elements.group(1).split(", ")] == ["Li", "P", "S"]
    energy_row = re.search(r"^\s+energy\s+target\s+structure\s+scalar\s+float64\s+(\S+)\s+200\s", text, re.M)
    assert energy_row and energy_row.group(1) == "eV", text
    forces_row = re.search(r"^\s+forces\s+target\s+atom\s+\[N,3\]\s+float64\s+(\S+)", text, re.M)
    assert forces_row and forces_row.group(1) == "eV/Å", text
    assert re.search(r"^\s+pos\s+structure\s+atom\s+\[N,3\]", text, re.M), text
    assert re.search(r"^\s+source_index\s+target\s+structure\*\s+scalar", text, re.M), text
    assert "(* = per atom or per structure read from the shapes at conversion" in text

    summary = json.loads(run_cli("data", "inspect", out, "--json", check=0).stdout)
    images = ase_io.read(lips, index=":")
    numbers = np.concatenate([a.numbers for a in images])
    assert summary["count"] == 200 and summary["atoms"] == "83"
    assert summary["element_counts"] == {"Li": int((numbers == 3).sum()), "P": int((numbers == 15).sum()),
                                         "S": int((numbers == 16).sum())}
    energy = next(p for p in summary["properties"] if p["key"] == "energy")
    assert (energy["role"], energy["arity"], energy["arity_from"]) == ("target", "structure", "registry")
    energies = np.array([a.get_potential_energy() for a in images])
    assert energy["unit"] == "eV" and energy["present_in"] == 200
    assert energy["mean"] == pytest.approx(energies.mean(), rel=1e-9)
    assert energy["std"] == pytest.approx(energies.std(), rel=1e-6)
    assert summary["files"] == [str(out)]

    # an existing output is never replaced without --overwrite
    before = out.read_bytes()
    result = run_cli("data", "convert", lips, "-o", out, "--quiet", check=1)
    assert_one_line_error(result.stderr, str(out), "already exists", "--overwrite")
    assert out.read_bytes() == before


def test_cli_convert_missing_input(tmp_path):
    """Converting a file that does not exist exits 1 with a one-line error naming it, writing nothing."""
    missing = tmp_path / "nope.extxyz"
    out = tmp_path / "out" / "x.lmdb"
    result = run_cli("data", "convert", missing, "-o", out, "--quiet", check=1)
    assert_one_line_error(result.stderr, str(missing))
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert not out.parent.exists() or os.listdir(out.parent) == []


def test_cli_bad_unit_option(tmp_path):
    """--unit without KEY=UNIT is a one-line error."""
    from matsciml.cli import main

    path = tmp_path / "one.extxyz"
    ase_io.write(path, [_copper(0)])
    assert main(["data", "convert", str(path), "-o", str(tmp_path / "o.lmdb"), "--quiet",
                 "--unit", "source_index=", "--unit", "band_gap"]) == 1
    assert not (tmp_path / "o.lmdb").exists()


def test_cli_unit_option_recorded(tmp_path, capsys):
    """--unit KEY=UNIT labels a property the schema does not know."""
    from matsciml.cli import main

    path = tmp_path / "one.extxyz"
    ase_io.write(path, [_copper(0), _copper(1)])
    out = tmp_path / "u.lmdb"
    assert main(["data", "convert", str(path), "-o", str(out), "--json", "--unit", "source_index=count"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == 2 and report["num_rejected"] == 0
    dataset = LMDBDataset(out)
    assert dataset.metadata["keys"]["source_index"]["unit"] == "count"
    dataset.close()


def test_cli_inspect_shipped_devset_validates():
    """`data inspect slab-emt-s2ef --validate` opens the registered devset by name and finds it valid."""
    result = run_cli("data", "inspect", "slab-emt-s2ef", "--validate", check=0)
    assert "validated   all 900 samples" in result.stdout
    assert "EMT" in result.stdout


def test_cli_inspect_unknown_name(capsys):
    """Inspecting a path that does not exist and is no dataset name is a one-line error, exit 1."""
    from matsciml.cli import main

    assert main(["data", "inspect", "no-such-dataset-xyz"]) == 1
    assert_one_line_error(capsys.readouterr().err, "no-such-dataset-xyz")


# ---------------------------------------------------------------- shipped devsets
@pytest.fixture(scope="module")
def shipped():
    """Both shipped devsets, opened through the registry like any plugin's dataset."""
    from matsciml.registry import get_registry

    registry = get_registry()
    datasets = {name: registry.dataset(name).build() for name in ("slab-emt-s2ef", "slab-emt-is2re")}
    yield datasets
    for dataset in datasets.values():
        dataset.close()


ADSORBATE_ELEMENTS = {1, 6, 7, 8}
SLAB_ELEMENTS = {13, 28, 29, 46, 47, 78, 79}  # Al Ni Cu Pd Ag Pt Au


@pytest.mark.parametrize("name", ["slab-emt-s2ef", "slab-emt-is2re"])
def test_shipped_devset_samples_are_valid(shipped, name):
    """Every sample of each shipped devset validates and follows the OC20 tag convention."""
    dataset = shipped[name]
    assert len(dataset) == dataset.metadata["count"] > 0
    assert "EMT" in dataset.metadata["description"]
    for index in range(len(dataset)):
        sample = validate_sample(dataset[index], index=index, source=name)
        tags = sample["tags"]
        assert set(np.unique(tags).tolist()) <= {0, 1, 2}
        assert (tags == 2).any(), f"{name} sample {index} has no adsorbate"
        numbers = sample["atomic_numbers"]
        assert set(numbers[tags == 2].tolist()) <= ADSORBATE_ELEMENTS, index
        assert set(numbers[tags != 2].tolist()) <= SLAB_ELEMENTS, index
        assert sample["fixed"].dtype == np.bool_
        assert np.array_equal(sample["fixed"], tags == 0), index  # subsurface atoms are the fixed ones
        assert sample["pbc"].all()  # OC20-style slabs: periodic in all three directions, vacuum along z
        assert np.linalg.det(sample["cell"]) > 0
        assert sample["energy"].shape == ()


def test_shipped_s2ef_contents(shipped):
    """slab-emt-s2ef has energy, forces, tags and fixed in every sample, and declares energy+forces."""
    from matsciml.registry import get_registry

    dataset = shipped["slab-emt-s2ef"]
    keys = dataset.metadata["keys"]
    for key in ("energy", "forces", "tags", "fixed"):
        assert keys[key]["count"] == len(dataset), key
    assert keys["energy"]["unit"] == "eV" and keys["forces"]["unit"] == "eV/Å"
    assert tuple(get_registry().dataset("slab-emt-s2ef").targets) == ("energy", "forces")
    forces = dataset[0]["forces"]
    assert forces.shape == (len(dataset[0]["atomic_numbers"]), 3) and np.isfinite(forces).all()


def test_shipped_is2re_contents(shipped):
    """slab-emt-is2re has a relaxed_energy (eV) in every sample, below or at the initial energy."""
    from matsciml.registry import get_registry

    dataset = shipped["slab-emt-is2re"]
    keys = dataset.metadata["keys"]
    assert keys["relaxed_energy"]["count"] == len(dataset) and keys["relaxed_energy"]["unit"] == "eV"
    assert tuple(get_registry().dataset("slab-emt-is2re").targets) == ("relaxed_energy",)
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["relaxed_energy"].shape == ()
        assert float(sample["relaxed_energy"]) <= float(sample["energy"]) + 1e-6, index


# ---------------------------------------------------------------- partial charges and a total-charge input
_MOLECULES = (("H2O", 0.0), ("NH3", 0.0), ("CH4", 0.0), ("OH", -1.0), ("H2O", 0.0), ("CO2", 0.0))


def _charged_molecules(seed: int = 0) -> list:
    """Small molecules with per-atom partial charges (summing to the total) and a per-structure total charge."""
    from ase import Atoms
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    images = []
    for name, total in _MOLECULES:
        atoms = Atoms(molecule(name).numbers, positions=molecule(name).positions)  # no cell, no magmoms
        hydrogen = atoms.numbers == 1
        charges = np.where(hydrogen, 0.35, -0.5) + rng.normal(scale=0.02, size=len(atoms))
        charges += (total - charges.sum()) / len(atoms)
        atoms.arrays["charges"] = charges
        atoms.info["total_charge"] = total
        atoms.arrays["hirshfeld"] = 0.6 * charges
        atoms.info["solvent"] = 1
        images.append(atoms)
    return images


@pytest.fixture
def charged_file(tmp_path) -> Path:
    path = tmp_path / "charged.extxyz"
    ase_io.write(path, _charged_molecules(), format="extxyz")
    return path


def test_partial_charges_and_total_charge_convert_and_collate(charged_file, tmp_path):
    """Per-atom charges (which ASE moves into its calculator results) are kept as a per-atom target;
    total_charge is a per-structure model input; collated they give targets [N] and input_fields [B]."""
    from matsciml.batch import collate_structures

    images = _charged_molecules()
    read_back = ase_io.read(charged_file, index=":")
    assert "charges" in read_back[0].calc.results and "charges" not in read_back[0].arrays  # ASE's move

    convert([charged_file], tmp_path / "charged.lmdb", progress=False)
    dataset = LMDBDataset(tmp_path / "charged.lmdb")
    try:
        keys = dataset.metadata["keys"]
        assert {k: (keys[k]["role"], keys[k]["arity"], keys[k]["arity_from"]) for k in keys} == {
            "atomic_numbers": ("structure", "atom", "registry"), "pos": ("structure", "atom", "registry"),
            "pbc": ("structure", "structure", "registry"), "charges": ("target", "atom", "registry"),
            "total_charge": ("input", "structure", "registry"), "hirshfeld": ("target", "atom", "shapes"),
            "solvent": ("target", "structure", "shapes")}
        assert keys["charges"]["unit"] == "e" and keys["charges"]["shape"] == ["N"]
        assert keys["total_charge"]["unit"] == "e" and keys["total_charge"]["shape"] == []
        samples = [dataset[i] for i in range(len(dataset))]
        for sample, atoms in zip(samples, images):
            np.testing.assert_allclose(sample["charges"], atoms.arrays["charges"], rtol=0, atol=1e-7)
            assert float(sample["total_charge"]) == atoms.info["total_charge"]
        batch = collate_structures([{k: v for k, v in s.items() if k not in ("hirshfeld", "solvent")}
                                    for s in samples[:3]])
        assert batch.targets["charges"].shape == (int(batch.num_atoms.sum()),)
        assert batch.input_fields["total_charge"].shape == (3,)
        assert set(batch.targets) == {"charges"} and set(batch.input_fields) == {"total_charge"}
    finally:
        dataset.close()


def test_custom_per_atom_key_of_a_converted_dataset_collates(charged_file, tmp_path):
    """An unregistered per-atom property converts with its arity recorded once, and collates atom-wise once
    the dataset's fields are declared (as opening the dataset does)."""
    from matsciml.batch import collate_structures
    from matsciml.fields import declare_dataset_fields, isolated

    convert([charged_file], tmp_path / "charged.lmdb", progress=False, fields={"solvent": {"role": "input"}})
    dataset = LMDBDataset(tmp_path / "charged.lmdb")
    try:
        samples = [dataset[i] for i in range(len(dataset))]
        with isolated():
            declare_dataset_fields(dataset.metadata)
            batch = collate_structures(samples)
        assert batch.targets["hirshfeld"].shape == (sum(len(s["atomic_numbers"]) for s in samples),)
        assert batch.input_fields["solvent"].tolist() == [1] * len(samples)
    finally:
        dataset.close()


def test_every_calculator_result_is_kept():
    """Charges, magnetic moments, dipole, total moment and free energy from a calculator all become properties."""
    from ase import Atoms

    atoms = Atoms("FeO", positions=[[0, 0, 0], [1.6, 0, 0]])
    atoms.calc = SinglePointCalculator(atoms, energy=-5.0, free_energy=-5.1, charges=[0.8, -0.8],
                                       magmoms=[3.5, 0.2], magmom=3.7, dipole=[1.28, 0.0, 0.0])
    sample = validate_sample(atoms_to_sample(atoms))
    assert sample["charges"].tolist() == [0.8, -0.8] and sample["magmoms"].tolist() == [3.5, 0.2]
    assert float(sample["magmom"]) == 3.7 and sample["dipole"].shape == (3,)
    assert float(sample["free_energy"]) == -5.1 and float(sample["energy"]) == -5.0


def test_fields_declared_at_conversion(charged_file, tmp_path):
    """--field declares role and arity of keys the registry does not know; a 3-vector of 3-atom molecules
    declared per structure stays per structure."""
    from ase.build import molecule

    images = []
    for index in range(3):
        atoms = molecule("H2O")
        atoms.rattle(0.01, seed=index)
        atoms.info["field_vector"] = np.array([0.0, 0.0, 0.1 * index])  # as long as the molecule has atoms
        atoms.info["temperature"] = 300.0
        images.append(atoms)
    path = tmp_path / "water.extxyz"
    ase_io.write(path, images)
    convert([path], tmp_path / "inferred.lmdb", progress=False)
    keys = LMDBDataset(tmp_path / "inferred.lmdb").metadata["keys"]
    assert (keys["field_vector"]["arity"], keys["field_vector"]["arity_from"]) == ("atom", "shapes")

    convert([path], tmp_path / "declared.lmdb", progress=False,
            fields={"field_vector": {"role": "input", "arity": "structure"}, "temperature": {"role": "input"}})
    keys = LMDBDataset(tmp_path / "declared.lmdb").metadata["keys"]
    assert (keys["field_vector"]["role"], keys["field_vector"]["arity"]) == ("input", "structure")
    assert keys["field_vector"]["arity_from"] == "declared" and keys["field_vector"]["shape"] == [3]
    assert (keys["temperature"]["role"], keys["temperature"]["arity"]) == ("input", "structure")


def test_declared_per_atom_key_without_a_row_per_atom_is_left_out(tmp_path):
    """A frame whose key declared per atom does not have one row per atom is reported, the others kept."""
    images = _charged_molecules()[:3]  # H2O, NH3 (4 atoms), CH4
    images[0].arrays["hirsh"] = np.zeros(3)
    images[1].info["hirsh"] = 0.5  # one number for the whole molecule
    images[2].arrays["hirsh"] = np.zeros(5)
    path = tmp_path / "mixed.extxyz"
    ase_io.write(path, images)
    report = convert([path], tmp_path / "out.lmdb", progress=False, fields={"hirsh": {"arity": "atom"}})
    assert report.written == 2 and [r["index"] for r in report.rejected] == [1]
    assert "hirsh has shape (); expected [N, ...] but the structure has 4 atoms" in report.rejected[0]["reason"]


def test_cli_field_option(charged_file, tmp_path, capsys):
    """`convert --field` is recorded and `inspect` shows each key's role and arity."""
    from matsciml.cli import main

    out = tmp_path / "f.lmdb"
    assert main(["data", "convert", str(charged_file), "-o", str(out), "--quiet",
                 "--field", "solvent=input", "--field", "hirshfeld=atom", "--field", "charges=target,atom"]) == 0
    capsys.readouterr()
    keys = LMDBDataset(out).metadata["keys"]
    assert (keys["solvent"]["role"], keys["solvent"]["arity"], keys["solvent"]["arity_from"]) == (
        "input", "structure", "shapes")
    assert (keys["hirshfeld"]["role"], keys["hirshfeld"]["arity_from"]) == ("target", "declared")
    assert main(["data", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^\s+KEY\s+ROLE\s+PER\s+SHAPE", text, re.M), text
    assert re.search(r"^\s+charges\s+target\s+atom\s+\[N\]\s+float64\s+e\s", text, re.M), text
    assert re.search(r"^\s+total_charge\s+input\s+structure\s+scalar", text, re.M), text
    assert re.search(r"^\s+solvent\s+input\s+structure\*\s+scalar", text, re.M), text


@pytest.mark.parametrize("option, fragments", [
    ("solvent=per-atom", ("--field 'solvent=per-atom'", "'per-atom' is not a role or an arity", "target or input")),
    ("charges=structure", ("'charges' is declared a per-structure", "registered field", "per-atom target in e")),
    ("solvnet=input", ("--field solvnet: no structure", "has a key 'solvnet'", "correct the name")),
])
def test_cli_bad_field_option_is_one_line_and_writes_nothing(charged_file, tmp_path, option, fragments):
    out = tmp_path / "bad.lmdb"
    result = run_cli("data", "convert", charged_file, "-o", out, "--quiet", "--field", option, check=1)
    assert_one_line_error(result.stderr, *fragments)
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["charged.extxyz"]


# ---------------------------------------------------------------- end to end: a regression on partial charges
_ELECTRONEGATIVITY = {1: 2.20, 6: 2.55, 7: 3.04, 8: 3.44}
_TRAINING_MOLECULES = ("H2O", "NH3", "CH4", "CO2", "HCN", "C2H2", "C2H4", "CH3OH", "H2CO", "CH3CN")


def _molecules_with_bond_charges(count: int, seed: int = 0) -> list:
    """Molecules whose partial charges follow their bonds: each bond moves 0.2 e per unit of
    electronegativity difference towards the more electronegative atom. Carbon is negative in CH4 and
    positive in CO2, so a per-element mean cannot predict the charges, but a model that sees neighbours can."""
    from ase import Atoms
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        template = molecule(_TRAINING_MOLECULES[index % len(_TRAINING_MOLECULES)])
        atoms = Atoms(template.numbers, positions=template.positions)
        atoms.rattle(0.03, seed=int(rng.integers(1 << 30)))
        chi = np.array([_ELECTRONEGATIVITY[z] for z in atoms.numbers])
        distances = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
        bonded = (distances < 1.6) & (distances > 0)
        charges = -0.2 * (bonded * (chi[:, None] - chi[None, :])).sum(axis=1)
        atoms.arrays["charges"] = charges
        atoms.info["total_charge"] = 0.0
        images.append(atoms)
    return images


@pytest.mark.dgl
@pytest.mark.slow
def test_regression_on_partial_charges_trains(tmp_path):
    """`matsciml train --task regression task.targets=[charges]` on a converted dataset with per-atom charges
    and a total-charge input learns the charges: better than the per-element mean, and far better than the
    global mean."""
    pytest.importorskip("dgl")
    from matsciml.data.splits import Split

    images = _molecules_with_bond_charges(48)
    source = tmp_path / "bond_charges.extxyz"
    ase_io.write(source, images)
    dataset = tmp_path / "bond_charges.lmdb"
    run_cli("data", "convert", source, "-o", dataset, "--quiet", check=0)

    done = subprocess.run(
        [sys.executable, "-m", "matsciml", "train", "--json", "--model", "egnn", "--task", "regression",
         "--dataset", str(dataset), "task.targets=[charges]", "trainer.max_epochs=14", "model.hidden_dim=32",
         "model.num_layers=2", "optimizer.lr=0.005", "dataset.split=[0.75,0.25,0.0]", "data.batch_size=8",
         f"run.dir={tmp_path / 'runs'}", "run.name=charges", "trainer.accelerator=cpu"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    mae, global_mean = result["metrics"]["charges_mae"], result["baselines"]["mean"]["charges_mae"]

    # the per-element mean over the training split, scored on the validation split
    split = Split.load(Path(result["run_dir"]) / "split.json")

    def per_atom(part: str) -> tuple[np.ndarray, np.ndarray]:
        chosen = [images[i] for i in split[part]]
        return np.concatenate([a.numbers for a in chosen]), np.concatenate([a.arrays["charges"] for a in chosen])

    train_z, train_q = per_atom("train")
    val_z, val_q = per_atom("val")
    element_mean = {z: train_q[train_z == z].mean() for z in np.unique(train_z)}
    per_element = float(np.abs(val_q - np.array([element_mean[z] for z in val_z])).mean())
    print("charges:", json.dumps({"model": mae, "per_element_mean": per_element, "global_mean": global_mean}))
    assert mae < 0.5 * global_mean
    assert mae < per_element
    # the composition baseline of a per-atom target is exactly the per-element training mean
    assert result["baselines"]["composition"]["charges_mae"] == pytest.approx(per_element, rel=1e-5)


def test_model_inputs_reach_training_batches(charged_file, tmp_path):
    """The data module reads a dataset's model inputs (total_charge) even when a task asks only for its
    targets, so they reach the backbone through batch.input_fields."""
    from matsciml.batch import collate_structures
    from matsciml.training.datamodule import MatSciDataModule

    class Plain:  # the least a representation does: samples in, a Batch out
        name = "plain"

        def __call__(self, sample):
            return sample

        def collate(self, items):
            return collate_structures(items)

    convert([charged_file], tmp_path / "charged.lmdb", progress=False)
    module = MatSciDataModule(str(tmp_path / "charged.lmdb"), Plain(), batch_size=4, split=(1.0, 0.0, 0.0),
                              keys=["charges", "atomic_numbers", "pos", "cell", "pbc"])
    module.setup()
    batch = next(iter(module.loader("train")))
    assert set(batch.targets) == {"charges"} and set(batch.input_fields) == {"total_charge"}
    assert batch.input_fields["total_charge"].shape == (4,)
