"""Plausibility flags: suspicious values are flagged by ``matsciml data inspect``, never rejected.

Each flag is raised on a small dataset written here with the problem in
known samples (right count, right sample indices) and not on clean data;
the flags from the metadata's ranges (every ``inspect``) and from the pass
over every sample (``--validate``) are both checked, in the text output and
in the ``--json`` document, and the exit status stays 0.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from matsciml.cli import main
from matsciml.data.dataset import LMDBDataset
from matsciml.data.inspect import validate_all
from matsciml.data.plausibility import (
    MAX_FORCE,
    MIN_DISTANCE,
    Flag,
    SampleChecks,
    flags_from_metadata,
    flags_of_sample,
    merge_flags,
)
from matsciml.data.storage import DatasetWriter


def clean(index: int) -> dict:
    """Two Cu atoms 3.46 Å apart in a 4 Å periodic cube, with a negative energy, small forces, a band gap."""
    rng = np.random.default_rng(index)
    return {
        "atomic_numbers": np.array([29, 29]),
        "pos": np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]) + rng.uniform(-0.05, 0.05, (2, 3)),
        "cell": np.eye(3) * 4.0,
        "pbc": np.array([True, True, True]),
        "energy": np.float64(-7.0 - index),
        "forces": rng.normal(0.0, 0.5, (2, 3)),
        "band_gap": np.float64(0.5 + index),
        "label": f"frame {index}",
    }


def write(path: Path, changes: dict[int, dict] | None = None, count: int = 8, **options) -> Path:
    """``count`` clean samples, some of them changed (``changes[index]`` updates sample ``index``)."""
    changes = changes or {}
    with DatasetWriter(path, name=path.stem, **options) as writer:
        for index in range(count):
            writer.append({**clean(index), **changes.get(index, {})}, index=index)
    return path


def counted_flags(path: Path, **options) -> list[Flag]:
    """The flags after a pass over every sample, as ``inspect --validate`` finds them."""
    dataset = LMDBDataset(path)
    checks = SampleChecks(metadata=dataset.metadata, **options)
    assert list(validate_all(dataset, on_valid=checks.add)) == []
    flags = merge_flags(flags_from_metadata(dataset.metadata, max_force=checks.max_force), checks.flags())
    dataset.close()
    return flags


def metadata_flags(path: Path, **options) -> list[Flag]:
    dataset = LMDBDataset(path)
    flags = flags_from_metadata(dataset.metadata, **options)
    dataset.close()
    return flags


def inspect(capsys, *args: str, status: int = 0) -> tuple[str, str]:
    assert main(["data", "inspect", *map(str, args)]) == status
    captured = capsys.readouterr()
    return captured.out, captured.err


# ---------------------------------------------------------------- clean data
def test_clean_data_has_no_flags(tmp_path, capsys):
    path = write(tmp_path / "clean.lmdb")
    assert metadata_flags(path) == []
    assert counted_flags(path) == []
    out, _ = inspect(capsys, path)
    assert re.search(r"^flags\s+none \(from the recorded ranges", out, re.M), out
    out, _ = inspect(capsys, path, "--validate")
    assert re.search(r"^flags\s+none \(every structure checked\)$", out, re.M), out
    out, _ = inspect(capsys, path, "--validate", "--json")
    assert json.loads(out)["flags"] == []


def test_thresholds_have_the_documented_defaults():
    assert (MAX_FORCE, MIN_DISTANCE) == (50.0, 0.5)


# ---------------------------------------------------------------- each flag
@pytest.mark.parametrize("key", ["energy", "free_energy", "relaxed_energy"])
def test_positive_total_energy(tmp_path, key):
    path = write(tmp_path / "e.lmdb", {1: {key: np.float64(2.5)}, 4: {key: np.float64(0.25)}})
    [ranged] = [f for f in metadata_flags(path) if f.key == key]
    assert (ranged.flag, ranged.count, ranged.examples) == ("positive_energy", None, [])
    # energy: the other samples have negative ones; the other keys are only in samples 1 and 4
    assert ("some positive" if key == "energy" else "all positive (0.25 to 2.5 eV)") in ranged.message
    [counted] = [f for f in counted_flags(path) if f.key == key]
    assert (counted.flag, counted.count, counted.examples) == ("positive_energy", 2, [1, 4])
    assert f"in 2 of {8 if key == 'energy' else 2} structures" in counted.message
    assert "up to 2.5 eV" in counted.message and "empirical potential" in counted.message


def test_negative_band_gap(tmp_path):
    path = write(tmp_path / "gap.lmdb", {2: {"band_gap": np.float64(-0.3)}, 6: {"band_gap": np.float64(-1.0)}})
    [ranged] = metadata_flags(path)
    assert (ranged.key, ranged.flag, ranged.count) == ("band_gap", "negative_band_gap", None)
    assert "min -1 eV" in ranged.message
    [counted] = counted_flags(path)
    assert (counted.key, counted.flag, counted.count, counted.examples) == ("band_gap", "negative_band_gap", 2, [2, 6])
    assert "in 2 of 8 structures" in counted.message and "down to -1 eV" in counted.message


def test_large_force_components_and_the_threshold(tmp_path):
    big = np.array([[0.0, -60.0, 0.0], [0.0, 60.0, 0.0]])
    path = write(tmp_path / "f.lmdb", {3: {"forces": big}, 5: {"forces": big * 2}})
    [ranged] = metadata_flags(path)
    assert (ranged.key, ranged.flag, ranged.count) == ("forces", "large_force", None)
    assert "above 50 eV/Å (up to 120 eV/Å" in ranged.message
    [counted] = counted_flags(path)
    assert (counted.flag, counted.count, counted.examples) == ("large_force", 2, [3, 5])
    assert "up to 120 eV/Å" in counted.message
    # a higher threshold: only sample 5 (120 eV/Å), then none
    [counted] = counted_flags(path, max_force=100.0)
    assert (counted.count, counted.examples) == (1, [5])
    assert metadata_flags(path, max_force=150.0) == [] and counted_flags(path, max_force=150.0) == []


def test_atoms_closer_than_half_an_angstrom_across_a_periodic_boundary(tmp_path):
    """0.3 Å apart through the face of the cell (3.7 Å apart inside it): flagged; without pbc it is not."""
    pos = np.array([[0.1, 1.0, 1.0], [3.8, 1.0, 1.0]])
    assert np.linalg.norm(pos[1] - pos[0]) == pytest.approx(3.7)
    path = write(tmp_path / "d.lmdb", {4: {"pos": pos}})
    assert metadata_flags(path) == []  # the metadata records no distance
    [counted] = counted_flags(path)
    assert (counted.key, counted.flag, counted.count, counted.examples) == ("pos", "short_distance", 1, [4])
    assert "closer than 0.5 Å in 1 of 8 structures" in counted.message and "closest 0.300 Å" in counted.message
    assert counted_flags(path, min_distance=0.25) == []

    sample = {**clean(0), "pos": pos}
    [found] = flags_of_sample(sample)
    assert (found.key, found.flag, found.value) == ("pos", "short_distance", pytest.approx(0.3))
    molecule = {**sample, "pbc": np.array([False, False, False])}
    del molecule["cell"]
    assert flags_of_sample(molecule) == []


def test_an_atom_near_its_own_periodic_image(tmp_path):
    """A cell vector of 0.4 Å puts each atom 0.4 Å from its own image: flagged as a short distance."""
    sample = {**clean(0), "atomic_numbers": np.array([1]), "pos": np.zeros((1, 3)),
              "cell": np.diag([0.4, 5.0, 5.0]), "forces": np.zeros((1, 3))}
    [found] = flags_of_sample(sample)
    assert (found.flag, found.value) == ("short_distance", pytest.approx(0.4))


def test_unknown_units(tmp_path):
    extra = {i: {"my_prop": np.float64(i), "my_flag": np.bool_(i % 2), "note": "x"} for i in range(8)}
    path = write(tmp_path / "u.lmdb", extra)
    [flag] = metadata_flags(path)
    assert (flag.key, flag.flag, flag.count, flag.examples) == ("my_prop", "unknown_unit", None, [])
    assert "--unit my_prop=UNIT" in flag.message
    assert counted_flags(path) == [flag]  # the pass keeps it
    assert metadata_flags(write(tmp_path / "u2.lmdb", extra, units={"my_prop": "eV"})) == []


def test_examples_are_the_first_five_and_the_count_is_all(tmp_path):
    path = write(tmp_path / "many.lmdb", {i: {"energy": np.float64(1.0 + i)} for i in range(1, 9)}, count=10)
    [counted] = counted_flags(path)
    assert (counted.count, counted.examples) == (8, [1, 2, 3, 4, 5])
    [ranged] = metadata_flags(path)
    assert "some positive (-16 to 9 eV)" in ranged.message


def test_invalid_samples_are_reported_not_flagged(tmp_path):
    """A sample that breaks the schema is listed as invalid by --validate and left out of the flags."""
    path = tmp_path / "bad.lmdb"
    with DatasetWriter(path) as writer:
        writer.append(clean(0))
        writer.append({**clean(1), "energy": np.float64(5.0), "pos": np.zeros((2, 3))}, validate=False)
        writer.append({**clean(2), "energy": np.float64(3.0)})
    dataset = LMDBDataset(path)
    checks = SampleChecks()
    invalid = list(validate_all(dataset, on_valid=checks.add))
    dataset.close()
    assert [bad.index for bad in invalid] == [1]
    [flag] = checks.flags()
    assert (flag.count, flag.examples) == (1, [2])


def test_thresholds_must_be_positive():
    with pytest.raises(ValueError, match="min_distance"):
        SampleChecks(min_distance=0)
    with pytest.raises(ValueError, match="max_force"):
        SampleChecks(max_force=float("nan"))


# ---------------------------------------------------------------- the CLI
@pytest.fixture()
def flawed(tmp_path) -> Path:
    """Positive energies (1, 4), a negative band gap (2), a large force (3), a short distance (4), a unitless key."""
    changes = {i: {"my_prop": np.float64(i)} for i in range(8)}
    changes[1].update(energy=np.float64(2.0))
    changes[2].update(band_gap=np.float64(-0.5))
    changes[3].update(forces=np.array([[0.0, 0.0, 70.0], [0.0, 0.0, -70.0]]))
    changes[4].update(energy=np.float64(1.0), pos=np.array([[0.1, 1.0, 1.0], [3.8, 1.0, 1.0]]))
    return write(tmp_path / "flawed.lmdb", changes)


def test_cli_text_flags_from_the_metadata(flawed, capsys):
    out, err = inspect(capsys, flawed)
    assert err == ""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("flags "))
    assert re.match(r"flags\s+4 warning\(s\), not errors \(from the recorded ranges", lines[start]), lines[start]
    section = lines[start + 1:start + 5]
    assert [line.split()[0] for line in section] == ["energy", "band_gap", "forces", "my_prop"]
    assert "some positive (-14 to 2 eV)" in section[0]
    assert "negative values (min -0.5 eV)" in section[1]
    assert "above 50 eV/Å (up to 70 eV/Å" in section[2]
    assert "unit unknown" in section[3]
    assert len(lines) == start + 5


def test_cli_text_flags_counted_by_validate(flawed, capsys):
    out, err = inspect(capsys, flawed, "--validate")
    assert err == ""
    assert "validated   all 8 samples" in out
    section = out.split("\nflags ", 1)[1].splitlines()
    assert "every structure checked" in section[0]
    rows = {line.split()[0]: line for line in section[1:]}
    assert list(rows) == ["energy", "band_gap", "forces", "pos", "my_prop"]
    assert "positive in 2 of 8 structures (e.g. samples 1, 4), up to 2 eV" in rows["energy"]
    assert "negative in 1 of 8 structures (e.g. sample 2)" in rows["band_gap"]
    assert "above 50 eV/Å in 1 of 8 structures (e.g. sample 3)" in rows["forces"]
    assert "closer than 0.5 Å in 1 of 8 structures (e.g. sample 4), closest 0.300 Å" in rows["pos"]


def test_cli_json_flags(flawed, capsys):
    out, _ = inspect(capsys, flawed, "--json")
    flags = json.loads(out)["flags"]
    assert [(f["key"], f["flag"], f["count"], f["examples"]) for f in flags] == [
        ("energy", "positive_energy", None, []), ("band_gap", "negative_band_gap", None, []),
        ("forces", "large_force", None, []), ("my_prop", "unknown_unit", None, [])]
    assert all(set(f) == {"key", "flag", "count", "examples", "message"} for f in flags)

    out, _ = inspect(capsys, flawed, "--validate", "--json")
    report = json.loads(out)
    assert report["invalid"] == []
    assert [(f["key"], f["flag"], f["count"], f["examples"]) for f in report["flags"]] == [
        ("energy", "positive_energy", 2, [1, 4]), ("band_gap", "negative_band_gap", 1, [2]),
        ("forces", "large_force", 1, [3]), ("pos", "short_distance", 1, [4]), ("my_prop", "unknown_unit", None, [])]


def test_cli_thresholds(flawed, capsys):
    out, _ = inspect(capsys, flawed, "--validate", "--json", "--max-force", "80", "--min-distance", "0.2")
    assert [f["flag"] for f in json.loads(out)["flags"]] == ["positive_energy", "negative_band_gap", "unknown_unit"]
    out, _ = inspect(capsys, flawed, "--max-force", "80")
    assert "forces" not in out.split("\nflags ", 1)[1]


def test_cli_threshold_options_are_checked(flawed, capsys):
    _, err = inspect(capsys, flawed, "--min-distance", "0.3", status=1)
    assert err.startswith("matsciml: error: --min-distance needs --validate") and len(err.splitlines()) == 1
    for bad in (["--max-force", "0"], ["--max-force", "x"], ["--validate", "--min-distance", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["data", "inspect", str(flawed), *bad])
        assert exit_info.value.code == 2
        assert "not" in capsys.readouterr().err


# ---------------------------------------------------------------- the shipped EMT devset
def test_shipped_emt_devset_is_flagged_for_positive_energies_not_rejected(capsys):
    """EMT energies are positive (not DFT total energies): flagged on every inspect; --validate still passes."""
    out, _ = inspect(capsys, "slab-emt-s2ef")
    energy = next(line for line in out.splitlines() if line.lstrip().startswith("energy ") and "positive" in line)
    assert "all positive" in energy and "empirical potential (e.g. EMT)" in energy

    out, _ = inspect(capsys, "slab-emt-s2ef", "--validate", "--json")
    report = json.loads(out)
    assert report["invalid"] == []
    flag = next(f for f in report["flags"] if f["flag"] == "positive_energy")
    assert (flag["key"], flag["count"], flag["examples"]) == ("energy", report["count"], [0, 1, 2, 3, 4])
    assert not any(f["flag"] in ("large_force", "short_distance", "negative_band_gap") for f in report["flags"])
