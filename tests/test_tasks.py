"""The built-in tasks: specs in step with the classes, targets from declarations, property regression's readouts.

Regression reads whether a target is per atom or per structure from the
field registry, pools per-structure targets with the readout resolved per
target (sum: extensive, exactly; mean: intensive), and learns per-atom
targets (partial charges of the toy plugin's molecules) atom by atom. The
toy plugin (installed, no DGL) is the backbone, so these run on current
torch too.
"""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from installed_plugins import environment

from matsciml.errors import MatscimlError
from matsciml.registry import get_registry

_NOT_HYPERPARAMETERS = {"self", "backbone", "optimizer", "scheduler"}


@pytest.mark.parametrize("name", ["s2ef", "is2re", "regression"])
def test_task_spec_defaults_equal_constructor_defaults(name: str) -> None:
    """Every hyper-parameter a task class takes is declared, with the same default and a help line."""
    spec = get_registry().task(name)
    parameters = inspect.signature(spec.load_factory().__init__).parameters
    signature = {key: p.default for key, p in parameters.items() if key not in _NOT_HYPERPARAMETERS}
    declared = {key: tuple(value) if isinstance(value, list) else value for key, value in spec.defaults.items()}
    assert declared == signature
    assert set(spec.param_help) == set(signature)
    assert spec.distribution == "matsciml"


def test_required_targets_come_from_the_specs_declarations() -> None:
    """S2EF and IS2RE need fixed keys; regression needs the targets its own parameter names."""
    registry = get_registry()
    assert registry.task("s2ef").targets_for({}) == ["energy", "forces"]
    assert registry.task("is2re").targets_for({}) == ["relaxed_energy"]
    regression = registry.task("regression")
    assert regression.targets_param == "targets"
    assert regression.targets_for({"targets": ["charges", "band_gap"]}) == ["charges", "band_gap"]


# ------------------------------------------------------------------ readouts
def test_readouts_resolve_per_target() -> None:
    """Total energies default to sum, other per-structure targets to mean; one value or a mapping overrides;
    per-atom targets have no readout; regression needs targets."""
    spec = get_registry().task("regression")
    resolved = spec.resolve_params({"targets": ["energy", "band_gap", "charges"]})
    assert resolved["readout"] == {"energy": "sum", "band_gap": "mean"}
    assert spec.resolve_params({"targets": ["energy", "band_gap"], "readout": "mean"})["readout"] == {
        "energy": "mean", "band_gap": "mean"}
    assert spec.resolve_params({"targets": ["energy", "band_gap"], "readout": {"band_gap": "sum"}})["readout"] == {
        "energy": "sum", "band_gap": "sum"}
    assert spec.resolve_params(spec.resolve_params({"targets": "band_gap"})) == spec.resolve_params(
        {"targets": ["band_gap"]})  # resolving twice changes nothing (a printed config reads back)
    for params, message in [
        ({}, r"task.targets=None is not valid: property regression needs the sample keys to predict"),
        ({"targets": ["band_gap"], "readout": {"band_gp": "sum"}}, "task.readout names 'band_gp', which is not "
                                                                    "a regression target"),
        ({"targets": ["band_gap"], "readout": {"band_gap": "max"}}, "task.readout.band_gap=max is not valid"),
        ({"targets": ["charges"], "readout": {"charges": "sum"}}, "'charges', a per-atom target"),
        ({"targets": ["band_gap", "band_gap"]}, "names a key twice"),
    ]:
        with pytest.raises(MatscimlError, match=message):
            spec.resolve_params(params)


def test_print_config_shows_each_targets_readout(toy_site: Path) -> None:
    """`matsciml train --print-config` lists the readout of every per-structure regression target."""
    done = subprocess.run([sys.executable, "-m", "matsciml", "train", "--print-config", "--model", "toy-mlp",
                           "--task", "regression", "task.targets=[energy,band_gap]"],
                          capture_output=True, text=True, env=environment(toy_site), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "  readout:\n    energy: sum\n    band_gap: mean\n" in done.stdout, done.stdout


def _regression(registry, **params):
    from matsciml.tasks import PropertyRegressionTask

    torch.manual_seed(0)
    backbone = registry.model("toy-mlp").build(hidden_dim=8, num_layers=1)
    return PropertyRegressionTask(backbone, head_hidden_dim=16, optimizer={"name": "adamw", "lr": 0.01}, **params)


def test_sum_readout_is_extensive_and_mean_intensive(toy_registry) -> None:
    """A periodic structure and its 2x1x1 supercell: sum-readout predictions double, mean-readout ones stay."""
    from matsciml.testing import make_supercell, random_periodic_sample

    task = _regression(toy_registry, targets=["energy", "band_gap"]).double().eval()
    task.target_mean.copy_(torch.tensor([-0.3, 1.5], dtype=torch.float64))
    task.target_std.copy_(torch.tensor([0.2, 0.7], dtype=torch.float64))
    representation = toy_registry.representation("toy-points").build(dtype="float64")
    sample = random_periodic_sample(np.random.default_rng(0), num_atoms=5, cell_length=4.5)
    supercell = make_supercell(sample, (2, 1, 1))
    with torch.no_grad():
        one, two = (task.predict(representation.collate([representation(s)])) for s in (sample, supercell))
    assert float(two["energy"]) == pytest.approx(2 * float(one["energy"]), rel=1e-10)
    assert float(two["band_gap"]) == pytest.approx(float(one["band_gap"]), rel=1e-10)


# ------------------------------------------------------------------ per-atom targets
def test_regression_learns_per_atom_charges(toy_registry, tmp_path: Path) -> None:
    """Partial charges (a per-atom target, from the field registry) predicted atom by atom beat the per-atom
    training mean, beside a per-structure target; the net charge is a model input, never a target; the
    arity survives a checkpoint."""
    pl.seed_everything(0, verbose=False)
    from matsciml.training.datamodule import MatSciDataModule

    datamodule = MatSciDataModule("toy-dataset", toy_registry.representation("toy-points").build(), batch_size=8,
                                  split=(0.7, 0.3, 0.0), registry=toy_registry,
                                  dataset_options={"num_samples": 64, "seed": 1, "charges": True})
    task = _regression(toy_registry, targets=["charges", "energy"])
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, datamodule=datamodule)
    assert task.target_per_atom.tolist() == [True, False] and task.per_atom_metrics == ("charges_mae",)
    (metrics,) = trainer.validate(task, datamodule=datamodule, verbose=False)
    baseline = task.baseline_from(datamodule)["mean"]
    assert metrics["val/charges_mae"] < 0.85 * baseline["charges_mae"], (metrics, baseline)
    assert metrics["val/energy_mae"] < baseline["energy_mae"], (metrics, baseline)

    batch = next(iter(datamodule.val_dataloader()))
    assert "total_charge" in batch.input_fields and "total_charge" not in batch.targets
    task.eval()
    with torch.no_grad():
        prediction = task.predict(batch)
    assert prediction["charges"].shape == batch.targets["charges"].shape == (int(batch.num_atoms.sum()),)
    reloaded = _regression(toy_registry, targets=["charges", "energy"])
    reloaded.load_state_dict(task.state_dict())
    reloaded.eval()
    with torch.no_grad():
        again = reloaded.predict(batch)
    assert all(torch.equal(prediction[key], again[key]) for key in prediction)


def test_a_model_input_is_refused_as_a_target(toy_registry) -> None:
    """task.targets naming a per-structure model input (the net charge) fails naming its role."""
    from matsciml.training.datamodule import MatSciDataModule

    datamodule = MatSciDataModule("toy-dataset", toy_registry.representation("toy-points").build(),
                                  registry=toy_registry, dataset_options={"num_samples": 8, "charges": True})
    datamodule.setup()
    task = _regression(toy_registry, targets=["total_charge"])
    with pytest.raises(MatscimlError, match="task.targets names 'total_charge', a per-structure model input"):
        task.fit_statistics_from(datamodule)
