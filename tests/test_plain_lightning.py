"""matsciml in plain PyTorch Lightning: data module, backbone, task, ``pl.Trainer``, fit (paper, Appendix B).

The task fits its training statistics itself when fitting starts (from the
data module's seeded, capped training sample); the data module's split is
its state, which Lightning writes into checkpoints and restores on resume.
The toy plugin (installed, no DGL) keeps these tests fast and runnable on
current torch; the script in examples/ runs with E(n)-GNN where DGL is.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from installed_plugins import environment

from matsciml.data.splits import Split
from matsciml.errors import MatscimlError
from matsciml.tasks import S2EFTask
from matsciml.training.datamodule import MatSciDataModule

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "plain_lightning_s2ef.py"


def _datamodule(registry: Any, seed: int = 0, **options: Any) -> MatSciDataModule:
    representation = registry.representation("toy-points").build()
    return MatSciDataModule("toy-dataset", representation, batch_size=8, split=(0.7, 0.3, 0.0), seed=seed,
                            dataset_options={"num_samples": 64, "seed": 1}, registry=registry, **options)


def _task(registry: Any) -> S2EFTask:
    backbone = registry.model("toy-mlp").build(hidden_dim=8, num_layers=1)
    return S2EFTask(backbone, head_hidden_dim=16, optimizer={"name": "adamw", "lr": 0.01})


def _trainer(max_epochs: int, **options: Any) -> pl.Trainer:
    settings = dict(max_epochs=max_epochs, accelerator="cpu", inference_mode=False, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return pl.Trainer(**{**settings, **options})


def test_fit_fits_the_statistics_and_learns(toy_registry) -> None:
    """trainer.fit(task, datamodule=dm) with nothing else: statistics from the seeded, capped training sample
    (the same as fitting them by hand), then training that beats the zero-force baseline."""
    pl.seed_everything(0, verbose=False)
    datamodule = _datamodule(toy_registry, statistics_samples=20)
    task = _task(toy_registry)
    assert not bool(task.statistics_fitted)
    _trainer(3).fit(task, datamodule=datamodule)
    assert bool(task.statistics_fitted)
    by_hand = _task(toy_registry)
    by_hand.fit_statistics_from(datamodule)
    for name in ("references", "shift", "scale"):
        assert torch.equal(getattr(task.energy_head, name), getattr(by_hand.energy_head, name)), name
    (metrics,) = _trainer(1).validate(task, datamodule=datamodule, verbose=False)
    baseline = task.baseline_from(datamodule)["mean"]
    assert metrics["val/force_mae"] < 0.85 * baseline["force_mae"], (metrics, baseline)
    assert metrics["val/energy_mae"] < baseline["energy_mae"], (metrics, baseline)


def test_the_split_is_data_module_state_that_checkpoints_keep(toy_registry, tmp_path: Path) -> None:
    """A Lightning checkpoint holds the data module's split; resuming with a data module seeded otherwise
    restores that split, and the statistics come from the checkpoint, not from a second fit."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from matsciml.checkpoint import read_checkpoint

    pl.seed_everything(0, verbose=False)
    datamodule = _datamodule(toy_registry, seed=0)
    task = _task(toy_registry)
    checkpoints = ModelCheckpoint(dirpath=str(tmp_path), save_last=True)
    _trainer(1, enable_checkpointing=True, callbacks=[checkpoints]).fit(task, datamodule=datamodule)
    saved = read_checkpoint(checkpoints.last_model_path)
    assert Split.from_json(saved["MatSciDataModule"]["split"]) == datamodule.split

    other = _datamodule(toy_registry, seed=7)
    other.setup()
    assert other.split != datamodule.split
    resumed = _task(toy_registry)
    _trainer(2).fit(resumed, datamodule=other, ckpt_path=checkpoints.last_model_path)
    assert other.split == datamodule.split
    assert torch.equal(resumed.energy_head.references, task.energy_head.references)

    fresh = _datamodule(toy_registry, seed=7)
    fresh.load_state_dict(datamodule.state_dict())  # before setup, as well as after
    fresh.setup()
    assert fresh.split == datamodule.split


def test_a_recorded_split_of_another_dataset_is_refused(toy_registry) -> None:
    """Loading state whose split does not fit the dataset names both sizes."""
    datamodule = _datamodule(toy_registry)
    datamodule.setup()
    state = {"split": Split(num_samples=10, seed=0, fractions=(0.8, 0.2, 0.0),
                            indices={"train": list(range(8)), "val": [8, 9], "test": []}).to_json()}
    with pytest.raises(MatscimlError, match="the recorded split is for 10 samples but dataset 'toy-dataset' has 64"):
        datamodule.load_state_dict(state)


def test_what_plain_lightning_users_get_wrong_is_named(toy_registry) -> None:
    """Validating an unfitted task, fitting with bare dataloaders, or an inference-mode trainer for S2EF:
    each is one error that says what to do."""
    datamodule = _datamodule(toy_registry)
    task = _task(toy_registry)
    with pytest.raises(MatscimlError, match="training statistics were never fitted; fit the task with "
                                            r"trainer.fit\(task, datamodule=...\)"):
        _trainer(1).validate(task, datamodule=datamodule, verbose=False)
    datamodule.setup()
    with pytest.raises(MatscimlError, match="trainer.fit got no matsciml data module to fit them from"):
        _trainer(1).fit(task, train_dataloaders=datamodule.train_dataloader())
    task.fit_statistics_from(datamodule)
    with pytest.raises(MatscimlError, match=r"create the trainer with pl.Trainer\(inference_mode=False\)"):
        _trainer(1, inference_mode=True).validate(task, datamodule=datamodule, verbose=False)


def _example(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE), *arguments], capture_output=True, text=True, env=env,
                          timeout=600, cwd=REPO_ROOT)


def _printed_metrics(stdout: str) -> dict[str, tuple[float, float, float]]:
    """``{metric: (model, mean baseline, composition baseline)}`` from the example's table."""
    rows = [line.split() for line in stdout.splitlines()[2:] if line.strip()]
    return {name: (float(model), float(mean), float(composition)) for name, model, mean, composition in rows}


@pytest.mark.dgl
def test_the_example_script_runs_with_egnn() -> None:
    """examples/plain_lightning_s2ef.py, tiny: trains E(n)-GNN on the shipped devset, prints metrics and baseline."""
    done = _example(environment(None), "--epochs", "1", "--hidden-dim", "8", "--num-layers", "1",
                    "--max-batches", "4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("egnn on slab-emt-s2ef, 1 epochs: validation metrics beside the baselines")
    printed = _printed_metrics(done.stdout)
    assert set(printed) >= {"energy_mae", "energy_per_atom_mae", "force_mae", "force_cosine", "efwt"}
    assert printed["energy_mae"][2] < printed["energy_mae"][1]  # per-element references alone beat the mean
    assert printed["force_cosine"][1] == printed["force_cosine"][2] == 0.0  # both baselines: zero forces


def test_the_example_script_runs_any_installed_backbone(toy_site: Path) -> None:
    """The same script with the toy plugin's backbone (no DGL): the registry is the only link."""
    done = _example(environment(toy_site), "--model", "toy-mlp", "--epochs", "1", "--hidden-dim", "8",
                    "--max-batches", "4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("toy-mlp on slab-emt-s2ef, 1 epochs")
    assert set(_printed_metrics(done.stdout)) >= {"energy_mae", "energy_per_atom_mae", "force_mae", "force_cosine"}
