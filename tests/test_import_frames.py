"""Frame-by-frame import: one unreadable frame costs only itself; inputs are never overwritten; no silent cells.

Each test builds a small input file, breaks it the way a real file breaks
(an unknown element symbol, a file cut short, a stray line, a zero cell),
and checks that conversion keeps every other frame and names the bad one.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

ase_io = pytest.importorskip("ase.io")

from ase.build import bulk  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from matsciml.cli import main  # noqa: E402
from matsciml.data.ase_import import convert, iter_frames  # noqa: E402
from matsciml.data.dataset import LMDBDataset  # noqa: E402
from matsciml.errors import MatscimlError  # noqa: E402

NUM_FRAMES = 5
ATOMS_PER_FRAME = 4  # conventional fcc copper cell


def _copper(seed: int) -> object:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=seed)
    atoms.info["source_index"] = seed
    forces = np.random.default_rng(seed).normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, energy=-10.0 - seed, forces=forces)
    return atoms


def _frame_lines(tmp_path: Path) -> list[list[str]]:
    """The lines of each frame of a 5-frame extxyz written by ASE (2 header lines + 4 atom lines each)."""
    scratch = tmp_path / "scratch.extxyz"
    ase_io.write(scratch, [_copper(seed) for seed in range(NUM_FRAMES)])
    lines = scratch.read_text().splitlines(keepends=True)
    scratch.unlink()
    size = 2 + ATOMS_PER_FRAME
    assert len(lines) == NUM_FRAMES * size
    return [lines[k * size:(k + 1) * size] for k in range(NUM_FRAMES)]


def _write(path: Path, frames: list[list[str]]) -> Path:
    path.write_text("".join(line for frame in frames for line in frame))
    return path


@pytest.fixture
def frames(tmp_path) -> list[list[str]]:
    return _frame_lines(tmp_path)


@pytest.fixture
def unknown_symbol_file(tmp_path, frames) -> Path:
    """Frame 2 of 5 has the element symbol 'Xx' on its second atom line."""
    frames[2][3] = frames[2][3].replace("Cu", "Xx", 1)
    return _write(tmp_path / "bad.extxyz", frames)


@pytest.fixture
def truncated_file(tmp_path, frames) -> Path:
    """The last frame stops after 2 of its 4 atom lines, as in a copy cut short."""
    frames[-1] = frames[-1][:4]
    return _write(tmp_path / "cut.extxyz", frames)


def _kept(path: Path) -> list[int]:
    dataset = LMDBDataset(path)
    try:
        return [int(dataset[i]["source_index"]) for i in range(len(dataset))]
    finally:
        dataset.close()


def _rejected_in_metadata(path: Path) -> list[dict]:
    dataset = LMDBDataset(path)
    try:
        return dataset.metadata["rejected"]
    finally:
        dataset.close()


# ---------------------------------------------------------------- extended XYZ
def test_unknown_symbol_costs_only_its_frame(unknown_symbol_file, tmp_path):
    """Frames 0, 1, 3, 4 are converted; frame 2 is named, with its file, lines and ASE's reason."""
    out = tmp_path / "out.lmdb"
    report = convert([unknown_symbol_file], out, progress=False)
    assert report.written == NUM_FRAMES - 1 and report.num_rejected == 1
    (rejected,) = report.rejected
    assert rejected["index"] == 2 and rejected["source"] == str(unknown_symbol_file)
    reason = rejected["reason"]
    assert reason.startswith(f"frame 2 of {unknown_symbol_file}: cannot be parsed (KeyError: 'Xx')"), reason
    assert "lines 13-18" in reason and "--format" not in reason
    assert _kept(out) == [0, 1, 3, 4]
    assert _rejected_in_metadata(out) == report.rejected


def test_truncated_last_frame_is_reported_as_truncated(truncated_file, tmp_path):
    """A file cut inside its last frame keeps the complete frames and says the last one is truncated."""
    out = tmp_path / "out.lmdb"
    report = convert([truncated_file], out, progress=False)
    assert report.written == NUM_FRAMES - 1
    (rejected,) = report.rejected
    assert rejected["index"] == NUM_FRAMES - 1
    assert rejected["reason"].startswith(f"frame 4 of {truncated_file}: truncated: the file ends after 2 of its "
                                         f"4 atom lines"), rejected
    assert _kept(out) == [0, 1, 2, 3]

    with pytest.raises(MatscimlError, match=r"^frame 4 of .*cut\.extxyz: truncated: .*--strict: no dataset written"):
        convert([truncated_file], tmp_path / "strict.lmdb", strict=True, progress=False)
    assert not (tmp_path / "strict.lmdb").exists()


def test_miscounted_frames_do_not_take_their_neighbours(tmp_path, frames):
    """A frame with an extra atom line, one with a missing atom line, and a blank line between frames.

    ASE's own reader reads nothing of the first file and silently stops at the
    blank line of the last; here only the miscounted frames are left out.
    """
    extra = [list(frame) for frame in frames]
    extra[1].insert(3, extra[1][3])  # 5 atom lines under a count of 4
    report = convert([_write(tmp_path / "extra.extxyz", extra)], tmp_path / "extra.lmdb", progress=False)
    assert [r["index"] for r in report.rejected] == [1]
    assert "more lines follow" in report.rejected[0]["reason"]
    assert _kept(tmp_path / "extra.lmdb") == [0, 2, 3, 4]

    short = [list(frame) for frame in frames]
    del short[1][3]  # 3 atom lines under a count of 4: the next frame's count line follows at once
    report = convert([_write(tmp_path / "short.extxyz", short)], tmp_path / "short.lmdb", progress=False)
    assert [r["index"] for r in report.rejected] == [1]
    assert "only 3 atom lines follow" in report.rejected[0]["reason"]
    assert _kept(tmp_path / "short.lmdb") == [0, 2, 3, 4]

    blank = [list(frame) for frame in frames]
    blank[2].insert(0, "\n")
    report = convert([_write(tmp_path / "blank.extxyz", blank)], tmp_path / "blank.lmdb", progress=False)
    assert report.num_rejected == 0 and _kept(tmp_path / "blank.lmdb") == [0, 1, 2, 3, 4]


def test_index_selects_frames_and_reports_keep_file_positions(unknown_symbol_file, tmp_path):
    """--index 1:4 reads frames 1-3; the broken one is still called frame 2 (its place in the file)."""
    report = convert([unknown_symbol_file], tmp_path / "out.lmdb", index="1:4", progress=False)
    assert report.written == 2 and [r["index"] for r in report.rejected] == [2]
    assert _kept(tmp_path / "out.lmdb") == [1, 3]
    assert [frame.index for frame in iter_frames(unknown_symbol_file, index="-2:")] == [3, 4]


def test_compressed_and_at_sign_names(unknown_symbol_file, tmp_path):
    """A gzipped file is split like a plain one; an '@' in a file name is not read as an ASE index."""
    packed = tmp_path / "bad.extxyz.gz"
    packed.write_bytes(gzip.compress(unknown_symbol_file.read_bytes()))
    frames = list(iter_frames(packed))
    assert [f.index for f in frames if f.problem] == [2] and sum(f.atoms is not None for f in frames) == 4

    at_sign = tmp_path / "run@300K.extxyz"
    at_sign.write_bytes(unknown_symbol_file.read_bytes())
    assert [f.index for f in iter_frames(at_sign) if f.atoms is not None] == [0, 1, 3, 4]


def test_format_is_suggested_only_when_the_extension_tells_nothing(tmp_path, frames):
    """A broken first frame of a .extxyz is a frame problem; a file ASE cannot place asks for --format."""
    broken_first = [list(frame) for frame in frames]
    broken_first[0][2] = broken_first[0][2].replace("Cu", "Xx", 1)
    report = convert([_write(tmp_path / "first.extxyz", broken_first)], tmp_path / "a.lmdb", progress=False)
    assert [r["index"] for r in report.rejected] == [0] and "--format" not in report.rejected[0]["reason"]

    unknown = _write(tmp_path / "frames.dat7", frames)
    with pytest.raises(MatscimlError, match=r"frames\.dat7.*--format"):
        convert([unknown], tmp_path / "b.lmdb", progress=False)
    report = convert([unknown], tmp_path / "b.lmdb", file_format="extxyz", progress=False)
    assert report.written == NUM_FRAMES

    # no extension: ASE guesses XYZ from the leading atom count; a broken first frame may mean a wrong guess
    assert convert([_write(tmp_path / "frames", frames)], tmp_path / "c.lmdb", progress=False).written == NUM_FRAMES
    with pytest.raises(MatscimlError, match=r"frame 0 of .*guessed.*--format"):
        convert([_write(tmp_path / "guessed", broken_first)], tmp_path / "d.lmdb", progress=False)


# ---------------------------------------------------------------- --strict and the CLI report
def test_cli_strict_names_the_frame_and_keeps_existing_output(unknown_symbol_file, tmp_path, capsys):
    """--strict --overwrite on a file with a broken frame: one line naming it, exit 1, the old dataset intact."""
    out = tmp_path / "keep.lmdb"
    ase_io.write(tmp_path / "good.extxyz", [_copper(7)])
    convert([tmp_path / "good.extxyz"], out, progress=False)
    before = out.read_bytes()
    assert main(["data", "convert", str(unknown_symbol_file), "-o", str(out), "--quiet", "--strict",
                 "--overwrite"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("matsciml: error: "), lines
    assert f"frame 2 of {unknown_symbol_file}: cannot be parsed" in lines[0] and "--strict" in lines[0]
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["bad.extxyz", "good.extxyz", "keep.lmdb"]


def test_cli_prints_one_line_per_rejected_frame(tmp_path, frames, capsys):
    """Two broken frames and one truncated: the report lists each, one line apiece, naming file and frame."""
    frames[1][2] = frames[1][2].replace("Cu", "Qq", 1)
    frames[3][4] = frames[3][4].replace("Cu", "Zz", 1)
    frames[4] = frames[4][:5]
    path = _write(tmp_path / "three.extxyz", frames)
    assert main(["data", "convert", str(path), "-o", str(tmp_path / "o.lmdb"), "--quiet"]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0].startswith("wrote 2 structures") and "left out 3 invalid structure(s)" in stdout[0]
    assert [line.split(":")[0].strip() for line in stdout[1:]] == [f"frame {k} of {path}" for k in (1, 3, 4)]
    assert "Qq" in stdout[1] and "Zz" in stdout[2] and "truncated" in stdout[3]


# ---------------------------------------------------------------- the output is never an input
def _same_file_spellings(tmp_path: Path, source: Path) -> dict[str, str]:
    link = tmp_path / "link.extxyz"
    link.symlink_to(source)
    hard = tmp_path / "hard.extxyz"
    os.link(source, hard)
    return {"same": str(source), "dot": f"./{source.name}", "dotdot": f"../{tmp_path.name}/{source.name}",
            "symlink": str(link), "hardlink": str(hard)}


@pytest.mark.parametrize("spelling", ["same", "dot", "dotdot", "symlink", "hardlink"])
def test_output_equal_to_input_is_refused(tmp_path, monkeypatch, capsys, spelling):
    """-o naming the input (any spelling) fails with --overwrite too, in one line, and leaves the input as it was."""
    source = tmp_path / "in.extxyz"
    ase_io.write(source, [_copper(0), _copper(1)])
    before = source.read_bytes()
    output = _same_file_spellings(tmp_path, source)[spelling]
    monkeypatch.chdir(tmp_path)
    assert main(["data", "convert", str(source), "-o", output, "--quiet", "--overwrite"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("matsciml: error: "), lines
    assert output in lines[0] and str(source) in lines[0] and "choose another -o" in lines[0]
    assert source.read_bytes() == before
    assert not list(tmp_path.glob(".*partial*"))


# ---------------------------------------------------------------- cells that say periodic
CIF_TEMPLATE = """data_{name}
_cell_length_a {a}
_cell_length_b {b}
_cell_length_c {c}
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Cu1 Cu 0.0 0.0 0.0
Cu2 Cu 0.5 0.5 0.0
Cu3 Cu 0.5 0.0 0.5
Cu4 Cu 0.0 0.5 0.5
"""


def test_zero_length_cell_cif_is_rejected_not_stored_as_a_molecule(tmp_path):
    """ASE reads a CIF with zero cell lengths as non-periodic (fractions taken as Å): that block is rejected."""
    path = tmp_path / "cells.cif"
    path.write_text(CIF_TEMPLATE.format(name="good", a=3.6, b=3.6, c=3.6)
                    + CIF_TEMPLATE.format(name="zero", a=0, b=0, c=0)
                    + CIF_TEMPLATE.format(name="flat", a=0, b=3.6, c=3.6)
                    + CIF_TEMPLATE.format(name="good2", a=3.7, b=3.7, c=3.7))
    alone = tmp_path / "zero.cif"
    alone.write_text(CIF_TEMPLATE.format(name="zero", a=0, b=0, c=0))
    zero = ase_io.read(alone)  # the failure as ASE delivers it: a molecule with fractions as Å
    assert not zero.pbc.any() and not zero.cell.any() and zero.positions.max() == 0.5

    out = tmp_path / "cells.lmdb"
    report = convert([path], out, progress=False)
    assert report.written == 2
    assert [r["index"] for r in report.rejected] == [1, 2]
    for rejected in report.rejected:
        assert rejected["reason"].startswith(f"frame {rejected['index']} of {path}: a cif file describes a "
                                             f"periodic crystal"), rejected
        assert "zero-length" in rejected["reason"] and "_cell_length_a" in rejected["reason"]
    dataset = LMDBDataset(out)
    try:
        for index in range(len(dataset)):
            sample = dataset[index]
            assert sample["pbc"].all() and abs(np.linalg.det(sample["cell"])) > 40
    finally:
        dataset.close()


def test_zero_lattice_poscar_is_rejected(tmp_path):
    """A POSCAR with zero lattice vectors is the only frame: nothing valid, and the reason names it."""
    path = tmp_path / "POSCAR"
    path.write_text("Cu\n1.0\n0 0 0\n0 0 0\n0 0 0\nCu\n2\nDirect\n0 0 0\n0.5 0.5 0\n")
    with pytest.raises(MatscimlError, match=rf"frame 0 of {path}: a vasp file describes a periodic crystal.*zero"):
        convert([path], tmp_path / "p.lmdb", progress=False)
    assert not (tmp_path / "p.lmdb").exists()


# ---------------------------------------------------------------- other multi-frame formats
@pytest.mark.parametrize("suffix", [".traj", ".db"])
def test_other_multi_frame_formats_convert_every_frame(tmp_path, suffix):
    """ASE trajectory and database files go through ase.io.iread: every frame, in order, with its labels."""
    images = [_copper(seed) for seed in range(4)]
    path = tmp_path / f"frames{suffix}"
    ase_io.write(path, images)
    report = convert([path], tmp_path / "out.lmdb", progress=False)
    assert report.written == 4 and report.num_rejected == 0
    dataset = LMDBDataset(tmp_path / "out.lmdb")
    try:
        for index, atoms in enumerate(images):
            np.testing.assert_allclose(dataset[index]["pos"], atoms.positions, rtol=0, atol=1e-12)
            assert float(dataset[index]["energy"]) == atoms.get_potential_energy()
    finally:
        dataset.close()
    report = convert([path], tmp_path / "step.lmdb", index="::2", progress=False)  # ase.db refuses steps itself
    assert report.written == 2
    dataset = LMDBDataset(tmp_path / "step.lmdb")
    try:
        assert [float(dataset[i]["energy"]) for i in range(2)] == [-10.0, -12.0]  # frames 0 and 2
    finally:
        dataset.close()


def test_damaged_trajectory_keeps_the_frames_before(tmp_path):
    """A .traj cut by one byte: the frames before the damage are kept and the damaged one is named."""
    path = tmp_path / "cut.traj"
    ase_io.write(path, [_copper(seed) for seed in range(3)])
    path.write_bytes(path.read_bytes()[:-1])
    report = convert([path], tmp_path / "out.lmdb", progress=False)
    assert _kept(tmp_path / "out.lmdb") == [0, 1]
    (rejected,) = report.rejected
    assert rejected["index"] == 2 and rejected["reason"].startswith(f"frame 2 of {path}: cannot be parsed (")
