"""The scripts in benchmarks/ still run: each is run once with one timed step.

Benchmarks report and assert nothing about speed (tests never assert
timings); this only keeps them from rotting as the core changes, by
checking that each finishes and prints its table.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.devsets]


@pytest.fixture
def dgl_stack() -> None:
    """Skips a benchmark that needs DGL where it is not installed (the current-torch environment)."""
    pytest.importorskip("dgl", reason="DGL is not installed (the current-torch environment)")


def _run(script: str, devsets_dir: Path, *arguments: str) -> str:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / script), "--devsets", str(devsets_dir),
                           *arguments], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.dgl
@pytest.mark.usefixtures("dgl_stack")
def test_egnn_step_benchmark_runs(devsets_dir: Path) -> None:
    out = _run("egnn_s2ef_step.py", devsets_dir, "--steps", "1")
    assert "ratio reference / E(n)-GNN" in out and "peak resident memory" in out


@pytest.mark.dgl
@pytest.mark.usefixtures("dgl_stack")
def test_megnet_step_benchmark_runs_beside_egnn(devsets_dir: Path) -> None:
    out = _run("megnet_s2ef_step.py", devsets_dir, "--steps", "1", "--preset", "small")
    lines = out.splitlines()
    assert any(line.startswith("megnet   small") for line in lines), out
    assert any(line.startswith("egnn     default") for line in lines), out
    assert "MEGNet / E(n)-GNN: time" in out


@pytest.mark.dgl
@pytest.mark.usefixtures("dgl_stack")
def test_gala_benchmark_runs(devsets_dir: Path) -> None:
    out = _run("gala_s2ef_step.py", devsets_dir, "--steps", "1", "--width", "8", "--num-blocks", "1",
               "--batch-sizes", "1", "--slots", "8")
    rows = [line.split() for line in out.splitlines()]
    assert ["1", "8"] in [row[:2] for row in rows], out  # batch 1, K = 8
    assert "E(n)-GNN, batch 8, its defaults" in out, out  # the reference beside it


def test_loader_workers_benchmark_runs(devsets_dir: Path) -> None:
    """Point clouds everywhere; DGL graphs too where DGL imports (else a skipped row)."""
    out = _run("loader_workers.py", devsets_dir, "--frames", "16", "--workers", "0,1", "--warmup", "1",
               "--passes", "1")
    rows = [line.split() for line in out.splitlines()]
    assert ["point-cloud", "0"] in [row[:2] for row in rows], out
    assert ["point-cloud", "1"] in [row[:2] for row in rows], out
    reference = next(row for row in rows if row[:2] == ["point-cloud", "0"])
    assert reference[-1] == "1.00x", out  # the ratio column, against itself
    assert any(row[:1] == ["dgl-graph"] for row in rows), out  # measured, or listed as skipped with the reason
