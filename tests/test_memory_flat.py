"""Memory flat in dataset size: statistics read a capped, seeded sample; baselines stream; nothing holds a split.

Every sample read goes through :class:`matsciml.training.datamodule.CheckedReader`.
The tests wrap its ``read`` so that each sample is a fresh copy (as an LMDB
read is) whose positions array is watched through a weak reference: the
number of watched arrays alive at each read is the number of samples held
in memory at that moment (CPython frees an array as its last reference
goes). A whole ``train()`` on a dataset ten times the statistics cap, with
a validation split five times it, never holds more than a few batches'
worth, and the statistics read at most the cap.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matsciml.training.datamodule import CheckedReader, MatSciDataModule, ReadFailure

CAP = 16
BATCH_SIZE = 4
NUM_SAMPLES = 160  # 80 training and 80 validation structures: five times the cap each


class SampleWatch:
    """Counts reads and the samples alive at each read (weak references to fresh copies)."""

    def __init__(self) -> None:
        self.reads: list[int] = []
        self.alive = 0
        self.peak = 0

    def _released(self) -> None:
        self.alive -= 1

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = CheckedReader.read

        def read(reader: CheckedReader, index: int) -> dict[str, Any] | ReadFailure:
            sample = original(reader, index)
            if isinstance(sample, ReadFailure):
                return sample
            fresh = {key: np.array(value, copy=True) if isinstance(value, np.ndarray) else value
                     for key, value in sample.items()}
            self.reads.append(index)
            self.alive += 1
            weakref.finalize(fresh["pos"], self._released)
            self.peak = max(self.peak, self.alive)
            return fresh

        monkeypatch.setattr(CheckedReader, "read", read)


def _datamodule(registry: Any) -> MatSciDataModule:
    return MatSciDataModule("toy-dataset", registry.representation("toy-points").build(), batch_size=BATCH_SIZE,
                            split=(0.5, 0.5, 0.0), seed=3, statistics_samples=CAP, registry=registry,
                            dataset_options={"num_samples": NUM_SAMPLES, "seed": 1})


def test_statistics_read_a_capped_seeded_sample_and_baselines_stream(toy_registry, monkeypatch) -> None:
    """Fitting statistics reads CAP of the 80 training samples (the same ones each time); the baseline
    streams the 80 validation samples one by one."""
    from matsciml.tasks import S2EFTask

    watch = SampleWatch()
    watch.install(monkeypatch)
    datamodule = _datamodule(toy_registry)
    datamodule.setup()
    task = S2EFTask(toy_registry.model("toy-mlp").build(hidden_dim=8, num_layers=1))
    task.fit_statistics_from(datamodule)
    first = list(watch.reads)
    assert len(first) == CAP and set(first) <= set(datamodule.split["train"])
    assert watch.peak <= 2
    watch.reads.clear()
    baselines = task.baseline_from(datamodule, "val")
    assert sorted(watch.reads) == sorted(first + datamodule.split["val"])  # the same sample, then every val one
    assert watch.peak <= BATCH_SIZE + 1  # the baselines score a batch's worth at a time
    assert set(baselines) == {"mean", "composition"}
    assert all(np.isfinite(list(metrics.values())).all() for metrics in baselines.values())


def test_training_holds_a_few_batches_not_a_split(toy_registry, tmp_path: Path, monkeypatch) -> None:
    """A whole `train()` (statistics, fitting, validation, evaluation, baseline) on a dataset ten times the
    statistics cap never holds more than a few batches of samples at once."""
    from matsciml.training.config import build_config
    from matsciml.training.run import train

    watch = SampleWatch()
    watch.install(monkeypatch)
    statistics_reads = []
    original = MatSciDataModule.statistics_sample

    def counted(datamodule: MatSciDataModule) -> Iterator[dict[str, Any]]:
        for sample in original(datamodule):
            statistics_reads.append(1)
            yield sample

    monkeypatch.setattr(MatSciDataModule, "statistics_sample", counted)
    config = build_config(overrides=[
        "model.name=toy-mlp", "model.hidden_dim=8", "model.num_layers=1", "dataset.name=toy-dataset",
        f"dataset.options.num_samples={NUM_SAMPLES}", "dataset.options.seed=1", "dataset.split=[0.5,0.5,0.0]",
        f"data.statistics_samples={CAP}", f"data.batch_size={BATCH_SIZE}", "trainer.max_epochs=1",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        f"run.dir={tmp_path}", "run.name=flat"])
    result = train(config, toy_registry)
    assert result.metrics and result.baselines
    assert len(watch.reads) > NUM_SAMPLES  # every sample was read, the validation ones several times
    assert statistics_reads == [1] * (2 * CAP)  # statistics, then the baseline's training mean: CAP each
    assert watch.peak <= 3 * BATCH_SIZE, watch.peak  # far below the cap (16) and the validation split (80)
