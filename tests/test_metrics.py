"""The field's metrics and baselines, checked against computations by hand.

OC20-style metrics score forces on free atoms (not ``fixed``; tag 0 counts
as fixed when a dataset has tags and no ``fixed``), report the same over all
atoms and per tag, and EFwT/EwT; every run prints them beside the mean
predictor and a per-element linear composition fit scored by the same code.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from matsciml.batch import collate_structures
from matsciml.data.schema import MAX_ATOMIC_NUMBER
from matsciml.tasks.baselines import fit_baselines, score_baselines
from matsciml.tasks.metrics import MetricTotals, energy_metrics, force_metrics, free_atoms
from tests.installed_plugins import toy_registry, toy_site  # noqa: F401 - fixtures


def _sample(numbers: list[int], tags: list[int] | None, fixed: list[bool] | None, energy: float,
            seed: int) -> dict:
    rng = np.random.default_rng(seed)
    count = len(numbers)
    sample = {
        "atomic_numbers": np.asarray(numbers, dtype=np.int64),
        "pos": rng.uniform(0.0, 6.0, (count, 3)),
        "cell": np.eye(3) * 6.0,
        "pbc": np.array([True, True, False]),
        "energy": np.float64(energy),
        "forces": rng.normal(0.0, 0.5, (count, 3)),
    }
    if tags is not None:
        sample["tags"] = np.asarray(tags, dtype=np.int64)
    if fixed is not None:
        sample["fixed"] = np.asarray(fixed, dtype=bool)
    return sample


SAMPLES = [
    _sample([29, 29, 29, 8, 1], [0, 1, 1, 2, 2], [True, False, False, False, False], -12.5, 1),
    _sample([78, 78, 6, 8], [0, 1, 2, 2], [True, False, False, False], -20.25, 2),
]


def _predicted(batch, energy_offsets, force_noise):
    forces = batch.targets["forces"] + torch.as_tensor(force_noise, dtype=batch.pos.dtype)
    return {"energy": batch.targets["energy"] + torch.as_tensor(energy_offsets, dtype=batch.pos.dtype),
            "forces": forces}


def test_free_atom_force_metrics_equal_a_hand_computation() -> None:
    batch = collate_structures(SAMPLES, dtype=torch.float64)
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 0.05, (9, 3))
    noise[4] = [0.001, -0.002, 0.0]  # structure 0's atoms after index 0: small errors except atom 1..3
    offsets = [0.01, 0.5]
    prediction = _predicted(batch, offsets, noise)
    energy_error = (prediction["energy"] - batch.targets["energy"]).abs()
    metrics = {**energy_metrics(prediction["energy"], batch.targets["energy"], batch),
               **force_metrics(prediction["forces"], batch.targets["forces"], batch, energy_error)}
    got = {name: float(metric.value) for name, metric in metrics.items()}

    reference = np.concatenate([s["forces"] for s in SAMPLES])
    predicted = reference + noise
    fixed = np.concatenate([s["fixed"] for s in SAMPLES])
    tags = np.concatenate([s["tags"] for s in SAMPLES])
    free = ~fixed
    error = np.abs(predicted - reference)

    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-8)

    assert got["force_mae"] == pytest.approx(error[free].mean(), rel=1e-12)
    assert got["force_mae_all"] == pytest.approx(error.mean(), rel=1e-12)
    assert got["force_vector_mae"] == pytest.approx(np.linalg.norm(predicted - reference, axis=-1)[free].mean(),
                                                    rel=1e-12)
    assert got["force_cosine"] == pytest.approx(cosine(predicted, reference)[free].mean(), rel=1e-9)
    assert got["force_cosine_all"] == pytest.approx(cosine(predicted, reference).mean(), rel=1e-9)
    for tag in (0, 1, 2):
        assert got[f"force_mae_tag{tag}"] == pytest.approx(error[tags == tag].mean(), rel=1e-12)
    assert got["energy_mae"] == pytest.approx(np.mean(np.abs(offsets)), rel=1e-12)
    assert got["energy_per_atom_mae"] == pytest.approx(np.mean(np.abs(offsets) / [5, 4]), rel=1e-12)
    # EFwT: energy within 0.02 eV and every free-atom force component within 0.03 eV/Å
    starts = [0, 5, 9]
    within = []
    for s, offset in enumerate(offsets):
        atoms = slice(starts[s], starts[s + 1])
        worst = error[atoms][free[atoms]].max()
        within.append(abs(offset) < 0.02 and worst < 0.03)
    assert got["efwt"] == pytest.approx(np.mean(within))
    assert got["ewt"] == pytest.approx(np.mean(np.abs(offsets) < 0.02))


def test_efwt_ignores_the_errors_of_fixed_atoms() -> None:
    """A structure whose only large force error is on a fixed atom is within threshold."""
    batch = collate_structures(SAMPLES[:1], dtype=torch.float64)
    noise = np.zeros((5, 3))
    noise[0] = [5.0, 0.0, 0.0]  # atom 0 is fixed
    prediction = _predicted(batch, [0.001], noise)
    error = (prediction["energy"] - batch.targets["energy"]).abs()
    metrics = force_metrics(prediction["forces"], batch.targets["forces"], batch, error)
    assert float(metrics["efwt"].value) == 1.0 and float(metrics["force_mae"].value) == 0.0
    assert float(metrics["force_mae_all"].value) == pytest.approx(5.0 / 15)
    noise[3] = [0.0, 0.05, 0.0]  # a free atom beyond 0.03 eV/Å
    prediction = _predicted(batch, [0.001], noise)
    assert float(force_metrics(prediction["forces"], batch.targets["forces"], batch, error)["efwt"].value) == 0.0


@pytest.mark.parametrize(("has_tags", "has_fixed", "expected"), [
    (True, True, [False, True, True, True, True]),     # `fixed` decides
    (True, False, [False, True, True, True, True]),    # tag 0 counts as fixed
    (False, True, [False, True, True, True, True]),
    (False, False, [True, True, True, True, True]),    # nothing says: every atom is free
])
def test_which_atoms_are_free(has_tags: bool, has_fixed: bool, expected: list[bool]) -> None:
    sample = dict(SAMPLES[0])
    if not has_tags:
        sample.pop("tags")
    if not has_fixed:
        sample.pop("fixed")
    assert free_atoms(collate_structures([sample], dtype=torch.float64)).tolist() == expected


def test_fixed_wins_over_tags() -> None:
    """A tagged dataset whose `fixed` frees a tag-0 atom scores that atom."""
    sample = dict(SAMPLES[0], fixed=np.zeros(5, dtype=bool))
    assert free_atoms(collate_structures([sample], dtype=torch.float64)).all()


def test_metric_totals_are_exact_means_however_the_structures_are_batched() -> None:
    rng = np.random.default_rng(3)
    samples = [_sample(list(rng.choice([1, 8, 29, 78], size=n)), list(rng.integers(0, 3, size=n)), None,
                       float(rng.normal()), i) for i, n in enumerate(rng.integers(2, 9, size=11))]
    noise = [rng.normal(0, 0.1, (len(s["atomic_numbers"]), 3)) for s in samples]

    def totals(groups: list[list[int]]) -> dict[str, float]:
        total = MetricTotals()
        for group in groups:
            batch = collate_structures([samples[i] for i in group], dtype=torch.float64)
            prediction = _predicted(batch, [0.05] * len(group), np.concatenate([noise[i] for i in group]))
            error = (prediction["energy"] - batch.targets["energy"]).abs()
            total.add(force_metrics(prediction["forces"], batch.targets["forces"], batch, error))
        return total.values()

    whole = totals([list(range(11))])
    for groups in ([[i] for i in range(11)], [[0, 1, 2], [3, 4], [5, 6, 7, 8, 9, 10]]):
        assert totals(groups) == pytest.approx(whole, rel=1e-12)


# ---------------------------------------------------------------- baselines
def _composition_samples(count: int, seed: int) -> list[dict]:
    """Structures of varied composition whose energy is linear in the counts plus noise."""
    rng = np.random.default_rng(seed)
    true = {1: -3.4, 8: -4.9, 29: -3.7, 78: -6.1}
    samples = []
    for index in range(count):
        numbers = list(rng.choice(list(true), size=int(rng.integers(3, 12))))
        energy = sum(true[z] for z in numbers) + rng.normal(0, 0.3)
        samples.append(_sample(numbers, None, None, energy, 100 + index))
        samples[-1]["band_gap"] = np.float64(np.mean([abs(true[z]) for z in numbers]) + rng.normal(0, 0.1))
        samples[-1]["charges"] = np.asarray([0.1 * z / 29 for z in numbers]) + rng.normal(0, 0.01, len(numbers))
    return samples


def test_the_composition_baseline_equals_a_least_squares_fit() -> None:
    train, held_out = _composition_samples(40, 1), _composition_samples(15, 2)
    baselines = fit_baselines(iter(train), {"energy": "extensive", "forces": "forces", "band_gap": "intensive",
                                            "charges": "atom"})

    elements = sorted({int(z) for s in train for z in s["atomic_numbers"]})
    counts = np.array([[np.sum(s["atomic_numbers"] == z) for z in elements] for s in train], dtype=float)
    energy = np.array([float(s["energy"]) for s in train])
    weights, *_ = np.linalg.lstsq(counts, energy, rcond=None)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    gap_weights, *_ = np.linalg.lstsq(fractions, np.array([float(s["band_gap"]) for s in train]), rcond=None)
    composition = baselines["composition"]
    by_element = dict(zip(elements, weights))
    for part in composition.parts:
        if part.key == "energy":
            assert np.allclose(part.weights[elements], weights, atol=1e-10)
            assert np.count_nonzero(np.delete(part.weights, elements)) == 0  # absent elements: 0
        if part.key == "band_gap":
            assert np.allclose(part.weights[elements], gap_weights, atol=1e-10)

    def metrics(batch, prediction):
        from matsciml.tasks.metrics import scalar_mae

        return {"energy_mae": scalar_mae(prediction["energy"], batch.targets["energy"]),
                "band_gap_mae": scalar_mae(prediction["band_gap"], batch.targets["band_gap"]),
                "charges_mae": scalar_mae(prediction["charges"], batch.targets["charges"]),
                "force_mae": scalar_mae(prediction["forces"], batch.targets["forces"])}

    scored = score_baselines(baselines, iter(held_out), metrics, chunk=4)
    held_counts = np.array([[np.sum(s["atomic_numbers"] == z) for z in elements] for s in held_out], dtype=float)
    expected_energy = np.abs(held_counts @ weights - [float(s["energy"]) for s in held_out]).mean()
    assert scored["composition"]["energy_mae"] == pytest.approx(expected_energy, rel=1e-10)
    held_fractions = held_counts / held_counts.sum(axis=1, keepdims=True)
    expected_gap = np.abs(held_fractions @ gap_weights - [float(s["band_gap"]) for s in held_out]).mean()
    assert scored["composition"]["band_gap_mae"] == pytest.approx(expected_gap, rel=1e-10)
    # per-atom target: each element's training mean
    train_z = np.concatenate([s["atomic_numbers"] for s in train])
    train_q = np.concatenate([s["charges"] for s in train])
    held_z = np.concatenate([s["atomic_numbers"] for s in held_out])
    held_q = np.concatenate([s["charges"] for s in held_out])
    element_mean = {z: train_q[train_z == z].mean() for z in elements}
    expected_charges = np.abs(np.array([element_mean[z] for z in held_z]) - held_q).mean()
    assert scored["composition"]["charges_mae"] == pytest.approx(expected_charges, rel=1e-10)
    # the mean baseline: training mean per atom times the atoms; zero forces
    per_atom = np.mean(energy / counts.sum(axis=1))
    expected_mean = np.abs(held_counts.sum(axis=1) * per_atom - [float(s["energy"]) for s in held_out]).mean()
    assert scored["mean"]["energy_mae"] == pytest.approx(expected_mean, rel=1e-10)
    forces = np.concatenate([s["forces"] for s in held_out])
    assert scored["mean"]["force_mae"] == pytest.approx(np.abs(forces).mean(), rel=1e-10)
    assert scored["composition"]["energy_mae"] < 0.5 * scored["mean"]["energy_mae"]
    assert by_element  # the fit saw every element


def test_one_composition_gives_the_training_mean() -> None:
    """With one composition (MD frames) the minimum-norm fit predicts the training mean energy."""
    train = [_sample([3, 3, 15], None, None, -10.0 + 0.1 * i, i) for i in range(6)]
    baselines = fit_baselines(train, {"energy": "extensive"})
    batch = collate_structures(train[:1], dtype=torch.float64)
    assert float(baselines["composition"](batch)["energy"][0]) == pytest.approx(-10.0 + 0.25, rel=1e-12)
    assert float(baselines["mean"](batch)["energy"][0]) == pytest.approx(-10.0 + 0.25, rel=1e-12)


# ---------------------------------------------------------------- tasks
def test_the_s2ef_force_loss_covers_free_atoms_by_default(toy_registry) -> None:
    from matsciml.tasks import S2EFTask

    batch = collate_structures(SAMPLES, dtype=torch.float32)
    prediction = {"energy": batch.targets["energy"].clone(), "forces": torch.zeros_like(batch.targets["forces"])}
    changed = collate_structures([dict(SAMPLES[0], forces=SAMPLES[0]["forces"] * np.array([[50.0]] + [[1.0]] * 4)),
                                  SAMPLES[1]], dtype=torch.float32)  # atom 0 (fixed) gets a huge force
    for atoms, moves in (("free", False), ("all", True)):
        task = S2EFTask(toy_registry.model("toy-mlp").build(hidden_dim=4, num_layers=1), force_loss_atoms=atoms)
        before, after = float(task.loss(batch, prediction)), float(task.loss(changed, prediction))
        assert (abs(after - before) > 1e-3) == moves, (atoms, before, after)


def test_baselines_share_the_model_metric_names(toy_registry) -> None:
    from matsciml.tasks import S2EFTask
    from matsciml.training.datamodule import MatSciDataModule

    datamodule = MatSciDataModule("slab-emt-s2ef", toy_registry.representation("toy-points").build(),
                                  batch_size=8, registry=toy_registry)
    task = S2EFTask(toy_registry.model("toy-mlp").build(hidden_dim=4, num_layers=1))
    task.fit_statistics_from(datamodule)
    baselines = task.baseline_from(datamodule, "val")
    batch = next(iter(datamodule.val_dataloader()))
    with torch.enable_grad():
        names = set(task.metrics(batch, {k: v.detach() for k, v in task.predict(batch).items()}))
    assert set(baselines) == {"mean", "composition"}
    for metrics in baselines.values():
        assert set(metrics) == names
        assert metrics["force_cosine"] == 0.0  # zero forces
    # per-element reference energies beat the per-atom mean on slabs of many metals
    assert baselines["composition"]["energy_mae"] < baselines["mean"]["energy_mae"]
    assert baselines["mean"]["force_mae"] > baselines["mean"]["force_mae_tag0"]  # fixed atoms: small forces


def test_epoch_metrics_do_not_depend_on_the_batch_size(toy_registry) -> None:
    """Lightning's epoch metrics are exact means over the split: batch sizes 3 and 7 agree."""
    import pytorch_lightning as pl

    from matsciml.tasks import S2EFTask
    from matsciml.training.datamodule import MatSciDataModule

    pl.seed_everything(0, verbose=False)
    task = S2EFTask(toy_registry.model("toy-mlp").build(hidden_dim=4, num_layers=1))
    results = []
    for batch_size in (3, 7):
        datamodule = MatSciDataModule("slab-emt-s2ef", toy_registry.representation("toy-points").build(),
                                      batch_size=batch_size, registry=toy_registry)
        if not bool(task.statistics_fitted):
            task.fit_statistics_from(datamodule)
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, inference_mode=False)
        (metrics,) = trainer.validate(task, datamodule=datamodule, verbose=False)
        results.append({k: v for k, v in metrics.items() if k != "val/loss"})
    assert results[0] == pytest.approx(results[1], rel=1e-5)
    assert {"val/force_mae_tag2", "val/efwt", "val/force_mae_all"} <= set(results[0])


def test_reference_energies_in_the_energy_statistics_are_the_composition_fit() -> None:
    """The energy head's references and the composition baseline are one least-squares fit."""
    from matsciml.tasks.statistics import energy_statistics

    train = _composition_samples(30, 5)
    statistics = energy_statistics(train, "energy", use_references=True)
    baselines = fit_baselines(train, {"energy": "extensive"})
    (part,) = baselines["composition"].parts
    assert np.allclose(statistics["references"], part.weights, atol=1e-10)
    assert statistics["references"].shape == (MAX_ATOMIC_NUMBER + 1,)
