"""Nothing invalid trains to a finished run with exit code 0.

Datasets are made from the shipped S2EF devset with one damaged sample
written past validation (``DatasetWriter.append(validate=False)``, as the
outside review did): a NaN label, two atoms at one position. Training must
stop naming the sample and the file, exit 1 and record the failure, or,
with ``data.skip_invalid=true``, leave the sample out and count it. A loss
or gradient that turns non-finite in spite of valid data stops training
before any checkpoint of that state is kept.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.dgl

NUM_SAMPLES = 40
TINY = ["model.name=egnn", "trainer.max_epochs=1", "model.hidden_dim=8", "model.num_layers=1",
        "trainer.enable_progress_bar=false", "dataset.split=[0.5,0.5,0.0]"]


def _write_variant(path: Path, damage: dict[int, Callable[[dict[str, Any]], None]]) -> Path:
    """The first NUM_SAMPLES samples of slab-emt-s2ef, with ``damage[i]`` applied to sample ``i``."""
    from matsciml.data.storage import DatasetWriter
    from matsciml.datasets import open_devset

    source = open_devset("slab-emt-s2ef")
    with DatasetWriter(path, name=path.stem) as writer:
        for index in range(NUM_SAMPLES):
            sample = dict(source[index])
            if index in damage:
                damage[index](sample)
            writer.append(sample, validate=index not in damage)
    return path


def _nan_energy(sample: dict[str, Any]) -> None:
    sample["energy"] = np.array(np.nan)


def _coincident(sample: dict[str, Any]) -> None:
    sample["pos"] = sample["pos"].copy()
    sample["pos"][1] = sample["pos"][0]


def _train(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str, Path]:
    from matsciml.cli import main

    capsys.readouterr()
    code = main(["train", "--dataset", str(dataset), *TINY, f"run.dir={tmp_path / 'runs'}", "run.name=r", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, tmp_path / "runs" / "r"


@pytest.mark.parametrize("damage, problem", [
    (_nan_energy, r"energy is nan, not a finite number"),
    (_coincident, r"atoms 0 and 1 are 0\.0+ Å apart"),
])
def test_an_invalid_sample_stops_training_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     damage: Callable[[dict[str, Any]], None], problem: str) -> None:
    dataset = _write_variant(tmp_path / "bad.lmdb", {3: damage})
    code, _, err, run_dir = _train(dataset, tmp_path, capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("matsciml: error: "), err
    assert f"sample 3 of {dataset}" in lines[0]
    import re
    assert re.search(problem, lines[0]), lines[0]
    assert "data.skip_invalid=true" in lines[0]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["status"] == "failed" and "sample 3" in summary["error"]
    assert not list((run_dir / "checkpoints").glob("best*.ckpt")) if (run_dir / "checkpoints").exists() else True


def test_skip_invalid_leaves_bad_samples_out_and_counts_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = {3: _nan_energy, 4: _coincident, 30: _nan_energy, 31: _coincident}
    dataset = _write_variant(tmp_path / "bad.lmdb", bad)
    code, out, err, run_dir = _train(dataset, tmp_path, capsys, "data.skip_invalid=true")
    assert code == 0, err
    split = json.loads((run_dir / "split.json").read_text())
    seen = set(split["indices"]["train"]) | set(split["indices"]["val"])
    expected = sorted(i for i in bad if i in seen)
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["status"] == "completed"
    assert summary["skipped_invalid"]["count"] == len(expected) > 0
    named = sorted(int(entry["sample"].split()[1]) for entry in summary["skipped_invalid"]["samples"])
    assert named == expected
    assert all(np.isfinite(value) for value in summary["metrics"].values())
    assert f"skipped {len(expected)} invalid sample" in out


def _built_run(dataset: Path, tmp_path: Path) -> Any:
    from matsciml.training.config import build_config
    from matsciml.training.run import build_run, resolve_config

    config = resolve_config(build_config(overrides=[*TINY, f"dataset.name={dataset}", f"run.dir={tmp_path}"]))
    return build_run(config)


def _trainer() -> Any:
    import pytorch_lightning as pl

    return pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, inference_mode=False, accelerator="cpu")


def test_a_nan_label_that_escapes_validation_is_caught_by_the_loss_guard(tmp_path: Path) -> None:
    """With read-time validation off, the non-finite loss itself stops training and blames the target."""
    from matsciml.errors import NonFiniteError

    dataset = _write_variant(tmp_path / "bad.lmdb", {3: _nan_energy})
    run = _built_run(dataset, tmp_path)
    run.datamodule.reader.validate = False
    good = [s for s in run.datamodule.samples("train") if np.isfinite(s["energy"])]
    run.task.fit_statistics(good)
    loader = run.datamodule.loader("all")
    with pytest.raises(NonFiniteError, match=rf"non-finite target 'energy'.*sample 3 of {dataset}"):
        _trainer().validate(run.task, dataloaders=loader, verbose=False)


def test_a_non_finite_gradient_stops_before_the_weights_change(tmp_path: Path) -> None:
    import torch

    from matsciml.errors import NonFiniteError

    dataset = _write_variant(tmp_path / "good.lmdb", {})
    run = _built_run(dataset, tmp_path)
    run.task.fit_statistics(run.datamodule.samples("train"))
    parameter = next(p for p in run.task.backbone.parameters() if p.requires_grad)
    parameter.register_hook(lambda gradient: gradient * float("nan"))
    before = {name: value.clone() for name, value in run.task.state_dict().items()}
    with pytest.raises(NonFiniteError, match=r"non-finite gradient .* from sample \d+ of .*good\.lmdb"):
        _trainer().fit(run.task, datamodule=run.datamodule)
    after = run.task.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.parametrize("skip", [False, True])
def test_a_flipped_bit_stops_training_or_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   skip: bool) -> None:
    """Damage the outside review trained on unnoticed: one flipped bit of a stored energy."""
    dataset = _write_variant(tmp_path / "flipped.lmdb", {})
    from matsciml.data.dataset import LMDBDataset

    energy = float(LMDBDataset(dataset)[12]["energy"])
    data = bytearray(dataset.read_bytes())
    needle = np.float64(energy).tobytes()
    assert data.count(needle) == 1
    data[data.find(needle)] ^= 1  # the lowest mantissa bit: a plausible, finite, wrong energy
    dataset.write_bytes(bytes(data))
    code, out, err, run_dir = _train(dataset, tmp_path, capsys, *(["data.skip_invalid=true"] if skip else []))
    if not skip:
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"sample 12 of {dataset}: checksum mismatch" in err
        return
    assert code == 0, err  # TINY's split has no test part: every sample is read in training
    skipped = json.loads((run_dir / "metrics.json").read_text())["skipped_invalid"]
    assert skipped["count"] == 1 and "checksum mismatch" in skipped["samples"][0]["reason"]
