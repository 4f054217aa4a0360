"""Distributed data parallel: 2 CPU processes (gloo) against one process at the same global batch size.

The sharding itself (:class:`~matsciml.training.datamodule.RankBatches`) is
checked for any world size without processes; one real run with
``trainer.strategy=ddp trainer.devices=2`` (Lightning starts the second
process) is compared with a single-process run whose batch is the two
ranks' batches together.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import matsciml.training.datamodule as datamodule_module
from matsciml.training.datamodule import EpochOrder, RankBatches


def _rank_batches(num_samples: int, batch_size: int, world: int, epoch: int, monkeypatch: pytest.MonkeyPatch,
                  shuffle: bool = True) -> list[list[list[int]]]:
    """Each rank's batches for one epoch, the rank taken from a patched process layout."""
    batches = []
    for rank in range(world):
        monkeypatch.setattr(datamodule_module, "process_rank", lambda rank=rank: (rank, world))
        order = EpochOrder(num_samples, shuffle=shuffle, seed=7)
        order.set_epoch(epoch)
        sampler = RankBatches(order, batch_size)
        batches.append(list(sampler))
        assert len(sampler) == len(batches[-1])
    return batches


@pytest.mark.parametrize("num_samples, batch_size, world", [(20, 3, 2), (23, 4, 3), (7, 2, 4), (16, 4, 2)])
def test_each_sample_is_read_once_per_epoch_by_one_rank(num_samples: int, batch_size: int, world: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    per_rank = _rank_batches(num_samples, batch_size, world, epoch=3, monkeypatch=monkeypatch)
    assert len({len(batches) for batches in per_rank}) == 1  # every rank takes the same number of steps
    seen = [index for batches in per_rank for batch in batches for index in batch]
    assert len(seen) == len(set(seen))  # nobody reads a sample twice
    left_out = num_samples - len(seen)
    assert 0 <= left_out < world  # only a last global batch smaller than the number of ranks is left out
    assert all(batch for batches in per_rank for batch in batches)
    # step k of all ranks together is the single-process batch k of size batch_size x world
    single = _rank_batches(num_samples, batch_size * world, 1, epoch=3, monkeypatch=monkeypatch)[0]
    for step, together in enumerate(zip(*per_rank)):
        assert [index for batch in together for index in batch] == single[step][:sum(map(len, together))]


def test_the_order_depends_on_seed_and_epoch_only(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _rank_batches(30, 4, 2, epoch=5, monkeypatch=monkeypatch)
    again = _rank_batches(30, 4, 2, epoch=5, monkeypatch=monkeypatch)
    other = _rank_batches(30, 4, 2, epoch=6, monkeypatch=monkeypatch)
    assert first == again and first != other
    unshuffled = _rank_batches(10, 5, 1, epoch=2, monkeypatch=monkeypatch, shuffle=False)
    assert unshuffled == [[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]]


RUN = ["model.name=gala", "model.preset=small", "representation.cutoff_radius=3.0",
       "representation.max_neighbors=16", "dataset.name=slab-emt-is2re", "task.name=is2re",
       "dataset.split=[0.3,0.1,0.6]", "trainer.max_epochs=3", "trainer.accelerator=cpu",
       "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "early_stopping=null",
       "optimizer.lr=0.001"]


def _train(where: Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matsciml", "train", *RUN, f"run.dir={where}", f"run.name={name}",
                           *overrides], cwd=where, capture_output=True, text=True, timeout=900)


def _validation_losses(run_dir: Path) -> list[float]:
    with (run_dir / "logs" / "metrics.csv").open() as handle:
        return [float(row["val/loss"]) for row in csv.DictReader(handle) if row.get("val/loss")]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_at_the_same_global_batch(tmp_path: Path) -> None:
    single = _train(tmp_path, "single", "data.batch_size=4")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = _train(tmp_path, "ddp", "data.batch_size=2", "trainer.strategy=ddp", "trainer.devices=2")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "distributed_backend=gloo" in ddp.stderr and "All distributed processes registered" in ddp.stderr

    # one run directory, written by rank 0 alone: no second directory, one log row per epoch
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_dir()) == ["ddp", "single"]
    one, two = json.loads((tmp_path / "single/metrics.json").read_text()), \
        json.loads((tmp_path / "ddp/metrics.json").read_text())
    assert one["status"] == two["status"] == "completed" and one["epochs"] == two["epochs"]
    # the same global batches in the same order: the runs differ only by rounding (gradients averaged over
    # ranks instead of summed in one process) and the weight of each rank's last, smaller batch
    losses_one, losses_two = _validation_losses(tmp_path / "single"), _validation_losses(tmp_path / "ddp")
    assert len(losses_one) == len(losses_two) == 3
    assert losses_two == pytest.approx(losses_one, rel=2e-3)
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, rel=2e-3, abs=1e-6), key
    # the baselines are fitted once from the same training split: identical, not merely close
    assert two["baselines"] == one["baselines"]
    # the printed report comes from rank 0 only
    assert ddp.stdout.count("run directory:") == 1
