"""The ``dgl-graph`` representation of matsciml-dgl.

Edge sets are compared, edge by edge (sender, receiver, image), with a
brute-force search over explicitly enumerated periodic images. The neighbour
search itself is the core's (:mod:`matsciml.neighbors`, tested in
tests/test_neighbors.py). Every test is marked ``dgl``: on the pinned stack
they must run (and fail loudly if DGL is broken); the current-torch run
deselects them with ``-m "not dgl"``. So this module imports neither DGL nor
the plugin at collection time.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from matsciml.testing import random_molecule_sample, random_periodic_sample
# The edge-comparison helpers live with the core search's tests; here only the graphs are tested.
from test_neighbors import CUTOFF, assert_same_edges, brute_force_edges, edge_lengths, edge_set


# ----------------------------------------------------------------- neighbours
@pytest.mark.dgl
def test_plugin_neighbors_is_the_core_search() -> None:
    """matsciml_dgl.neighbors re-exports the core's search, so old imports keep working."""
    import matsciml.neighbors
    import matsciml_dgl.neighbors

    assert matsciml_dgl.neighbors.radius_graph is matsciml.neighbors.radius_graph
    assert matsciml_dgl.neighbors.nearest_per_receiver is matsciml.neighbors.nearest_per_receiver


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
