"""Surviving a crash: atomic checkpoint writes, random states in checkpoints, resuming a run.

A run killed at any moment (SIGKILL, a node lost, out of memory) is
continued with ``matsciml train --resume RUN_DIR`` from its newest intact
checkpoint and reaches the metrics the uninterrupted run would have
reached. Three things make that hold:

* checkpoints are written to a temporary file beside the target, synced,
  then renamed over it (:class:`AtomicCheckpointIO`): a kill during a save
  leaves the previous ``last.ckpt`` whole, never a truncated one;
* the random states of Python, numpy and torch (CPU and CUDA) travel in each
  checkpoint and are restored on resume (:class:`RandomStateCallback`);
  data order depends only on ``(seed, epoch)`` (``EpochOrder``) and loaders
  draw from their own generators, so nothing else moves the streams;
* Lightning restores weights, optimiser, schedulers, epoch and step, callback
  states (best checkpoints, early stopping, weight averages) and the data
  module's split.

A checkpoint is written at the end of each epoch, so an epoch cut short is
run again from its start. Checkpoints are read with the safe reader
(:func:`matsciml.checkpoint.read_checkpoint`), resume included.
"""
from __future__ import annotations

import csv
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from matsciml.checkpoint import CheckpointError, read_checkpoint
from matsciml.data.storage import fsync_directory, remove_stale_partials
from matsciml.errors import MatscimlError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that never leaves a truncated checkpoint, and reads without running code.

    A save goes to ``.NAME.partial-PID`` in the target's directory (the
    temporary name of every atomic writer of matsciml), is
    flushed and synced to disk, then renamed over ``NAME`` (``os.replace``
    is atomic on one file system), and the directory entry is synced. A
    load goes through :func:`~matsciml.checkpoint.read_checkpoint`, which
    rebuilds tensors and plain data only.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike[str],
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options; got {storage_options!r}")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            with temporary.open("wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_directory(target.parent)

    def load_checkpoint(self, path: str | os.PathLike[str], map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)


class LatestCheckpoint(ModelCheckpoint):
    """``last.ckpt``, replaced at the end of every epoch whatever the validation loss.

    Lightning 2.6's ``save_last`` writes ``last.ckpt`` only when a best
    checkpoint was saved in the same step, so a run killed after a few
    epochs without improvement would resume from its best epoch, not its
    latest. A checkpoint callback of its own class also has a state of its
    own in the checkpoint (Lightning keys callback states by class).
    """

    def __init__(self, dirpath: str | os.PathLike[str]) -> None:
        super().__init__(dirpath=str(dirpath), filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                         enable_version_counter=False, auto_insert_metric_name=False)


class RandomStateCallback(Callback):
    """Keeps the random states of Python, numpy and torch in every checkpoint, and restores them.

    Saved as plain data and tensors (numpy's key as a list of integers), so
    the safe checkpoint reader loads them.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, key, position, has_gauss, cached = np.random.get_state()
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": {"kind": str(kind), "key": [int(k) for k in key], "position": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        saved = state_dict["numpy"]
        np.random.set_state((saved["kind"], np.asarray(saved["key"], dtype=np.uint32), saved["position"],
                             saved["has_gauss"], saved["cached_gaussian"]))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            states = state_dict["cuda"]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)


# ---------------------------------------------------------------- choosing the checkpoint to resume from
@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues from, and where in training it was written."""

    path: Path
    epoch: int
    global_step: int
    #: checkpoints passed over (damaged, unreadable), each with the reason
    passed_over: tuple[tuple[Path, str], ...] = ()
    #: the checkpoint's matsciml run record (config, split, dataset), read once here
    record: dict[str, Any] = field(default_factory=dict)

    def describe(self, run_dir: Path) -> str:
        try:
            shown = self.path.relative_to(run_dir)
        except ValueError:
            shown = self.path
        return f"{shown} (written after epoch {self.epoch + 1}, step {self.global_step})"


def run_config_path(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/config.yaml``, the config a resumed run continues with.

    Raises:
        MatscimlError: the directory is not a run (no ``config.yaml``).
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise MatscimlError(f"--resume {run_dir}: not a run directory (it has no config.yaml); give a directory "
                            f"written by `matsciml train`, such as runs/NAME")
    return path


def find_resume_point(run_dir: Path) -> ResumePoint:
    """The newest intact checkpoint of a run: ``last.ckpt`` unless it is damaged, else the furthest other one.

    Only ``last.ckpt`` is read when it is intact and no other checkpoint was
    written after it; otherwise the others are read too, and the one of the
    highest global step wins.

    Raises:
        MatscimlError: the directory is not a run, or none of its checkpoints
            can be read (each named with its reason).
    """
    checkpoints = run_dir / "checkpoints"
    run_config_path(run_dir)
    candidates = sorted(checkpoints.glob("*.ckpt")) if checkpoints.is_dir() else []
    if not candidates:
        raise MatscimlError(f"--resume {run_dir}: the run has no checkpoint yet (nothing in {checkpoints}); it was "
                            f"stopped before its first epoch ended, so start it again without --resume")
    last = checkpoints / "last.ckpt"
    if last in candidates:
        # last.ckpt is written at the end of every epoch, after that epoch's other checkpoints: read it first,
        # and the others only when it is damaged or when one was written after it (a kill between the two
        # saves of an epoch), so a run with a checkpoint every epoch is not read whole to resume it
        candidates = [last] + [path for path in candidates if path != last]
    readable: list[tuple[int, int, int, Path]] = []
    records: dict[Path, dict[str, Any]] = {}
    passed_over: list[tuple[Path, str]] = []
    last_written: int | None = None
    for candidate in candidates:
        if last_written is not None and _modified(candidate) <= last_written:
            continue  # written before the intact last.ckpt: not newer than it
        try:
            checkpoint = read_checkpoint(candidate)
        except CheckpointError as exc:
            passed_over.append((candidate, str(exc)))
            continue
        if candidate == last:
            last_written = _modified(last)
        step = int(checkpoint.get("global_step", 0))
        epoch = int(checkpoint.get("epoch", 0))
        readable.append((step, 1 if candidate.name == "last.ckpt" else 0, epoch, candidate))
        record = checkpoint.get("matsciml")
        records[candidate] = record if isinstance(record, dict) else {}
    if not readable:
        reasons = "; ".join(reason for _, reason in passed_over[:3])
        raise MatscimlError(f"--resume {run_dir}: none of its {len(candidates)} checkpoints can be read ({reasons}); "
                            f"the run cannot be continued, start it again without --resume")
    step, _, epoch, path = max(readable)
    return ResumePoint(path=path, epoch=epoch, global_step=step, passed_over=tuple(passed_over),
                       record=records[path])


def _modified(path: Path) -> int:
    """When ``path`` was last written, in ns (an atomic save sets it when the file is put in place)."""
    return path.stat().st_mtime_ns


# ---------------------------------------------------------------- the run's log, continued
def keep_logged_rows(metrics_file: Path, up_to_step: int) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a run's ``metrics.csv`` logged at or before ``up_to_step``.

    Rows after the checkpoint belong to the epoch that was cut short; the
    resumed run logs them again.
    """
    if not metrics_file.is_file():
        return [], []
    with metrics_file.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            try:
                step = int(float(row.get("step") or 0))
            except ValueError:
                continue
            if step <= up_to_step:
                rows.append(row)
    return header, rows


def restore_csv_log(logger: Any, header: list[str], rows: list[Mapping[str, str]]) -> None:
    """Write the kept rows back under a fresh CSV logger so its log continues them.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts;
    this runs after that, and tells the writer the columns already in the
    file so its later appends keep them.
    """
    if not header:
        return
    experiment = logger.experiment  # creating the writer removes the old file
    path = Path(experiment.metrics_file_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = sorted(set(header))  # the writer's own column order, which its appends follow
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    experiment.metrics_keys = columns


__all__ = ["AtomicCheckpointIO", "LatestCheckpoint", "RandomStateCallback", "ResumePoint", "find_resume_point",
           "keep_logged_rows", "restore_csv_log", "run_config_path"]
