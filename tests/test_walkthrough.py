"""The README walkthrough on real DFT data runs as written.

The walkthrough's ```bash blocks are read from README.md (the section found
by its heading, whatever its level) and run in order, each with ``bash -e``,
in a fresh directory laid out like a clone beside ``../shared``:
``TMP/repo`` is the working directory and ``TMP/shared/devsets`` links to
the devsets, so the README's ``../shared/devsets/...`` paths resolve and
every output (``data/``, ``runs/``) stays in ``TMP``. ``matsciml`` and
``python`` are those of the interpreter running the tests (its ``bin``
folder first on ``PATH``, as with the environment active). Other fenced
blocks (```text: output excerpts) are not run.

Then the outputs are checked: the dataset exists and declares its group
key; the split keeps every system in one part; the run has its checkpoints
and a completed ``metrics.json``; ``evaluate`` prints the metric table
beside the baselines; the parity plot and the learning curves are PNG
files of a plausible size; and the per-element reference energies printed
are the least-squares fit on the training split.

It trains E(n)-GNN (DGL), so it runs in the pinned environment only.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH_HEADING = "Walkthrough: real DFT data, from file to parity plot"
#: another file holding the section (a draft), read only when README.md has no section of that heading
WALKTHROUGH_FILE_VARIABLE = "MATSCIML_WALKTHROUGH_FILE"

_RUNS_THE_WALKTHROUGH = (
    pytest.mark.dgl, pytest.mark.slow, pytest.mark.devsets,
    pytest.mark.skipif(importlib.util.find_spec("dgl") is None,
                       reason="the walkthrough trains E(n)-GNN, which needs DGL (the pinned environment)"),
)


def runs_the_walkthrough(test):
    """The marks of a test that uses the ``walkthrough`` fixture (about two minutes, once per session)."""
    for mark in _RUNS_THE_WALKTHROUGH:
        test = mark(test)
    return test

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")


def section(text: str, heading: str) -> str | None:
    """The Markdown section headed ``heading`` (any level), up to the next heading of its level or higher.

    Lines inside fenced code blocks are never headings (a ``# comment`` in a bash block is not).
    """
    lines = text.splitlines(keepends=True)
    start = level = None
    fence = None
    for number, line in enumerate(lines):
        opened = _FENCE.match(line)
        if fence is not None:
            if opened and line.strip() == fence:
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            continue
        match = _HEADING.match(line)
        if not match:
            continue
        if start is None:
            if match.group(2) == heading:
                start, level = number, len(match.group(1))
        elif len(match.group(1)) <= level:
            return "".join(lines[start:number])
    return "".join(lines[start:]) if start is not None else None


def bash_blocks(markdown: str) -> list[str]:
    """The contents of the ```bash (or ```sh) fenced blocks, in order."""
    blocks, current, fence = [], None, None
    for line in markdown.splitlines(keepends=True):
        if fence is None:
            opened = _FENCE.match(line)
            if opened:
                fence = opened.group(1)
                current = [] if opened.group(2) in ("bash", "sh") else None
        elif line.strip() == fence:
            if current is not None:
                blocks.append("".join(current))
            current = fence = None
        elif current is not None:
            current.append(line)
    return blocks


def walkthrough_text() -> tuple[Path, str]:
    """The walkthrough section: from README.md, else from the file ``$MATSCIML_WALKTHROUGH_FILE`` names."""
    readme = REPO_ROOT / "README.md"
    found = section(readme.read_text(encoding="utf-8"), WALKTHROUGH_HEADING)
    if found is not None:
        return readme, found
    draft = os.environ.get(WALKTHROUGH_FILE_VARIABLE)
    if draft:
        found = section(Path(draft).read_text(encoding="utf-8"), WALKTHROUGH_HEADING)
        if found is not None:
            return Path(draft), found
    pytest.fail(f"README.md has no section headed {WALKTHROUGH_HEADING!r}"
                + (f", nor has {draft}" if draft else "")
                + f"; this test runs that section's bash blocks ({WALKTHROUGH_FILE_VARIABLE}=FILE reads a draft "
                  f"of it while README.md lacks it)")


def test_section_lookup_skips_code_and_stops_at_the_next_heading() -> None:
    text = ("# Top\n## Walkthrough: real DFT data, from file to parity plot\nintro\n```bash\n# a comment\n"
            "echo one\n```\n### Detail\n```text\n## not a heading\n```\n## Next\n```bash\necho two\n```\n")
    found = section(text, WALKTHROUGH_HEADING)
    assert found is not None and found.startswith("## Walkthrough") and "## Next" not in found
    assert bash_blocks(found) == ["# a comment\necho one\n"]
    assert section(text, "Missing") is None


@pytest.fixture(scope="module")
def walkthrough(devsets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every bash block of the walkthrough run in order in ``TMP/repo``; what each printed."""
    source, text = walkthrough_text()
    blocks = bash_blocks(text)
    assert blocks, f"the walkthrough in {source} has no ```bash blocks"
    root = tmp_path_factory.mktemp("walkthrough")
    workdir = root / "repo"
    workdir.mkdir()
    (root / "shared").mkdir()
    (root / "shared" / "devsets").symlink_to(devsets_dir.resolve(), target_is_directory=True)
    bindir = Path(sys.executable).parent
    assert (bindir / "matsciml").exists(), f"no matsciml script beside {sys.executable}"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "MPLBACKEND": "Agg"}
    # one thread per process unless the caller chose: on the shared two-core machine, torch's and DGL's
    # threads spinning on each other made a training step 6-30x slower (0.6-3 s against 0.09 s)
    env.setdefault("OMP_NUM_THREADS", "1")
    outputs = []
    for number, block in enumerate(blocks, 1):
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (f"block {number} of the walkthrough ({source}) exited {done.returncode}:\n"
                                      f"{block}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}")
        outputs.append((block, done.stdout, done.stderr))
    return {"dir": workdir, "blocks": outputs}


def _dataset(walkthrough: dict, keys: tuple[str, ...]) -> list[dict]:
    """The samples of the walkthrough's dataset (``--dataset`` of its train command), only ``keys``."""
    from matsciml.data.storage import DatasetFile

    block, _, _ = _block(walkthrough, "matsciml train")
    file = DatasetFile(walkthrough["dir"] / _argument(block, r"--dataset\s+(\S+)"))
    try:
        return [file.read(index, keys=keys) for index in range(len(file))]
    finally:
        file.close()


def _block(walkthrough: dict, command: str) -> tuple[str, str, str]:
    """The one block of steps 1-7 running ``command`` (step 8, two datasets, is read by its own test)."""
    found = [entry for entry in walkthrough["blocks"] if command in entry[0] and _TWO_DATASETS not in entry[0]]
    assert len(found) == 1, f"expected one walkthrough block with {command!r}, found {len(found)}"
    return found[0]


#: what names the block of step 8, the run on two datasets
_TWO_DATASETS = "data/lips.lmdb"


def _argument(block: str, pattern: str) -> str:
    match = re.search(pattern, block)
    assert match, f"{pattern!r} not in {block!r}"
    return match.group(1)


@runs_the_walkthrough
def test_the_dataset_is_converted_with_its_group_key(walkthrough: dict) -> None:
    from matsciml.data.storage import DatasetFile

    block, stdout, _ = _block(walkthrough, "matsciml data convert")
    dataset = walkthrough["dir"] / _argument(block, r"-o\s+(\S+)")
    assert dataset.is_file() and dataset.stat().st_size > 100_000
    assert "wrote 262 structures" in stdout
    file = DatasetFile(dataset)
    try:
        assert file.metadata["group_key"] == "system_id" and len(file) == 262
    finally:
        file.close()
    _, stdout, _ = _block(walkthrough, "matsciml data inspect")
    assert "samples     262" in stdout and "validated   all 262 samples" in stdout


def _run_dir(walkthrough: dict) -> Path:
    block, _, _ = _block(walkthrough, "matsciml train")
    return walkthrough["dir"] / "runs" / _argument(block, r"run\.name=(\S+)")


@runs_the_walkthrough
def test_the_split_keeps_each_system_in_one_part(walkthrough: dict) -> None:
    _, _, stderr = _block(walkthrough, "matsciml train")
    assert "split by system_id: 120 groups ->" in stderr
    split = json.loads((_run_dir(walkthrough) / "split.json").read_text())
    assert split["group_key"] == "system_id" and split["num_groups"] == 120
    dataset = _dataset(walkthrough, ("system_id",))
    systems = {part: {int(dataset[i]["system_id"]) for i in indices} for part, indices in split["indices"].items()}
    assert all(systems.values()), systems
    assert not systems["train"] & systems["val"] and not systems["train"] & systems["test"]
    assert not systems["val"] & systems["test"]
    assert sum(len(indices) for indices in split["indices"].values()) == len(dataset) == 262


@runs_the_walkthrough
def test_the_run_is_complete_and_beats_zero_forces(walkthrough: dict) -> None:
    run = _run_dir(walkthrough)
    assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "checkpoints").glob("best-epoch=*.ckpt"))
    assert (run / "config.yaml").is_file() and (run / "logs" / "metrics.csv").is_file()
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed", summary
    metrics, baselines = summary["metrics"], summary["baselines"]
    print("walkthrough validation:", json.dumps({"metrics": metrics, "baselines": baselines}))
    # the README says 0.06x zero forces on the held-out vacancy run; this only catches a run that learnt nothing
    assert metrics["force_mae"] < 0.5 * baselines["mean"]["force_mae"], (metrics, baselines)


@runs_the_walkthrough
def test_evaluate_prints_the_metric_table_and_draws_the_parity_plot(walkthrough: dict) -> None:
    block, stdout, _ = _block(walkthrough, "matsciml evaluate")
    assert "(test split)" in stdout
    assert re.search(r"^METRIC\s+MODEL\s+MEAN\s+COMPOSITION", stdout, re.M), stdout
    for metric in ("energy_mae", "energy_per_atom_mae", "force_mae"):
        assert re.search(rf"^{metric}\s+\S+\s+\S+\s+\S+", stdout, re.M), (metric, stdout)
    _png(_run_dir(walkthrough) / "parity-test.png")


@runs_the_walkthrough
def test_plot_draws_the_learning_curves(walkthrough: dict) -> None:
    _, stdout, _ = _block(walkthrough, "matsciml plot")
    assert "learning_curves.png" in stdout
    _png(_run_dir(walkthrough) / "learning_curves.png")


def _png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < len(data) < 5_000_000, (path, len(data))


@runs_the_walkthrough
def test_the_per_element_references_are_the_training_fit(walkthrough: dict) -> None:
    """The printed reference of Cu is the least-squares energy per atom of the training split."""
    import ast

    _, stdout, _ = _block(walkthrough, "reference_energies")
    references = ast.literal_eval(stdout.strip())
    assert list(references) == ["Cu"], stdout
    printed = [("Cu", references["Cu"])]
    _, train_stdout, _ = _block(walkthrough, "matsciml train")
    assert re.search(r"^per-element reference energies .*: Cu -\d+\.\d{4}$", train_stdout, re.M), train_stdout
    dataset = _dataset(walkthrough, ("atomic_numbers", "energy"))
    train = json.loads((_run_dir(walkthrough) / "split.json").read_text())["indices"]["train"]
    atoms = np.array([len(dataset[i]["atomic_numbers"]) for i in train], dtype=float)
    energies = np.array([float(dataset[i]["energy"]) for i in train])
    fit = float(atoms @ energies / (atoms @ atoms))  # least squares of E = n * e_Cu
    assert float(printed[0][1]) == pytest.approx(fit, abs=2e-4), (printed, fit)


@runs_the_walkthrough
def test_two_datasets_train_together_each_with_its_own_statistics(walkthrough: dict) -> None:
    """Step 8: copper and LiPS in one run, split each on its own, measured per dataset."""
    (block, stdout, stderr), = [entry for entry in walkthrough["blocks"] if _TWO_DATASETS in entry[0]]
    assert "wrote 200 structures to data/lips.lmdb" in stdout
    assert "data/cu.lmdb: split by system_id: 120 groups ->" in stderr
    assert "data/lips.lmdb: split by sample: 200 samples -> 160/20/20" in stderr
    run = walkthrough["dir"] / "runs" / _argument(block, r"run\.name=(\S+)")
    summary = json.loads((run / "metrics.json").read_text())
    metrics, composition = summary["metrics"], summary["baselines"]["composition"]
    print("walkthrough two datasets:", json.dumps({"metrics": metrics, "composition": composition}))
    assert {"energy_mae", "energy_mae@cu", "energy_mae@lips"} <= set(metrics) - {"loss"} <= set(composition)
    # copper's baselines are its own fit: the same as in the copper-only run of step 4 (same split of data/cu.lmdb)
    alone = json.loads((_run_dir(walkthrough) / "metrics.json").read_text())["baselines"]["composition"]
    assert composition["energy_mae@cu"] == pytest.approx(alone["energy_mae"], rel=1e-6)
    # the README says 0.80x the composition fit for copper; this only catches a run that learnt nothing
    assert metrics["energy_mae@cu"] < composition["energy_mae@cu"], (metrics, composition)
