"""The point-cloud representation (matsciml-pointcloud): neighbour clouds, padding, masks, OC20 centres.

No DGL: this module runs in both test environments. The clouds are
checked against the brute-force neighbour search of the testing helpers;
the collate against the clouds of each structure alone.
"""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch

from matsciml.registry import Registry
from matsciml.testing import brute_force_neighbors, random_molecule_sample, random_periodic_sample
from matsciml_pointcloud.representation import (
    PointCloudRepresentation,
    PointClouds,
    pair_elements,
    relative_vectors,
)


def _slab(rng: np.random.Generator, shift: float = 0.0) -> dict:
    """A 3-layer fcc(100)-like slab of 18 Cu atoms with an O adsorbate; tags 0 (bottom), 1 (top), 2 (O)."""
    a = 2.55
    layer = np.array([[i * a, j * a, 0.0] for i in range(3) for j in range(2)])
    pos = np.concatenate([layer + [0, 0, z * 1.8] for z in range(3)] + [[[a, a / 2, 5.4]]])
    pos = pos + rng.normal(scale=0.05, size=pos.shape) + shift
    tags = np.array([0] * 12 + [1] * 6 + [2])
    return {"atomic_numbers": np.array([29] * 18 + [8]), "pos": pos, "cell": np.diag([3 * a, 2 * a, 20.0]),
            "pbc": np.array([True, True, False]), "tags": tags, "energy": np.asarray(0.0),
            "forces": np.zeros((19, 3))}


def test_spec_defaults_equal_the_constructor_defaults() -> None:
    spec = Registry().representation("point-cloud")
    assert spec.distribution == "matsciml-pointcloud"
    parameters = inspect.signature(PointCloudRepresentation.__init__).parameters
    assert dict(spec.defaults) == {name: p.default for name, p in parameters.items() if name != "self"}
    assert set(spec.param_help) == set(spec.defaults)
    assert isinstance(spec.build(), PointCloudRepresentation)


@pytest.mark.parametrize("kind", ["periodic", "molecule", "small-cell"])
@pytest.mark.parametrize("max_neighbors", [4, 64])
def test_each_cloud_holds_the_nearest_neighbours_of_the_brute_force_search(kind: str, max_neighbors: int) -> None:
    rng = np.random.default_rng(7)
    sample = {"periodic": lambda: random_periodic_sample(rng, num_atoms=10),
              "molecule": lambda: random_molecule_sample(rng, num_atoms=9),
              "small-cell": lambda: random_periodic_sample(rng, num_atoms=2, cell_length=2.5)}[kind]()
    cutoff = 3.5
    representation = PointCloudRepresentation(cutoff_radius=cutoff, max_neighbors=max_neighbors, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation at max_neighbors=4 is intended here
        batch = representation.collate([representation(sample)])
    vectors = relative_vectors(batch).numpy()
    clouds = batch.inputs
    senders, receivers, _, lengths = brute_force_neighbors(sample["pos"], sample.get("cell"), sample["pbc"], cutoff)
    for centre in range(len(sample["atomic_numbers"])):
        expected = np.sort(lengths[receivers == centre])[:max_neighbors]
        real = clouds.mask[centre].numpy()
        got = np.linalg.norm(vectors[centre][real], axis=1)
        np.testing.assert_allclose(got, expected, atol=1e-12)  # sorted by distance, the nearest K
        assert (np.diff(got) >= -1e-12).all()
        assert not vectors[centre][~real].any() and (clouds.neighbours[centre][~real] == centre).all()
        sent = set(clouds.neighbours[centre][real].tolist())
        assert sent <= set(senders[receivers == centre].tolist())


def test_collate_offsets_indices_and_pads_to_the_batch_maximum() -> None:
    rng = np.random.default_rng(3)
    samples = [random_molecule_sample(rng, num_atoms=4), random_periodic_sample(rng, num_atoms=6),
               random_molecule_sample(rng, num_atoms=3)]
    representation = PointCloudRepresentation(cutoff_radius=3.0, max_neighbors=40, dtype="float64")
    items = [representation(sample) for sample in samples]
    batch = representation.collate(items)
    clouds = batch.inputs
    assert isinstance(clouds, PointClouds) and clouds.num_centres == 13
    assert clouds.num_slots == max(item.neighbours.shape[1] for item in items)
    assert clouds.structure_index.tolist() == [0] * 4 + [1] * 6 + [2] * 3
    start = 0
    for sample, item in zip(samples, items):
        alone = representation.collate([item])
        rows = slice(start, start + len(sample["atomic_numbers"]))
        k = alone.inputs.num_slots
        np.testing.assert_allclose(relative_vectors(batch)[rows, :k].numpy(), relative_vectors(alone).numpy())
        assert (clouds.neighbours[rows, :k] - start == alone.inputs.neighbours).all()
        assert not clouds.mask[rows, k:].any() and not clouds.shifts[rows, k:].any()
        start += len(sample["atomic_numbers"])
    centre_z, neighbour_z = pair_elements(batch)
    assert (centre_z == batch.atomic_numbers).all()
    assert (neighbour_z[clouds.mask] == batch.atomic_numbers[clouds.neighbours[clouds.mask]]).all()
    moved = batch.to("cpu")
    assert isinstance(moved.inputs, PointClouds)


def test_relative_vectors_give_forces_by_autograd_and_no_gradient_through_empty_slots() -> None:
    rng = np.random.default_rng(5)
    representation = PointCloudRepresentation(cutoff_radius=3.0, dtype="float64")
    batch = representation.collate([representation(random_molecule_sample(rng, num_atoms=5)),
                                    representation(random_periodic_sample(rng, num_atoms=4))])
    batch.pos.requires_grad_(True)
    vectors = relative_vectors(batch)
    energy = (vectors.square().sum(-1) + 1e-12).sqrt().sum()  # a sum of pair distances, twice per pair
    (gradient,) = torch.autograd.grad(energy, batch.pos)
    assert torch.isfinite(gradient).all()
    # a pure pair potential: per structure the forces sum to zero (Newton's third law, images included)
    for structure in range(2):
        assert torch.allclose(gradient[batch.structure_index == structure].sum(0),
                              torch.zeros(3, dtype=torch.float64), atol=1e-10)


def test_oc20_centres_are_tagged_atoms_and_a_seeded_share_of_the_subsurface() -> None:
    rng = np.random.default_rng(0)
    frame, later_frame = _slab(rng), _slab(rng, shift=0.01)
    representation = PointCloudRepresentation(centres="oc20", subsurface_fraction=0.25, seed=1)
    centres = representation.centre_atoms(frame)
    tags = frame["tags"]
    assert set(np.flatnonzero(tags > 0)) <= set(centres.tolist())
    assert (tags[centres] == 0).sum() == 3  # round(0.25 x 12)
    np.testing.assert_array_equal(representation.centre_atoms(later_frame), centres)  # every frame alike
    draws = {tuple(PointCloudRepresentation(centres="oc20", seed=seed).centre_atoms(frame)) for seed in range(8)}
    assert len(draws) > 1
    item = representation(frame)
    assert item.neighbours.shape[0] == len(centres)
    batch = representation.collate([item])
    assert batch.inputs.centres.tolist() == centres.tolist()
    none = PointCloudRepresentation(centres="oc20", subsurface_fraction=0.0).centre_atoms(frame)
    assert (tags[none] > 0).all() and len(none) == 7
    with pytest.raises(ValueError, match="centres='oc20' needs per-atom 'tags'.*representation.centres=all"):
        representation.centre_atoms({k: v for k, v in frame.items() if k != "tags"})


def test_a_truncated_cloud_is_named_once_with_the_fix() -> None:
    rng = np.random.default_rng(2)
    representation = PointCloudRepresentation(cutoff_radius=5.0, max_neighbors=3)
    items = [representation(random_periodic_sample(rng, num_atoms=8)) for _ in range(2)]
    with pytest.warns(UserWarning, match="more than max_neighbors=3 neighbours.*raise representation.max_neighbors"):
        representation.collate(items)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        representation.collate(items)  # once per representation, not once per batch


@pytest.mark.parametrize("keywords, words", [
    ({"cutoff_radius": 0.0}, "cutoff_radius must be a positive number"),
    ({"max_neighbors": 0}, "max_neighbors must be a positive integer"),
    ({"centres": "surface"}, "centres must be one of all, oc20"),
    ({"subsurface_fraction": 1.5}, r"subsurface_fraction must be in \[0, 1\]"),
    ({"dtype": "float16"}, "dtype must be one of float32, float64"),
])
def test_bad_hyper_parameters_are_one_line_naming_them(keywords: dict, words: str) -> None:
    with pytest.raises(ValueError, match=f"point-cloud: {words}"):
        PointCloudRepresentation(**keywords)
