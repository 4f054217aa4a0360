"""The training pipeline: config, S2EF physics, learning, checkpoints, CLI.

Learning tests train E(n)-GNN for a few CPU epochs on real DFT data
(../shared/devsets/lips.extxyz) and on the shipped EMT IS2RE devset, and
compare with the trivial baseline computed on the same validation split.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from matsciml.registry import get_registry
from matsciml.testing import (
    finite_difference_forces,
    make_supercell,
    permute_sample,
    random_periodic_sample,
    random_rotation,
    rotate_sample,
    translate_sample,
)
from matsciml.training.config import build_config

REPO_ROOT = Path(__file__).resolve().parents[1]
EGNN = "model.name=egnn"  # the core's defaults name no model


def _matsciml(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "matsciml", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


# ---------------------------------------------------------------- config
def test_overrides_parse_yaml_values_and_nest() -> None:
    """`a.b=value` overrides parse values as YAML and create nested keys; the defaults name no model."""
    config = build_config(overrides=["trainer.max_epochs=3", "model.hidden_dim=32", "dataset.split=[0.5,0.25,0.25]",
                                     "scheduler.name=cosine"])
    assert config["trainer"]["max_epochs"] == 3
    assert config["model"] == {"hidden_dim": 32}
    assert config["dataset"]["split"] == [0.5, 0.25, 0.25]
    assert config["scheduler"] == {"name": "cosine", "warmup_steps": 0}


def test_unknown_section_is_named_with_a_suggestion() -> None:
    """A misspelt section fails with the name and a suggestion."""
    from matsciml.errors import MatscimlError

    with pytest.raises(MatscimlError, match=r"'trainr' \(did you mean 'trainer'\?\)"):
        build_config(overrides=["trainr.max_epochs=3"])


def test_training_without_a_model_names_the_installed_ones() -> None:
    """The core names no default model: `matsciml train` without one says how to choose and what is installed."""
    from matsciml.errors import MatscimlError
    from matsciml.training.run import resolve_config

    installed = get_registry().names("model")
    with pytest.raises(MatscimlError, match="^no model chosen") as info:
        resolve_config(build_config(overrides=["trainer.max_epochs=1"]))
    if installed:
        assert "give one with --model NAME or model.name=NAME; installed models: " + ", ".join(installed) \
            in str(info.value)
    else:  # the current-torch environment has the core only
        assert "no model is installed: install a model plugin" in str(info.value)
    done = _matsciml("train", "--print-config")
    assert done.returncode == 1 and done.stderr.startswith("matsciml: error: no model chosen"), done.stderr


@pytest.mark.dgl
def test_print_config_round_trips(tmp_path: Path) -> None:
    """The resolved config printed by --print-config reads back to the same config."""
    first = _matsciml("train", "--print-config", "--model", "egnn", "model.hidden_dim=24", "trainer.max_epochs=2")
    assert first.returncode == 0, first.stderr
    assert "hidden_dim: 24" in first.stdout and "cutoff_radius: 6.0" in first.stdout
    saved = tmp_path / "config.yaml"
    saved.write_text(first.stdout)
    second = _matsciml("train", "--print-config", "--config", str(saved))
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


@pytest.mark.dgl
def test_model_and_representation_cutoffs_follow_each_other() -> None:
    """Setting one cutoff sets both; setting them differently is an error naming both keys."""
    from matsciml.errors import IncompatibleComponentsError
    from matsciml.training.run import resolve_config

    assert dict(get_registry().model("egnn").tied_params) == {"cutoff_radius": "cutoff_radius"}  # declared
    config = resolve_config(build_config(overrides=[EGNN, "representation.cutoff_radius=4.5"]))
    assert config["model"]["cutoff_radius"] == 4.5 == config["representation"]["cutoff_radius"]
    config = resolve_config(build_config(overrides=[EGNN, "model.cutoff_radius=5.5"]))
    assert config["representation"]["cutoff_radius"] == 5.5
    with pytest.raises(IncompatibleComponentsError, match="model.cutoff_radius=5.0 and representation.cutoff_radius=4.0"):
        resolve_config(build_config(overrides=[EGNN, "representation.cutoff_radius=4.0", "model.cutoff_radius=5.0"]))


@pytest.mark.dgl
def test_task_needing_missing_targets_is_refused() -> None:
    """S2EF on the IS2RE devset (no forces) fails before training, naming what is missing."""
    from matsciml.errors import IncompatibleComponentsError
    from matsciml.training.run import build_run, resolve_config

    config = resolve_config(build_config(overrides=[EGNN, "dataset.name=slab-emt-is2re"]))
    with pytest.raises(IncompatibleComponentsError, match="needs forces in every sample, but dataset .slab-emt-is2re. does not have it"):
        build_run(config)


# ---------------------------------------------------------------- S2EF physics
def _s2ef_setup(cutoff: float = 4.0):
    import torch

    from matsciml.tasks.s2ef import S2EFTask

    torch.manual_seed(0)
    registry = get_registry()
    backbone = registry.model("egnn").build(hidden_dim=16, num_layers=2, cutoff_radius=cutoff).double()
    task = S2EFTask(backbone).double().eval()
    rng = np.random.default_rng(1)
    task.energy_head.set_statistics({"references": rng.normal(size=119), "shift": 0.3, "scale": 0.7})
    representation = registry.representation("dgl-graph").build(cutoff_radius=cutoff, dtype="float64")

    def energy_and_forces(sample: dict) -> tuple[float, np.ndarray]:
        batch = representation.collate([representation(sample)])
        prediction = task.predict(batch)
        return float(prediction["energy"][0]), prediction["forces"].detach().numpy()

    return energy_and_forces


def _close(a: float, b: float, tolerance: float = 1e-5) -> bool:
    return abs(a - b) <= tolerance * max(abs(a), abs(b), 1e-12)


@pytest.mark.dgl
def test_s2ef_energy_invariant_and_forces_equivariant_under_rotation() -> None:
    """Rotating a periodic structure (cell included) leaves E unchanged and rotates F."""
    energy_and_forces = _s2ef_setup()
    rng = np.random.default_rng(2)
    for trial in range(3):
        sample = random_periodic_sample(rng, num_atoms=10, cell_length=5.0, skew=0.3)
        rotation = random_rotation(rng)
        energy, forces = energy_and_forces(sample)
        rotated_energy, rotated_forces = energy_and_forces(rotate_sample(sample, rotation))
        assert _close(energy, rotated_energy), (trial, energy, rotated_energy)
        np.testing.assert_allclose(rotated_forces, forces @ rotation.T, rtol=1e-6, atol=1e-9)


@pytest.mark.dgl
def test_s2ef_energy_invariant_under_translation_and_permutation() -> None:
    """Translating or reordering the atoms changes neither E nor the (reordered) forces."""
    energy_and_forces = _s2ef_setup()
    rng = np.random.default_rng(3)
    sample = random_periodic_sample(rng, num_atoms=9)
    energy, forces = energy_and_forces(sample)
    moved_energy, moved_forces = energy_and_forces(translate_sample(sample, rng.normal(size=3) * 3.0))
    assert _close(energy, moved_energy)
    np.testing.assert_allclose(moved_forces, forces, rtol=1e-6, atol=1e-9)
    order = rng.permutation(9)
    permuted_energy, permuted_forces = energy_and_forces(permute_sample(sample, order))
    assert _close(energy, permuted_energy)
    np.testing.assert_allclose(permuted_forces, forces[order], rtol=1e-6, atol=1e-9)


@pytest.mark.dgl
def test_s2ef_forces_are_minus_the_energy_gradient() -> None:
    """Autograd forces equal central finite differences of the energy (float64)."""
    energy_and_forces = _s2ef_setup()
    rng = np.random.default_rng(4)
    sample = random_periodic_sample(rng, num_atoms=6, cell_length=4.5)
    _, forces = energy_and_forces(sample)

    def energy_at(pos: np.ndarray) -> float:
        return energy_and_forces({**sample, "pos": pos})[0]

    numerical = finite_difference_forces(energy_at, sample["pos"], step=1e-4)
    assert np.abs(forces).max() > 1e-3  # a test of something
    np.testing.assert_allclose(forces, numerical, rtol=1e-5, atol=1e-7)


@pytest.mark.dgl
def test_s2ef_energy_is_extensive_over_supercells() -> None:
    """A periodic structure written as a supercell of k cells has k times the energy, same forces."""
    energy_and_forces = _s2ef_setup()
    rng = np.random.default_rng(5)
    sample = random_periodic_sample(rng, num_atoms=5, cell_length=4.0, skew=0.2)
    energy, forces = energy_and_forces(sample)
    for repeats in ((2, 1, 1), (2, 2, 1)):
        cells = int(np.prod(repeats))
        super_energy, super_forces = energy_and_forces(make_supercell(sample, repeats))
        assert _close(super_energy, cells * energy), (repeats, super_energy, cells * energy)
        np.testing.assert_allclose(super_forces, np.tile(forces, (cells, 1)), rtol=1e-6, atol=1e-9)


@pytest.mark.dgl
def test_s2ef_physics_on_a_real_lips_frame(devsets_dir: Path) -> None:
    """On a real 83-atom periodic Li-P-S frame: rotation, translation and permutation invariance."""
    import ase.io

    from matsciml.data.ase_import import atoms_to_sample
    from matsciml.data.schema import validate_sample

    sample = validate_sample(atoms_to_sample(ase.io.read(devsets_dir / "lips.extxyz", index=0)))
    energy_and_forces = _s2ef_setup(cutoff=6.0)
    rng = np.random.default_rng(6)
    energy, forces = energy_and_forces(sample)
    rotation = random_rotation(rng)
    order = rng.permutation(len(sample["atomic_numbers"]))
    transformed = permute_sample(translate_sample(rotate_sample(sample, rotation), [1.0, -2.0, 0.5]), order)
    new_energy, new_forces = energy_and_forces(transformed)
    assert _close(energy, new_energy)
    np.testing.assert_allclose(new_forces, (forces @ rotation.T)[order], rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- learning
def _train(overrides: list[str], tmp_path: Path, name: str):
    from matsciml.training.run import train

    config = build_config(overrides=[
        EGNN, f"run.dir={tmp_path}", f"run.name={name}", "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu", "trainer.enable_model_summary=false", *overrides])
    return train(config)


@pytest.fixture(scope="module")
def lips_dataset(devsets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from matsciml.data.ase_import import convert

    output = tmp_path_factory.mktemp("lips") / "lips.lmdb"
    convert([devsets_dir / "lips.extxyz"], output, progress=False)
    return output


@pytest.mark.dgl
@pytest.mark.slow
def test_egnn_learns_energies_and_forces_of_real_dft_data(lips_dataset: Path, tmp_path: Path) -> None:
    """A short CPU run on LiPS (DFT) beats the zero-force baseline by >= 30% and the mean-energy baseline."""
    result = _train([f"dataset.name={lips_dataset}", "task.name=s2ef", "trainer.max_epochs=20",
                     "optimizer.lr=0.004", "scheduler.name=cosine", "model.hidden_dim=32", "model.num_layers=2",
                     "dataset.split=[0.7,0.3,0.0]"], tmp_path, "lips")
    metrics, baseline = result.metrics, result.baselines["mean"]
    print("lips s2ef:", json.dumps({"metrics": metrics, "baselines": result.baselines}))
    assert metrics["force_mae"] <= 0.7 * baseline["force_mae"], (metrics, baseline)
    assert metrics["energy_mae"] < baseline["energy_mae"], (metrics, baseline)


@pytest.fixture(scope="module")
def is2re_run(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("is2re")
    # 66 training systems: many small steps (batch 4, lr 1e-3); the best checkpoint by validation loss
    return _train(["dataset.name=slab-emt-is2re", "task.name=is2re", "trainer.max_epochs=200",
                   "optimizer.lr=0.001", "model.hidden_dim=32", "model.num_layers=2", "early_stopping=null",
                   "dataset.split=[0.6,0.2,0.2]", "data.batch_size=4"], run_dir, "is2re")


@pytest.mark.dgl
@pytest.mark.slow
def test_egnn_beats_the_composition_fit_on_held_out_is2re_systems(is2re_run) -> None:
    """IS2RE on the shipped EMT devset (one structure per system, so held-out systems): on the test
    split, untouched by training and checkpoint selection, E(n)-GNN's energy MAE is below the
    per-element composition fit's."""
    from matsciml.training.run import evaluate_task, load_checkpoint

    loaded = load_checkpoint(is2re_run.best_checkpoint)
    assert loaded.split.group_key == "system_id"
    test = evaluate_task(loaded.task, loaded.run.datamodule, "test")
    baselines = loaded.task.baseline_from(loaded.run.datamodule, "test")
    print("is2re:", json.dumps({"val": is2re_run.metrics, "val_baselines": is2re_run.baselines, "test": test,
                                "test_baselines": baselines}))
    assert test["energy_mae"] < baselines["composition"]["energy_mae"] < baselines["mean"]["energy_mae"]
    assert is2re_run.metrics["energy_mae"] < is2re_run.baselines["composition"]["energy_mae"]


@pytest.mark.dgl
@pytest.mark.slow
def test_run_directory_keeps_config_split_checkpoints_and_metrics(is2re_run) -> None:
    """The run directory holds the resolved config, split, best/last checkpoints, CSV log and metrics."""
    run_dir = is2re_run.run_dir
    assert (run_dir / "config.yaml").is_file() and (run_dir / "split.json").is_file()
    assert is2re_run.best_checkpoint.is_file() and is2re_run.last_checkpoint.is_file()
    assert (run_dir / "logs" / "metrics.csv").is_file()
    recorded = json.loads((run_dir / "metrics.json").read_text())
    assert recorded["metrics"] == is2re_run.metrics


@pytest.mark.dgl
@pytest.mark.slow
def test_reloaded_checkpoint_gives_the_same_metrics(is2re_run) -> None:
    """Train, checkpoint, reload and evaluate: the same metrics, in-process and through the CLI."""
    from matsciml.training.run import evaluate_task, load_checkpoint

    loaded = load_checkpoint(is2re_run.best_checkpoint)
    again = evaluate_task(loaded.task, loaded.run.datamodule, "val")
    for name, value in is2re_run.metrics.items():
        assert again[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    done = _matsciml("evaluate", str(is2re_run.best_checkpoint), "--json")
    assert done.returncode == 0, done.stderr
    reported = json.loads(done.stdout)["metrics"]
    for name, value in is2re_run.metrics.items():
        assert reported[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


@pytest.mark.dgl
@pytest.mark.slow
def test_the_readme_demo_learns_held_out_systems(tmp_path: Path) -> None:
    """The README demo as written (its config, on the shipped devset split by system) beats both baselines on
    held-out systems: free-atom force MAE below 0.9x zero forces (adsorbates below 0.7x), energy MAE below the
    composition fit.

    The bounds are what every one of seven runs with other seeds and data orders reached (README "What the
    demo learns"), not what seed 0 happens to reach: held-out energies are learnt well by some runs (0.06x the
    composition fit) and hardly at all by others (0.96x), forces 0.41x-0.86x of zero forces.
    """
    done = _matsciml("train", "--config", str(REPO_ROOT / "examples" / "egnn_s2ef_devset.yaml"), "--json",
                     f"run.dir={tmp_path}", "run.name=demo", "trainer.enable_progress_bar=false")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    metrics, baselines = result["metrics"], result["baselines"]
    print("demo:", json.dumps({"metrics": metrics, "baselines": baselines}))
    assert "split by system_id: 300 groups -> 240/30/30 groups" in done.stderr  # held-out systems
    assert metrics["force_mae"] <= 0.9 * baselines["mean"]["force_mae"], (metrics, baselines)
    assert metrics["energy_mae"] <= 1.0 * baselines["composition"]["energy_mae"], (metrics, baselines)
    assert metrics["force_mae_tag2"] <= 0.7 * baselines["mean"]["force_mae_tag2"]  # adsorbates learn too


# ---------------------------------------------------------------- CLI and plugins
@pytest.mark.dgl
def test_info_egnn_shows_hyperparameters_size_and_needs() -> None:
    """`matsciml info egnn`: hyper-parameters, parameter count, and that it needs dgl-graph."""
    done = _matsciml("info", "egnn")
    assert done.returncode == 0, done.stderr
    assert "model egnn  (from matsciml-egnn" in done.stdout
    assert "needs representation: dgl-graph (installed)" in done.stdout
    assert "parameters: 85,315 (with default hyper-parameters)" in done.stdout
    for name in ("hidden_dim", "num_layers", "cutoff_radius", "activation"):
        assert name in done.stdout


def _dgl_representation_installed() -> bool:
    return any(spec.name == "dgl-graph" for spec in get_registry().list("representation"))


def test_training_egnn_without_the_dgl_plugin_names_the_package(tmp_path: Path) -> None:
    """With matsciml-egnn installed but not matsciml-dgl, train fails naming `pip install matsciml-dgl`."""
    if _dgl_representation_installed():
        pytest.skip("matsciml-dgl is installed in this environment; this test runs in the current-torch "
                    "environment (.venv-current), which has no DGL")
    target = tmp_path / "site"
    shutil.copytree(REPO_ROOT / "matsciml_egnn", tmp_path / "src", ignore=shutil.ignore_patterns("*.egg-info", "build"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--no-index", "--target", str(target), str(tmp_path / "src")],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    env = {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    listed = _matsciml("models", env=env)
    assert "egnn" in listed.stdout, listed.stdout + listed.stderr
    done = _matsciml("train", "--model", "egnn", "--dataset", "slab-emt-s2ef", env=env)
    assert done.returncode == 1
    assert "needs the representation 'dgl-graph', which is not installed" in done.stderr
    assert "pip install matsciml-dgl" in done.stderr
    info = _matsciml("info", "egnn", env=env)
    assert "NOT installed: pip install matsciml-dgl" in info.stdout, info.stdout + info.stderr


@pytest.mark.dgl
@pytest.mark.slow
def test_property_regression_learns_two_targets_of_materials_project(devsets_dir: Path, tmp_path: Path) -> None:
    """Band gap and formation energy per atom (Materials Project) both beat their training-mean baseline."""
    from matsciml.data.ase_import import convert

    dataset = tmp_path / "mp.lmdb"
    convert([devsets_dir / "materials_project.extxyz"], dataset, progress=False)
    result = _train([f"dataset.name={dataset}", "task.name=regression",
                     "task.targets=[band_gap,formation_energy_per_atom]", "trainer.max_epochs=30",
                     "model.hidden_dim=32", "model.num_layers=2", "dataset.split=[0.7,0.3,0.0]"], tmp_path, "mp")
    print("mp regression:", json.dumps({"metrics": result.metrics, "baselines": result.baselines}))
    for target in ("band_gap", "formation_energy_per_atom"):
        assert result.metrics[f"{target}_mae"] < 0.8 * result.baselines["mean"][f"{target}_mae"], target


@pytest.mark.dgl
@pytest.mark.slow
def test_evaluate_on_another_dataset_through_the_cli(is2re_run) -> None:
    """`matsciml evaluate CKPT --dataset NAME --split all` scores every structure of that dataset."""
    done = _matsciml("evaluate", str(is2re_run.best_checkpoint), "--dataset", "slab-emt-is2re", "--split", "all")
    assert done.returncode == 0, done.stderr
    assert "on slab-emt-is2re (all split)" in done.stdout
    assert "energy_mae" in done.stdout


def test_unknown_trainer_setting_is_named() -> None:
    """A trainer key Lightning does not know fails with that key named, not a traceback."""
    from matsciml.errors import MatscimlError
    from matsciml.training.run import make_trainer

    with pytest.raises(MatscimlError, match="trainer.max_epoch is not an argument of pytorch_lightning.Trainer"):
        make_trainer({"max_epoch": 3})


@pytest.mark.dgl
def test_loader_workers_give_the_same_batches_as_the_main_process() -> None:
    """With 2 DataLoader workers the representation runs in the workers and batches are unchanged."""
    import torch

    from matsciml.training.run import build_run, resolve_config

    config = resolve_config(build_config(overrides=[EGNN, "data.batch_size=16"]))
    run = build_run(config)
    serial = list(run.datamodule.loader("val"))
    run.datamodule.num_workers = 2
    parallel = list(run.datamodule.loader("val"))
    assert len(serial) == len(parallel) > 0
    for one, two in zip(serial, parallel):
        assert torch.equal(one.pos, two.pos) and torch.equal(one.targets["forces"], two.targets["forces"])
        assert torch.equal(torch.stack(one.inputs.edges()), torch.stack(two.inputs.edges()))
        assert torch.equal(one.inputs.edata["shift"], two.inputs.edata["shift"])
