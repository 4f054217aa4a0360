"""The GALA plugin (matsciml-gala): its contract with the registry, its physics, its masks, its memory bound.

Physics (invariances, forces = finite differences, supercell extensivity,
batch isolation, state-dict round trip) is the core's conformance kit on
the ``small`` preset; this file adds what is GALA's own: the spec mirrors
the constructor, preset sizes, empty slots that influence nothing (the
upstream defect), finite gradients where slots are empty, continuity where
a neighbour crosses the cutoff, zeros for atoms that are not centres, the
chunked evaluation equal to the plain one through second derivatives, a
short S2EF run through the pipeline and, marked slow, learning LiPS forces.

Needs no DGL: it runs in the current-torch environment too.
"""
from __future__ import annotations

import importlib.util
import inspect
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from matsciml.batch import Batch
from matsciml.interfaces import Backbone
from matsciml.registry import Registry
from matsciml.testing import random_molecule_sample, random_periodic_sample
from matsciml_gala.model import GALA
from matsciml_gala.plugin import CPU, DEFAULTS, PARAM_CHOICES, PRESETS, SMALL, matsciml_models

DEFAULT_PARAMETERS = 1_612_804  # near the ~1.5M of the paper's networks
SMALL_PARAMETERS = 1_858
CPU_PARAMETERS = 5_250


def make_batch(samples: list[dict[str, Any]], cutoff: float = 5.0, **representation: Any) -> Batch:
    """A float64 batch of matsciml-pointcloud's own representation, positions ready for autograd."""
    built = Registry().representation("point-cloud").build(cutoff_radius=cutoff, dtype="float64", **representation)
    batch = built.collate([built(sample) for sample in samples])
    batch.pos.requires_grad_(True)
    return batch


def make_model(seed: int = 0, **hyper: Any) -> GALA:
    torch.manual_seed(seed)
    return GALA(**{**SMALL, **hyper}).double().eval()


def energies(model: GALA, batch: Batch) -> torch.Tensor:
    """A fixed linear readout of the atom features summed per structure: ``[B]``."""
    features = model(batch).atom_features
    readout = torch.linspace(-1.0, 1.0, features.shape[1], dtype=features.dtype)
    per_atom = features @ readout
    return per_atom.new_zeros(batch.num_structures).index_add(0, batch.structure_index, per_atom)


# ------------------------------------------------------- plugin and registry
def test_spec_defaults_equal_constructor_defaults() -> None:
    (spec,) = matsciml_models()
    parameters = inspect.signature(GALA.__init__).parameters
    signature_defaults = {name: p.default for name, p in parameters.items() if name != "self"}
    assert dict(spec.defaults) == signature_defaults == DEFAULTS
    assert set(spec.param_help) == set(signature_defaults)
    assert all(set(values) <= set(signature_defaults) for values in PRESETS.values())
    assert {name: dict(values) for name, values in spec.presets.items()} == PRESETS
    assert spec.representation == GALA.representation == "point-cloud"
    assert dict(spec.tied_params) == {"cutoff_radius": "cutoff_radius"}


def test_declared_choices_equal_what_the_model_accepts() -> None:
    """plugin.py writes the choices out (no torch there); they must be the model's own tables."""
    from matsciml.nn import ACTIVATIONS
    from matsciml_gala.algebra import INVARIANT_MODES
    from matsciml_gala.attention import COMBINE_FUNCTIONS, NORMALIZATIONS
    from matsciml_gala.model import RANKS

    assert PARAM_CHOICES["activation"] == tuple(ACTIVATIONS)
    assert PARAM_CHOICES["rank"] == RANKS
    assert PARAM_CHOICES["invariant_mode"] == INVARIANT_MODES
    assert PARAM_CHOICES["merge_fun"] == PARAM_CHOICES["join_fun"] == COMBINE_FUNCTIONS
    for name in ("value_normalization", "score_normalization", "block_normalization"):
        assert PARAM_CHOICES[name] == NORMALIZATIONS


def test_registry_builds_gala() -> None:
    spec = Registry().model("gala")
    assert spec.distribution == "matsciml-gala"
    model = spec.build(preset="small")
    assert isinstance(model, GALA) and isinstance(model, Backbone)
    assert model.embedding_dim == SMALL["width"] and model.structure_embedding_dim is None


def test_parameter_counts_of_the_presets() -> None:
    counts = {name: sum(p.numel() for p in GALA(**values).parameters())
              for name, values in {"default": {}, **PRESETS}.items()}
    print(f"GALA parameters: {counts}")
    assert counts == {"default": DEFAULT_PARAMETERS, "small": SMALL_PARAMETERS, "cpu": CPU_PARAMETERS}
    assert 1_300_000 <= counts["default"] <= 1_700_000


def test_info_shows_presets_with_their_parameter_counts(capsys: pytest.CaptureFixture[str]) -> None:
    from matsciml.cli import main

    assert main(["info", "gala"]) == 0
    out = capsys.readouterr().out
    assert f"parameters: {DEFAULT_PARAMETERS:,} (with default hyper-parameters)" in out
    assert f"preset small (model.preset=small, {SMALL_PARAMETERS:,} parameters)" in out
    assert f"preset cpu (model.preset=cpu, {CPU_PARAMETERS:,} parameters)" in out


@pytest.mark.parametrize("hyper, message", [
    ({"activation": "swish"}, "unknown activation 'swish'"), ({"rank": 3}, "rank must be one of"),
    ({"num_blocks": 0}, "num_blocks"), ({"dropout": 1.0}, "dropout"), ({"merge_fun": "sum"}, "merge_fun"),
    ({"invariant_mode": "all"}, "invariant_mode"), ({"block_normalization": "batch"}, "normalization")])
def test_rejects_bad_hyper_parameters(hyper: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GALA(**{**SMALL, **hyper})


# -------------------------------------------------------------- physics
def test_passes_the_conformance_kit() -> None:
    from matsciml.testing import check_backbone

    check_backbone("gala", preset="small").raise_for_failures()


@pytest.mark.parametrize("hyper", [
    {"rank": 1, "merge_fun": "mean", "join_fun": "mean"},
    {"invariant_mode": "partial", "include_normalized_products": True, "value_normalization": "layer",
     "score_normalization": "layer", "block_normalization": "none", "activation": "tanh"}])
def test_other_modes_pass_the_kit_checks_of_forces_and_isolation(hyper: dict[str, Any]) -> None:
    from matsciml.testing import check_backbone

    checks = ["rotation-invariance", "forces-finite-difference", "batch-isolation"]
    check_backbone("gala", preset="small", params=hyper, checks=checks).raise_for_failures()


def test_energy_alone_equals_energy_beside_a_structure_with_more_neighbours() -> None:
    """Empty slots influence nothing: batched beside a dense structure, a sparse one gets K - k more
    empty slots per cloud (and a different chunking), and its energy must not move."""
    rng = np.random.default_rng(11)
    sparse = random_molecule_sample(rng, num_atoms=4)
    dense = random_periodic_sample(rng, num_atoms=12, cell_length=4.0)
    alone, beside = make_batch([sparse]), make_batch([sparse, dense])
    assert beside.inputs.num_slots > alone.inputs.num_slots + 10
    for hyper in ({}, {"rank": 1}, {"chunk_tuple_features": 1}):
        model = make_model(**hyper)
        e_alone, e_beside = energies(model, alone), energies(model, beside)
        assert abs(float(e_alone[0] - e_beside[0])) <= 1e-10, hyper
        f_alone = torch.autograd.grad(e_alone.sum(), alone.pos)[0]
        f_beside = torch.autograd.grad(e_beside[0], beside.pos)[0][:4]
        torch.testing.assert_close(f_alone, f_beside, rtol=0, atol=1e-10)


def test_gradients_are_finite_with_empty_slots_and_isolated_atoms() -> None:
    """Zero vectors in empty slots, an atom without neighbours (an all-empty cloud), the i = j diagonal:
    no sqrt(0) slope reaches a gradient, through forces and the force loss's second derivative."""
    far = {"atomic_numbers": np.array([6, 8, 1, 29]),
           "pos": np.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [0.0, 1.0, 0.0], [20.0, 0.0, 0.0]]),
           "pbc": np.array([False, False, False])}
    batch = make_batch([far, random_periodic_sample(np.random.default_rng(2), num_atoms=6)])
    assert not batch.inputs.mask[3].any()  # the copper atom's cloud is empty
    model = make_model(include_normalized_products=True).train()
    energy = energies(model, batch).sum()
    (gradient,) = torch.autograd.grad(energy, batch.pos, create_graph=True)
    (energy + (gradient ** 2).sum()).backward()
    assert torch.isfinite(gradient).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert float(gradient[3].abs().max()) == 0.0


@pytest.mark.parametrize("hyper", [{}, {"merge_fun": "mean", "join_fun": "mean", "rank": 1}])
def test_every_parameter_receives_a_gradient_from_the_force_loss(hyper: dict[str, Any]) -> None:
    """No dead parameters (upstream left a third without gradient, which breaks DDP unless
    find_unused_parameters is set): the force loss reaches every parameter."""
    batch = make_batch([random_periodic_sample(np.random.default_rng(4), num_atoms=6),
                        random_molecule_sample(np.random.default_rng(5), num_atoms=5)])
    model = make_model(num_blocks=2, **hyper).train()
    energy = energies(model, batch).sum()
    (gradient,) = torch.autograd.grad(energy, batch.pos, create_graph=True)
    (energy + (gradient ** 2).sum()).backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead


def test_energy_and_forces_are_continuous_where_a_neighbour_crosses_the_cutoff() -> None:
    """A neighbour entering a cloud enters with zero attention weight (envelope inside the normalisation)."""
    cutoff = 5.0
    direction = np.array([0.48, -0.6, 0.64])
    model = make_model(cutoff_radius=cutoff)

    def run(distance: float) -> tuple[float, np.ndarray]:
        sample = {"atomic_numbers": np.array([6, 8, 1]),
                  "pos": np.stack([np.zeros(3), distance * direction, np.array([0.0, 0.0, 1.1])]),
                  "pbc": np.array([False, False, False])}
        batch = make_batch([sample], cutoff)
        energy = energies(model, batch).sum()
        (gradient,) = torch.autograd.grad(energy, batch.pos)
        return float(energy), -gradient.numpy()

    near, forces_near = run(cutoff + 1e-10)  # O just out of C's range, within H's
    inside, forces_inside = run(cutoff - 1e-10)  # just in: with zero weight
    assert abs(inside - near) <= 1e-9 * max(abs(near), 1e-3)
    np.testing.assert_allclose(forces_inside, forces_near, rtol=0, atol=1e-6)
    apart, _ = run(cutoff + 1.2 + 1e-7)
    assert math.isfinite(apart)


def test_atoms_that_are_not_centres_get_zero_features() -> None:
    rng = np.random.default_rng(5)
    slab = random_periodic_sample(rng, num_atoms=8)
    slab["tags"] = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    batch = make_batch([slab], centres="oc20", subsurface_fraction=0.25)
    features = make_model()(batch).atom_features
    centres = set(batch.inputs.centres.tolist())
    assert features.shape == (8, SMALL["width"]) and len(centres) == 5
    for atom in range(8):
        assert bool(features[atom].abs().sum() > 0) == (atom in centres)


def test_chunked_evaluation_equals_the_plain_one_through_second_derivatives() -> None:
    """Chunks recompute instead of storing; energies, forces and the force loss's parameter gradients agree."""
    rng = np.random.default_rng(3)
    samples = [random_periodic_sample(rng, num_atoms=6), random_molecule_sample(rng, num_atoms=5)]

    def run(chunk: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        model = make_model(chunk_tuple_features=chunk, dropout=0.2).train()
        batch = make_batch(samples)
        torch.manual_seed(7)  # the same dropout draw
        energy = energies(model, batch).sum()
        (gradient,) = torch.autograd.grad(energy, batch.pos, create_graph=True)
        (energy ** 2 + (gradient ** 2).sum()).backward()
        return energy.detach(), gradient.detach(), [p.grad for p in model.parameters()]

    plain, chunked = run(2 ** 40), run(1)  # one cloud per chunk
    torch.testing.assert_close(chunked[0], plain[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(chunked[1], plain[1], rtol=0, atol=1e-12)
    for got, want in zip(chunked[2], plain[2]):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


# ------------------------------------------------------------- training
def test_short_s2ef_training_of_the_small_preset(tmp_path: Path) -> None:
    """The core's S2EF task takes GALA unchanged; the run records the preset and every value it set."""
    import yaml

    from matsciml.training.config import build_config
    from matsciml.training.run import train

    config = build_config(overrides=[
        "model.name=gala", f"run.dir={tmp_path}", "run.name=gala-smoke", "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu", "trainer.enable_model_summary=false", "dataset.name=slab-emt-s2ef",
        "task.name=s2ef", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "model.preset=small"])
    result = train(config)
    print("gala s2ef smoke:", result.metrics)
    assert result.metrics and all(math.isfinite(value) for value in result.metrics.values())
    assert {"energy_mae", "force_mae"} <= set(result.metrics)
    recorded = yaml.safe_load((result.run_dir / "config.yaml").read_text())["model"]
    assert recorded == {"name": "gala", "preset": "small", **DEFAULTS, **SMALL}


@pytest.mark.slow
@pytest.mark.devsets
@pytest.mark.skipif(importlib.util.find_spec("dgl") is not None,
                    reason="run once per suite: in the current-torch environment, which GALA is for (no DGL)")
def test_gala_learns_forces_of_lips(devsets_dir: Path, tmp_path: Path) -> None:
    """S2EF through the summed centre features: force MAE on held-out LiPS frames (30%) at least 40% below
    zero forces, with the ``cpu`` preset on 4 Å clouds (at most 18 neighbours on LiPS, so none is cut off
    by max_neighbors=20); 8 epochs: 0.205 against 0.439 eV/Å, about 2.5 minutes on two cores."""
    from matsciml.data.ase_import import convert
    from matsciml.training.config import build_config
    from matsciml.training.run import train

    dataset = tmp_path / "lips.lmdb"
    convert([devsets_dir / "lips.extxyz"], dataset, progress=False)
    config = build_config(overrides=[
        "model.name=gala", "model.preset=cpu",
        "representation.cutoff_radius=4.0", "representation.max_neighbors=20", f"dataset.name={dataset}", "dataset.split=[0.7,0.3,0.0]",
        "task.name=s2ef", "trainer.max_epochs=8", "optimizer.lr=0.005", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", f"run.dir={tmp_path}"])
    result = train(config)
    model, zero = result.metrics["force_mae"], result.baselines["mean"]["force_mae"]
    print("gala lips:", result.metrics, result.baselines)
    assert model <= 0.6 * zero, (model, zero)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("dgl") is not None,
                    reason="run once per suite: in the current-torch environment, which GALA is for (no DGL)")
def test_gala_with_oc20_centres_matches_the_composition_fit_on_held_out_is2re_systems(tmp_path: Path) -> None:
    """IS2RE on the shipped EMT devset split by system, clouds around adsorbate and surface atoms and a
    quarter of the subsurface (``centres=oc20``): on the test split, untouched by training and checkpoint
    selection, the energy MAE is within 5% of the per-element composition fit's and far below the mean's.

    Measured (100 epochs, under 2 minutes): 0.707 eV with the data order before 2026-11-26 and 0.783 eV with
    today's (drawn from the seed and the epoch), against 0.779 for the composition fit and 1.342 for the mean.
    The bound is what both orders reached, not a margin over the fit that one order happened to give
    (matsciml_gala/README.md says so)."""
    from matsciml.training.config import build_config
    from matsciml.training.run import evaluate_task, load_checkpoint, train

    config = build_config(overrides=[
        "model.name=gala", "model.preset=cpu", "representation.centres=oc20", "representation.cutoff_radius=4.0",
        "representation.max_neighbors=24", "dataset.name=slab-emt-is2re", "task.name=is2re",
        "dataset.split=[0.6,0.2,0.2]", "trainer.max_epochs=100", "optimizer.lr=0.003", "data.batch_size=4",
        "early_stopping=null", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", f"run.dir={tmp_path}"])
    result = train(config)
    loaded = load_checkpoint(result.best_checkpoint)
    assert loaded.split.group_key == "system_id"
    test = evaluate_task(loaded.task, loaded.run.datamodule, "test")
    baselines = loaded.task.baseline_from(loaded.run.datamodule, "test")
    print("gala is2re:", {"val": result.metrics, "test": test, "test_baselines": baselines})
    assert baselines["composition"]["energy_mae"] < baselines["mean"]["energy_mae"]
    assert test["energy_mae"] <= 1.05 * baselines["composition"]["energy_mae"]
    assert test["energy_mae"] <= 0.65 * baselines["mean"]["energy_mae"]
