"""Checkpoints are opened without running code, and bad files get one line.

The reader (:func:`matsciml.checkpoint.read_checkpoint`) is the only way
matsciml opens a checkpoint. These tests build the attacks found by the
outside review: a pickle that runs a shell command, the same payload added
to a real checkpoint, garbage, truncated and foreign files.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from matsciml.checkpoint import CheckpointError, read_checkpoint


class _ShellPayload:
    """Unpickling this runs ``touch MARKER`` (what an attacker's checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - the pickle protocol
        return (os.system, (f"touch {self.marker}",))


def _lightning_checkpoint(folder: Path) -> Path:
    """A real checkpoint written by Lightning's ModelCheckpoint (with optimiser, scheduler,
    early stopping and a matsciml-style run record), from a tiny module trained one epoch."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)
            self.register_buffer("statistics_fitted", torch.tensor(True))

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            self.log("val/loss", self.layer(batch[0]).pow(2).mean())

        def configure_optimizers(self):  # noqa: ANN201
            optimizer = torch.optim.AdamW(self.parameters(), lr=1e-3)
            return {"optimizer": optimizer,
                    "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2)}

        def on_save_checkpoint(self, checkpoint):  # noqa: ANN001, ANN201
            checkpoint["matsciml"] = {"config": {"model": {"name": "x", "hidden_dim": 8}, "dataset": {"split": [0.8, 0.1, 0.1]}},
                                      "split": {"seed": 0, "train": [0, 1], "val": [2], "test": []},
                                      "matsciml_version": "0"}

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), batch_size=4)
    checkpoint = ModelCheckpoint(dirpath=str(folder), filename="best", monitor="val/loss", save_last=True)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[checkpoint, EarlyStopping(monitor="val/loss")], accelerator="cpu")
    trainer.fit(Tiny(), train_dataloaders=data, val_dataloaders=data)
    return folder / "last.ckpt"


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _lightning_checkpoint(tmp_path_factory.mktemp("lightning"))


def test_a_real_lightning_checkpoint_reads_with_tensors_and_plain_data_only(real_checkpoint: Path) -> None:
    """The restricted reader opens everything Lightning and matsciml put in a checkpoint."""
    checkpoint = read_checkpoint(real_checkpoint)
    assert {"state_dict", "optimizer_states", "lr_schedulers", "callbacks", "loops", "matsciml"} <= set(checkpoint)
    assert checkpoint["matsciml"]["split"]["train"] == [0, 1]
    assert isinstance(checkpoint["state_dict"]["layer.weight"], torch.Tensor)


def test_a_pickle_that_runs_a_command_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _ShellPayload(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt holds Python objects other than tensors.*system"):
        read_checkpoint(evil)
    assert not marker.exists()


def test_a_real_checkpoint_with_a_payload_added_is_refused(real_checkpoint: Path, tmp_path: Path) -> None:
    """The attack that went unseen: a genuine checkpoint that also runs a command."""
    marker = tmp_path / "PWNED"
    checkpoint = torch.load(real_checkpoint, weights_only=True)
    checkpoint["matsciml"]["note"] = _ShellPayload(marker)
    evil = tmp_path / "doctored.ckpt"
    torch.save(checkpoint, evil)
    with pytest.raises(CheckpointError, match="refuses it"):
        read_checkpoint(evil)
    assert not marker.exists()


def test_the_legacy_torch_format_with_a_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": _ShellPayload(marker)}, evil, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="refuses it"):
        read_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize("content, expected", [
    (b"", r"is empty \(0 bytes\)"),
    (b"hello, this is a text file\n" * 4, r"is not a PyTorch checkpoint \(it starts with b'hell'"),
    (b"PK\x03\x04" + b"\0" * 64, r"is truncated or damaged"),
])
def test_garbage_files_are_named_with_what_they_are_not(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as caught:
        read_checkpoint(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_truncated_checkpoint_is_named(real_checkpoint: Path, tmp_path: Path) -> None:
    data = real_checkpoint.read_bytes()
    for keep in (len(data) // 2, len(data) - 10):
        cut = tmp_path / f"cut-{keep}.ckpt"
        cut.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match=r"truncated or damaged|damaged or truncated"):
            read_checkpoint(cut)


def test_foreign_torch_files_are_not_checkpoints(tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2)}, weights)
    with pytest.raises(CheckpointError, match=r"not a Lightning checkpoint \(it has no state_dict; keys: layer.weight\)"):
        read_checkpoint(weights)
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    with pytest.raises(CheckpointError, match="holds a list, not a Lightning checkpoint"):
        read_checkpoint(listing)


def test_missing_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nothing.ckpt")
    with pytest.raises(CheckpointError, match="is not a file"):
        read_checkpoint(tmp_path)


def test_a_lightning_checkpoint_without_a_run_record_is_not_a_matsciml_checkpoint(real_checkpoint: Path,
                                                                                  tmp_path: Path) -> None:
    from matsciml.errors import MatscimlError
    from matsciml.training.run import load_checkpoint

    checkpoint = torch.load(real_checkpoint, weights_only=True)
    del checkpoint["matsciml"]
    plain = tmp_path / "plain-lightning.ckpt"
    torch.save(checkpoint, plain)
    with pytest.raises(MatscimlError, match="Lightning checkpoint but not a matsciml one"):
        load_checkpoint(plain)


def test_evaluate_refuses_a_malicious_checkpoint_in_one_line(tmp_path: Path) -> None:
    """Through the CLI, in a fresh interpreter: exit 1, one line, and the command never ran."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "matsciml": {"config": {}, "split": {}}, "x": _ShellPayload(marker)}, evil)
    done = subprocess.run([sys.executable, "-m", "matsciml", "evaluate", str(evil)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("matsciml: error: ") and "refuses it" in lines[0], done.stderr
    assert not marker.exists()


@pytest.mark.dgl
def test_evaluate_refuses_a_real_matsciml_checkpoint_with_a_payload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Train a real run, add a payload to its last checkpoint: evaluate refuses it in one line and runs
    nothing, while the untouched checkpoint still evaluates."""
    from matsciml.cli import main
    from matsciml.training.config import build_config
    from matsciml.training.run import train

    result = train(build_config(overrides=["model.name=egnn", "trainer.max_epochs=1", "model.hidden_dim=8",
                                           "model.num_layers=1", f"run.dir={tmp_path / 'runs'}", "run.name=r",
                                           "trainer.enable_progress_bar=false", "dataset.split=[0.2,0.1,0.7]"]))
    marker = tmp_path / "PWNED"
    checkpoint = torch.load(result.last_checkpoint, weights_only=True)
    checkpoint["callbacks"]["payload"] = _ShellPayload(marker)
    doctored = tmp_path / "doctored.ckpt"
    torch.save(checkpoint, doctored)
    capsys.readouterr()
    assert main(["evaluate", str(doctored)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("matsciml: error: ") and "refuses it" in err[0], err
    assert not marker.exists()
    assert main(["evaluate", str(result.last_checkpoint), "--json"]) == 0
