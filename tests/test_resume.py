"""Resume after a crash: a run killed with SIGKILL, mid-epoch or while saving, ends where the whole run ends.

Each run is a real ``matsciml train`` process (GALA's small preset on the
shipped IS2RE devset: no DGL, both test environments). A kill is made
deterministic by a callback added to the process before it trains: it sends
SIGKILL to its own process at a chosen batch, or while a checkpoint file is
half written.
"""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from matsciml.checkpoint import read_checkpoint
from matsciml.training.resume import AtomicCheckpointIO, find_resume_point

RUN = ["model.name=gala", "model.preset=small", "representation.cutoff_radius=3.0",
       "representation.max_neighbors=16", "dataset.name=slab-emt-is2re", "task.name=is2re",
       "dataset.split=[0.3,0.1,0.6]", "data.batch_size=4", "trainer.max_epochs=4", "trainer.accelerator=cpu",
       "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "early_stopping=null"]

# Runs `matsciml train` in this process after adding a callback that kills it; argv[1] says when.
KILLER = textwrap.dedent("""
    import io, os, signal, sys
    import torch
    from pytorch_lightning.callbacks import Callback
    import matsciml.training.run as run_module
    from matsciml.cli import main

    when, arguments = sys.argv[1], sys.argv[2:]

    class KillMidEpoch(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 2 and batch_idx == 3:
                os.kill(os.getpid(), signal.SIGKILL)

    original = run_module.training_callbacks
    if when == "mid-epoch":
        run_module.training_callbacks = lambda config: [*original(config), KillMidEpoch()]
    else:  # while last.ckpt of the second epoch is being written: half its bytes, then the kill
        real_save = torch.save

        def save(obj, target, *args, **kwargs):
            name = getattr(target, "name", "")
            if isinstance(obj, dict) and obj.get("epoch") == 1 and ".last.ckpt.partial-" in str(name):
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                target.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                target.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, target, *args, **kwargs)

        torch.save = save
    sys.exit(main(["train", *arguments]))
""")


def _matsciml(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matsciml", *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


def _killed(tmp_path: Path, when: str, name: str) -> Path:
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    done = subprocess.run([sys.executable, str(script), when, *RUN, f"run.dir={tmp_path}",
                           f"run.name={name}"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    run_dir = tmp_path / name
    assert not (run_dir / "metrics.json").exists()  # the run did not end: it was killed
    return run_dir


def _metrics(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["status"] == "completed"
    return summary


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run every resumed one must reproduce."""
    where = tmp_path_factory.mktemp("whole")
    done = _matsciml("train", *RUN, f"run.dir={where}", "run.name=whole", cwd=where)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"summary": _metrics(where / "whole"), "state": read_checkpoint(where / "whole/checkpoints/last.ckpt")}


def _same_as_whole(run_dir: Path, whole: dict) -> None:
    summary = _metrics(run_dir)
    assert summary["epochs"] == whole["summary"]["epochs"]
    for key, value in whole["summary"]["metrics"].items():
        assert summary["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    resumed = read_checkpoint(run_dir / "checkpoints/last.ckpt")["state_dict"]
    for key, value in whole["state"]["state_dict"].items():
        difference = (resumed[key].double() - value.double()).abs().max().item() if value.numel() else 0.0
        assert difference <= 1e-6 * (1 + value.double().abs().max().item()), key


def test_a_run_killed_mid_epoch_resumes_to_the_same_end(tmp_path: Path, whole_run: dict) -> None:
    run_dir = _killed(tmp_path, "mid-epoch", "killed")
    assert read_checkpoint(run_dir / "checkpoints/last.ckpt")["epoch"] == 1  # the last epoch that ended

    done = _matsciml("train", "--resume", str(run_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stderr and "from checkpoints/last.ckpt (written after epoch 2, step" in done.stderr
    _same_as_whole(run_dir, whole_run)
    # the log continues: each epoch's validation row once, in order, the cut epoch logged once
    with (run_dir / "logs/metrics.csv").open() as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle) if row.get("val/loss")]
    assert epochs == [0, 1, 2, 3]


def test_a_kill_while_saving_leaves_the_previous_checkpoint_whole(tmp_path: Path, whole_run: dict) -> None:
    run_dir = _killed(tmp_path, "while-saving", "cut")
    checkpoints = run_dir / "checkpoints"
    assert read_checkpoint(checkpoints / "last.ckpt")["epoch"] == 0  # the save of epoch 1 never replaced it
    assert list(checkpoints.glob(".last.ckpt.partial-*"))  # the half-written file, beside it

    point = find_resume_point(run_dir)  # the newest intact one: best-epoch=1 when that epoch improved, else last
    assert point.epoch in (0, 1) and point.path.name in ("last.ckpt", "best-epoch=1.ckpt")
    done = _matsciml("train", "--resume", str(run_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    taken = [line for line in done.stderr.splitlines() if "resuming" in line]
    assert taken and f"from checkpoints/{point.path.name} (written after epoch {point.epoch + 1}" in taken[0]
    assert not list(checkpoints.glob(".*.partial-*"))
    _same_as_whole(run_dir, whole_run)


def test_resume_passes_over_a_damaged_checkpoint_and_names_it(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("model: {}\n")
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {}, "epoch": 3, "global_step": 40}, checkpoints / "best-epoch=3.ckpt")
    io.save_checkpoint({"state_dict": {}, "epoch": 4, "global_step": 50}, checkpoints / "last.ckpt")
    data = (checkpoints / "last.ckpt").read_bytes()
    (checkpoints / "last.ckpt").write_bytes(data[: len(data) // 2])  # damage from outside matsciml
    point = find_resume_point(tmp_path / "run")
    assert point.path.name == "best-epoch=3.ckpt" and point.global_step == 40
    assert [path.name for path, _ in point.passed_over] == ["last.ckpt"]


def test_resume_reads_only_last_ckpt_unless_another_was_written_after_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with a checkpoint every epoch is not read whole to resume it; a newer checkpoint still wins."""
    import os

    import matsciml.training.resume as resume_module

    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("model: {}\n")
    io = AtomicCheckpointIO()
    for epoch in range(5):
        io.save_checkpoint({"state_dict": {}, "epoch": epoch, "global_step": 10 * (epoch + 1)},
                           checkpoints / f"epoch-{epoch}.ckpt")
    io.save_checkpoint({"state_dict": {}, "epoch": 4, "global_step": 50}, checkpoints / "last.ckpt")
    written = (checkpoints / "last.ckpt").stat().st_mtime_ns
    for number, path in enumerate(sorted(checkpoints.glob("epoch-*.ckpt"))):
        os.utime(path, ns=(written - 1000 * (5 - number), written - 1000 * (5 - number)))
    read: list[str] = []
    real = resume_module.read_checkpoint
    monkeypatch.setattr(resume_module, "read_checkpoint", lambda path: read.append(Path(path).name) or real(path))
    point = find_resume_point(tmp_path / "run")
    assert point.path.name == "last.ckpt" and point.global_step == 50 and read == ["last.ckpt"]

    # killed after the best checkpoint of epoch 5 was saved and before last.ckpt was: that one is newer
    io.save_checkpoint({"state_dict": {}, "epoch": 5, "global_step": 60}, checkpoints / "best-epoch=5.ckpt")
    os.utime(checkpoints / "best-epoch=5.ckpt", ns=(written + 1000, written + 1000))
    read.clear()
    point = find_resume_point(tmp_path / "run")
    assert point.path.name == "best-epoch=5.ckpt" and point.global_step == 60
    assert read == ["last.ckpt", "best-epoch=5.ckpt"]


@pytest.mark.parametrize("arguments, words", [
    (["--resume", "{tmp}/nowhere"], "not a run directory"),
    (["--resume", "{tmp}/run", "optimizer.lr=0.1"], "optimizer.lr cannot change in a resumed run"),
    (["--resume", "{tmp}/run", "--model", "gala"], "remove --model"),
    (["--resume", "{tmp}/run"], "has no checkpoint yet"),
])
def test_resume_errors_are_one_line(tmp_path: Path, arguments: list[str], words: str) -> None:
    from matsciml.training.config import build_config, dump_config

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(dump_config(build_config(overrides=RUN)))
    done = _matsciml("train", *(a.format(tmp=tmp_path) for a in arguments), cwd=tmp_path)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], done.stderr
