"""The ``dgl-graph`` representation of matsciml-dgl.

Edge sets are compared, edge by edge (sender, receiver, image), with a
brute-force search over explicitly enumerated periodic images. Every test is
marked ``dgl``: on the pinned stack they must run (and fail loudly if DGL or
vesin is broken); the current-torch run deselects them with ``-m "not dgl"``.
So this module imports neither DGL nor the plugin at collection time.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from matsciml.testing import brute_force_neighbors, random_molecule_sample, random_periodic_sample, random_rotation

CUTOFF = 6.0
# Edges whose length is this close to the cutoff may fall either side of it
# by rounding; they are the only differences allowed with the brute force.
BOUNDARY_TOLERANCE = 1e-8

Edge = tuple[int, int, tuple[int, int, int]]


# ----------------------------------------------------------------- reference
def brute_force_edges(pos: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray,
                      cutoff: float) -> dict[Edge, float]:
    """Every (sender, receiver, image) within a hair of ``cutoff``, with its length
    (from the core's brute-force reference, :func:`matsciml.testing.brute_force_neighbors`)."""
    senders, receivers, images, lengths = brute_force_neighbors(pos, cell, pbc, cutoff + 1e-6)
    return {(s, r, tuple(image)): length for s, r, image, length
            in zip(senders.tolist(), receivers.tolist(), images.tolist(), lengths.tolist())}


def edge_set(senders: np.ndarray, receivers: np.ndarray, images: np.ndarray) -> set[Edge]:
    return set(zip(senders.tolist(), receivers.tolist(), map(tuple, images.tolist())))


def assert_same_edges(found: set[Edge], reference: dict[Edge, float], cutoff: float = CUTOFF) -> None:
    """Equal edge sets, except for edges at the cutoff to rounding."""
    expected = {edge for edge, length in reference.items() if length < cutoff}
    missing = expected - found
    extra = found - set(reference)
    undecided = {edge for edge in (found ^ expected) - extra
                 if abs(reference[edge] - cutoff) > BOUNDARY_TOLERANCE}
    assert not extra, f"edges longer than the cutoff or invented: {sorted(extra)[:5]}"
    assert not undecided, (f"{len(missing)} edge(s) missing, e.g. "
                           f"{[(e, reference[e]) for e in sorted(missing)[:5]]}")


def edge_lengths(pos: np.ndarray, cell: np.ndarray | None, senders: np.ndarray, receivers: np.ndarray,
                 images: np.ndarray) -> np.ndarray:
    shift = images @ (np.zeros((3, 3)) if cell is None else cell)
    return np.linalg.norm(pos[senders] + shift - pos[receivers], axis=1)


def unwrap(sample: dict, rng: np.random.Generator, spread: int = 2) -> dict:
    """The same structure with atoms moved by random whole lattice vectors."""
    out = dict(sample)
    jumps = rng.integers(-spread, spread + 1, size=(len(sample["pos"]), 3))
    out["pos"] = sample["pos"] + jumps @ sample["cell"]
    return out


# ----------------------------------------------------------------- neighbours
PERIODIC_CASES = [
    # (cell length Å, skew, atoms): small skewed cells see their own images
    (2.5, 0.3, 1),
    (2.5, 0.25, 2),
    (2.8, 0.35, 3),
    (3.0, 0.3, 3),
    (4.0, 0.0, 4),
    (5.0, 0.3, 6),
    (7.5, 0.2, 10),
    (12.0, 0.35, 16),
]


@pytest.mark.dgl
@pytest.mark.parametrize("cell_length,skew,num_atoms", PERIODIC_CASES)
def test_periodic_edges_match_brute_force(cell_length: float, skew: float, num_atoms: int) -> None:
    from matsciml_dgl.neighbors import radius_graph

    rng = np.random.default_rng(int(cell_length * 100) + num_atoms)
    for _ in range(3):
        sample = unwrap(random_periodic_sample(rng, num_atoms, cell_length=cell_length, skew=skew,
                                               min_distance=0.8), rng)
        senders, receivers, images = radius_graph(sample["pos"], sample["cell"], sample["pbc"], CUTOFF)
        assert senders.dtype == receivers.dtype == images.dtype == np.int64
        assert images.shape == (len(senders), 3)
        found = edge_set(senders, receivers, images)
        assert len(found) == len(senders), "an edge is listed twice"
        assert_same_edges(found, brute_force_edges(sample["pos"], sample["cell"], sample["pbc"], CUTOFF))
        assert edge_lengths(sample["pos"], sample["cell"], senders, receivers, images).max() < CUTOFF
        # every edge comes with its reverse
        assert edge_set(receivers, senders, -images) == found
        if cell_length < CUTOFF / 2:
            own_images = (senders == receivers) & np.any(images != 0, axis=1)
            assert own_images.any(), "an atom in a small cell must see its own periodic images"
        assert not np.any((senders == receivers) & np.all(images == 0, axis=1)), "self-loop with zero image"


@pytest.mark.dgl
def test_single_atom_sees_only_its_images() -> None:
    from matsciml_dgl.neighbors import radius_graph

    rng = np.random.default_rng(7)
    sample = random_periodic_sample(rng, 1, cell_length=2.6, skew=0.3)
    senders, receivers, images = radius_graph(sample["pos"], sample["cell"], sample["pbc"], CUTOFF)
    reference = brute_force_edges(sample["pos"], sample["cell"], sample["pbc"], CUTOFF)
    assert len(senders) > 20 and np.all(senders == 0) and np.all(receivers == 0)
    assert_same_edges(edge_set(senders, receivers, images), reference)


@pytest.mark.dgl
@pytest.mark.parametrize("pbc", [(True, True, False), (True, False, True), (True, False, False)])
def test_mixed_pbc_matches_brute_force(pbc: tuple[bool, bool, bool]) -> None:
    """Slabs and wires, rotated, with atoms far outside the cell along the open
    directions and open-direction cell vectors that are normal, zero, tiny or
    parallel to a periodic one (none of which may matter)."""
    from matsciml_dgl.neighbors import radius_graph

    periodic = np.array(pbc)
    rng = np.random.default_rng(11)
    for trial in range(6):
        sample = random_periodic_sample(rng, 6, cell_length=float(rng.choice([2.7, 4.0, 7.0])), skew=0.3)
        rotation = random_rotation(rng)
        cell = sample["cell"] @ rotation.T
        pos = sample["pos"] @ rotation.T
        open_direction = np.flatnonzero(~periodic)[0]
        pos = pos + np.outer(rng.normal(scale=8.0, size=len(pos)), cell[open_direction])
        pos = pos - 30.0 * (trial % 2)  # all coordinates negative in half the trials
        reference = brute_force_edges(pos, cell, periodic, CUTOFF)
        first_periodic = cell[np.flatnonzero(periodic)[0]]
        for open_vector in (cell[open_direction], np.zeros(3), 1e-3 * cell[open_direction], first_periodic):
            given = cell.copy()
            given[~periodic] = open_vector
            senders, receivers, images = radius_graph(pos, given, periodic, CUTOFF)
            assert np.all(images[:, ~periodic] == 0), "an image along a non-periodic direction"
            assert_same_edges(edge_set(senders, receivers, images), reference)


@pytest.mark.dgl
def test_molecule_without_cell() -> None:
    from matsciml_dgl.neighbors import radius_graph

    rng = np.random.default_rng(3)
    for _ in range(5):
        molecule = random_molecule_sample(rng, 12)
        assert "cell" not in molecule
        pos = molecule["pos"] - 50.0
        reference = brute_force_edges(pos, None, molecule["pbc"], 2.5)
        senders, receivers, images = radius_graph(pos, None, molecule["pbc"], 2.5)
        assert np.all(images == 0)
        assert_same_edges(edge_set(senders, receivers, images), reference, cutoff=2.5)
        # a zero cell with no periodic direction is the same molecule
        again = radius_graph(pos, np.zeros((3, 3)), molecule["pbc"], 2.5)
        assert edge_set(*again) == edge_set(senders, receivers, images)


@pytest.mark.dgl
def test_max_neighbors_keeps_the_nearest() -> None:
    from matsciml_dgl.neighbors import radius_graph

    rng = np.random.default_rng(5)
    sample = unwrap(random_periodic_sample(rng, 10, cell_length=4.5, skew=0.3), rng)
    reference = brute_force_edges(sample["pos"], sample["cell"], sample["pbc"], CUTOFF)
    for max_neighbors in (1, 7, 40, 10_000):
        senders, receivers, images = radius_graph(sample["pos"], sample["cell"], sample["pbc"], CUTOFF,
                                                  max_neighbors=max_neighbors)
        lengths = edge_lengths(sample["pos"], sample["cell"], senders, receivers, images)
        for atom in range(10):
            everything = np.sort([length for (s, r, _), length in reference.items() if r == atom])
            kept = np.sort(lengths[receivers == atom])
            assert len(kept) == min(max_neighbors, len(everything))
            np.testing.assert_allclose(kept, everything[:len(kept)], atol=1e-9)
        assert np.all(np.diff(receivers) >= 0), "edges are sorted by receiver"
        assert edge_set(senders, receivers, images) <= set(reference)


@pytest.mark.dgl
def test_bad_inputs_raise_instead_of_crashing() -> None:
    """vesin kills the process (SIGFPE) on some degenerate boxes; radius_graph must refuse them."""
    from matsciml_dgl.neighbors import radius_graph

    pos = np.random.default_rng(0).uniform(size=(4, 3))
    with pytest.raises(ValueError, match="zero or"):
        radius_graph(pos, np.zeros((3, 3)), [True, False, False], CUTOFF)
    with pytest.raises(ValueError, match="zero or"):
        radius_graph(pos, np.array([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 3.0]]), [True, True, True], CUTOFF)
    with pytest.raises(ValueError, match="no cell"):
        radius_graph(pos, None, [True, True, True], CUTOFF)
    with pytest.raises(ValueError, match="cutoff_radius"):
        radius_graph(pos, None, None, 0.0)
    with pytest.raises(ValueError, match="max_neighbors"):
        radius_graph(pos, None, None, CUTOFF, max_neighbors=0)


# ------------------------------------------------------------ representation
@pytest.mark.dgl
def test_graph_of_one_sample() -> None:
    import torch
    from matsciml_dgl.representation import DGLGraphRepresentation, GraphItem

    rng = np.random.default_rng(9)
    sample = random_periodic_sample(rng, 5, cell_length=3.0, skew=0.3)
    for dtype, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
        item = DGLGraphRepresentation(cutoff_radius=CUTOFF, dtype=dtype)(sample)
        assert isinstance(item, GraphItem) and item.sample is sample
        graph = item.graph
        assert graph.num_nodes() == 5
        assert graph.ndata["atomic_numbers"].dtype == torch.int64
        assert torch.equal(graph.ndata["atomic_numbers"], torch.from_numpy(sample["atomic_numbers"]))
        image = graph.edata["image"]
        assert image.dtype == torch.int64 and image.shape == (graph.num_edges(), 3)
        shift = graph.edata["shift"]
        assert shift.dtype == torch_dtype and shift.shape == (graph.num_edges(), 3)
        np.testing.assert_allclose(shift.double().numpy(), image.numpy() @ sample["cell"], atol=1e-5)
        src, dst = graph.edges()
        assert_same_edges(edge_set(src.numpy(), dst.numpy(), image.numpy()),
                          brute_force_edges(sample["pos"], sample["cell"], sample["pbc"], CUTOFF))


@pytest.mark.dgl
def test_collate_three_samples() -> None:
    import dgl
    import torch
    from matsciml.batch import Batch
    from matsciml_dgl.representation import DGLGraphRepresentation, edge_vectors

    rng = np.random.default_rng(13)
    samples = [
        random_periodic_sample(rng, 4, cell_length=2.8, skew=0.3),
        random_periodic_sample(rng, 9, cell_length=6.0, skew=0.2),
        random_molecule_sample(rng, 7),
    ]
    samples[2]["cell"] = np.zeros((3, 3))
    for index, sample in enumerate(samples):
        sample["energy"] = np.asarray(float(index))
        sample["forces"] = rng.normal(size=(len(sample["pos"]), 3))
    representation = DGLGraphRepresentation(cutoff_radius=CUTOFF)
    batch = representation.collate([representation(sample) for sample in samples])

    assert isinstance(batch, Batch) and isinstance(batch.inputs, dgl.DGLGraph)
    graph = batch.inputs
    assert batch.num_atoms.tolist() == [4, 9, 7]
    assert graph.batch_num_nodes().tolist() == [4, 9, 7]
    assert batch.structure_index.tolist() == [0] * 4 + [1] * 9 + [2] * 7
    assert batch.pos.shape == (20, 3) and batch.pos.dtype == torch.float32
    assert batch.targets["energy"].shape == (3,)
    assert batch.targets["forces"].shape == (20, 3)
    np.testing.assert_allclose(batch.targets["forces"].numpy(),
                               np.concatenate([s["forces"] for s in samples]), atol=1e-6)
    assert torch.equal(graph.ndata["atomic_numbers"], batch.atomic_numbers)

    src, dst = graph.edges()
    image = graph.edata["image"].numpy()
    lengths = edge_vectors(batch).norm(dim=1).double().numpy()
    owner = batch.structure_index[src]
    assert torch.equal(owner, batch.structure_index[dst]), "an edge joins two structures"
    offsets = np.concatenate([[0], np.cumsum(batch.num_atoms.numpy())[:-1]])
    edge_counts = graph.batch_num_edges().tolist()
    for index, sample in enumerate(samples):
        mine = (owner == index).numpy()
        assert mine.sum() == edge_counts[index]
        local_src = src.numpy()[mine] - offsets[index]
        local_dst = dst.numpy()[mine] - offsets[index]
        reference = brute_force_edges(sample["pos"], sample.get("cell"), sample["pbc"], CUTOFF)
        found = list(zip(local_src.tolist(), local_dst.tolist(), map(tuple, image[mine].tolist())))
        assert_same_edges(set(found), reference)
        expected_lengths = np.array([reference[edge] for edge in found])
        np.testing.assert_allclose(lengths[mine], expected_lengths, atol=1e-4)

    # the same batched graph as dgl.batch, and dgl.unbatch gives the samples' graphs back
    graphs = [representation(sample).graph for sample in samples]
    reference_batch = dgl.batch(graphs)
    assert torch.equal(graph.batch_num_nodes(), reference_batch.batch_num_nodes())
    assert torch.equal(graph.batch_num_edges(), reference_batch.batch_num_edges())
    for mine, theirs in zip(graph.edges(), reference_batch.edges()):
        assert torch.equal(mine, theirs)
    for key in ("atomic_numbers",):
        assert torch.equal(graph.ndata[key], reference_batch.ndata[key])
    for key in ("shift", "image"):
        assert torch.equal(graph.edata[key], reference_batch.edata[key])
    for part, original in zip(dgl.unbatch(graph), graphs):
        assert part.num_nodes() == original.num_nodes()
        for mine, theirs in zip(part.edges(), original.edges()):
            assert torch.equal(mine, theirs)
        assert torch.equal(part.edata["shift"], original.edata["shift"])

    # forces flow from edge lengths to positions
    batch.pos.requires_grad_(True)
    edge_vectors(batch).norm(dim=1).sum().backward()
    assert batch.pos.grad is not None and torch.isfinite(batch.pos.grad).all()


@pytest.mark.dgl
def test_batch_with_an_edgeless_structure() -> None:
    import dgl
    import torch
    from matsciml_dgl.representation import DGLGraphRepresentation

    rng = np.random.default_rng(17)
    lonely = {"atomic_numbers": np.array([1, 8]), "pos": np.array([[0.0, 0, 0], [20.0, 0, 0]]),
              "pbc": np.zeros(3, dtype=bool)}
    representation = DGLGraphRepresentation(cutoff_radius=CUTOFF)
    items = [representation(lonely), representation(random_periodic_sample(rng, 3, cell_length=4.0))]
    assert items[0].graph.num_edges() == 0
    batch = representation.collate(items)
    reference = dgl.batch([item.graph for item in items])
    assert batch.inputs.batch_num_edges().tolist() == [0, reference.num_edges()]
    for mine, theirs in zip(batch.inputs.edges(), reference.edges()):
        assert torch.equal(mine, theirs)


@pytest.mark.dgl
def test_representation_rejects_bad_options() -> None:
    from matsciml_dgl.representation import DGLGraphRepresentation

    with pytest.raises(ValueError, match="dtype"):
        DGLGraphRepresentation(dtype="float16")
    with pytest.raises(ValueError, match="max_neighbors"):
        DGLGraphRepresentation(max_neighbors=-3)
    with pytest.raises(ValueError, match="cutoff_radius"):
        DGLGraphRepresentation(cutoff_radius=-1.0)


# ------------------------------------------------------------------ plugin
@pytest.mark.dgl
def test_spec_is_discoverable_and_builds() -> None:
    """Listed by the CLI from matsciml-dgl, and built through the registry."""
    from matsciml.interfaces import Representation
    from matsciml.registry import Registry

    done = subprocess.run([sys.executable, "-m", "matsciml", "representations", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert listed["dgl-graph"]["distribution"] == "matsciml-dgl"
    assert listed["dgl-graph"]["factory"] == "matsciml_dgl.representation:DGLGraphRepresentation"

    spec = Registry().representation("dgl-graph")
    assert dict(spec.defaults) == {"cutoff_radius": 6.0, "max_neighbors": None, "dtype": "float32"}
    built = spec.build(cutoff_radius=4.0)
    assert isinstance(built, Representation) and built.name == "dgl-graph"
    assert built.cutoff_radius == 4.0


@pytest.mark.dgl
def test_plugin_module_imports_neither_dgl_nor_torch() -> None:
    code = ("import sys, matsciml_dgl.plugin as p; specs = p.matsciml_representations(); "
            "print(sorted(m for m in ('dgl', 'torch', 'vesin') if m in sys.modules), len(specs))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "1"]


# -------------------------------------------------------- a shipped structure
@pytest.mark.dgl
def test_every_frame_of_the_shipped_s2ef_devset() -> None:
    from matsciml.datasets import open_devset
    from matsciml_dgl.representation import DGLGraphRepresentation

    dataset = open_devset("slab-emt-s2ef")
    representation = DGLGraphRepresentation(cutoff_radius=CUTOFF, dtype="float64")
    for index in range(len(dataset)):
        sample = dataset[index]
        graph = representation(sample).graph
        src, dst = (edge.numpy() for edge in graph.edges())
        image = graph.edata["image"].numpy()
        assert graph.num_nodes() == len(sample["atomic_numbers"])
        assert graph.num_edges() > 0
        lengths = edge_lengths(sample["pos"], sample["cell"], src, dst, image)
        assert lengths.max() < CUTOFF, f"sample {index}: an edge of {lengths.max():.6f} Å"
        if index % 25 == 0:
            reference = brute_force_edges(sample["pos"], sample["cell"], sample["pbc"], CUTOFF)
            assert_same_edges(edge_set(src, dst, image), reference)
    batch = representation.collate([representation(dataset[i]) for i in range(8)])
    assert batch.targets["forces"].shape == (int(batch.num_atoms.sum()), 3)
    assert "tags" in batch.extras
