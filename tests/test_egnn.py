"""The E(n)-GNN plugin (matsciml-egnn): its contract with the registry and its physics.

Physics is checked at model level in float64 (``model.double()``) on random
periodic crystals, slabs (periodic in two directions) and molecules, with a
scalar "energy" ``E = sum_i w . h_i`` read out of the per-atom embeddings by
a random fixed vector ``w``:

- embeddings invariant under rotations (the cell rotated too), reflections,
  translations and wrapping atoms into the cell; permuted with the atoms;
- forces ``-dE/dpos`` by autograd rotate with the structure and equal central
  finite differences of E;
- a periodic structure written as a 2x1x1 or 2x2x1 supercell has
  ``num_cells`` times the energy, and each atom the same embedding;
- the energy is continuous as an atom crosses the cutoff;
- the split first layer of phi_e (two node projections gathered on edges)
  equals a naive edge-sized linear layer over ``[h_i, h_j, d_ij^2]``, in
  values, forces, and the second-order gradients a force loss needs.

Graphs are built here by a brute-force (all pairs x all images) radius search
in float64 that follows the ``dgl-graph`` contract of matsciml-dgl: edges
j -> i (src = sender), ``edata["shift"]`` the Cartesian image offset of j, so
``r_ij = pos[src] + shift - pos[dst]``. The tests thus do not depend on the
representation's neighbour search, only on the contract.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch

# Collected in the current-torch environment too, where DGL cannot load;
# tests/test_environment.py fails the pinned run if DGL does not import there.
dgl = pytest.importorskip("dgl", reason="DGL is not installed (the current-torch environment)")

from matsciml.batch import Batch, collate_structures
from matsciml.interfaces import Backbone, BackboneOutput
from matsciml.testing import (
    brute_force_neighbors,
    random_molecule_sample,
    random_periodic_sample,
    random_rotation,
    rotate_sample,
    translate_sample,
)
from matsciml_egnn.model import EGNN

pytestmark = pytest.mark.dgl

CUTOFF = 6.0  # Å, the dgl-graph default
PAPER_PARAMETERS = 72_000  # the model size the defaults aim at, about 72k parameters
DEFAULT_PARAMETERS = 118 * 64 + 3 * (6 * 64 * 64 + 6 * 64 + 1 + 64 * 15)  # 85,315 (16 radial functions)


# ------------------------------------------------------------------ helpers
def radius_graph(sample: Mapping[str, Any], cutoff: float = CUTOFF) -> dgl.DGLGraph:
    """All pairs closer than ``cutoff`` (Å), periodic images included, no self-loops,
    from the core's brute-force reference (no dependency on matsciml-dgl)."""
    pbc = np.asarray(sample.get("pbc", [False] * 3), dtype=bool)
    cell = np.asarray(sample["cell"], dtype=np.float64) if "cell" in sample else None
    senders, receivers, images, _ = brute_force_neighbors(sample["pos"], cell, pbc, cutoff)
    shift = images @ (cell if cell is not None else np.zeros((3, 3)))
    graph = dgl.graph((torch.from_numpy(senders), torch.from_numpy(receivers)), num_nodes=len(sample["pos"]))
    graph.edata["shift"] = torch.from_numpy(shift.astype(np.float64))
    graph.ndata["atomic_numbers"] = torch.from_numpy(np.asarray(sample["atomic_numbers"], dtype=np.int64))
    return graph


def make_batch(samples: Sequence[Mapping[str, Any]], cutoff: float = CUTOFF) -> Batch:
    """A float64 batch with the dgl-graph contract, positions ready for autograd."""
    graph = dgl.batch([radius_graph(sample, cutoff) for sample in samples])
    batch = collate_structures(list(samples), inputs=graph, dtype=torch.float64)
    batch.pos.requires_grad_(True)
    return batch


def make_model(seed: int = 0, **hyper: Any) -> EGNN:
    torch.manual_seed(seed)
    return EGNN(**hyper).double()


def readout(embedding_dim: int, seed: int = 1) -> torch.Tensor:
    """A fixed random linear readout w: E = sum_i w . h_i."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(embedding_dim, generator=generator, dtype=torch.float64)


def energy_and_forces(model: EGNN, sample: Mapping[str, Any], cutoff: float = CUTOFF
                      ) -> tuple[float, np.ndarray, np.ndarray]:
    """(E, forces [N, 3], embeddings [N, H]) of one structure."""
    batch = make_batch([sample], cutoff)
    embeddings = model(batch).atom_features
    energy = embeddings @ readout(model.embedding_dim)
    total = energy.sum()
    (gradient,) = torch.autograd.grad(total, batch.pos)
    return float(total), -gradient.numpy(), embeddings.detach().numpy()


def periodic(rng: np.random.Generator) -> dict[str, Any]:
    return random_periodic_sample(rng, num_atoms=8)


def slab(rng: np.random.Generator) -> dict[str, Any]:
    sample = random_periodic_sample(rng, num_atoms=8)
    sample["pbc"] = np.array([True, True, False])
    return sample


def molecule(rng: np.random.Generator) -> dict[str, Any]:
    return random_molecule_sample(rng, num_atoms=9)


STRUCTURES = {"periodic": periodic, "slab": slab, "molecule": molecule}


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-9) -> None:
    """Equal to ``rtol`` relative to the largest entry (float64 round-off level)."""
    scale = max(float(np.abs(expected).max()), 1e-12)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


# ------------------------------------------------------- plugin and registry
def test_spec_defaults_equal_constructor_defaults() -> None:
    from matsciml_egnn.plugin import matsciml_models

    (spec,) = matsciml_models()
    parameters = inspect.signature(EGNN.__init__).parameters
    signature_defaults = {name: p.default for name, p in parameters.items() if name != "self"}
    assert dict(spec.defaults) == signature_defaults
    assert set(spec.param_help) == set(signature_defaults)
    assert spec.representation == EGNN.representation == "dgl-graph"
    assert spec.representation_distribution == "matsciml-dgl"


def test_declared_activations_are_the_shared_table() -> None:
    """egnn accepts every activation of matsciml.nn, and its spec says so."""
    from matsciml.nn import ACTIVATIONS
    from matsciml_egnn.plugin import matsciml_models

    (spec,) = matsciml_models()
    assert spec.param_choices["activation"] == tuple(ACTIVATIONS)
    for name in ACTIVATIONS:
        EGNN(activation=name, num_layers=1)


def test_registry_builds_egnn_from_its_distribution() -> None:
    from matsciml.registry import Registry

    spec = Registry().model("egnn")
    assert spec.distribution == "matsciml-egnn"
    model = spec.build(num_layers=2)
    assert isinstance(model, EGNN) and isinstance(model, Backbone)
    assert len(model.layers) == 2 and model.embedding_dim == 64
    assert model.structure_embedding_dim is None  # per-atom features only


def test_default_parameter_count() -> None:
    count = sum(p.numel() for p in EGNN().parameters())
    print(f"EGNN default parameters: {count}")
    assert count == DEFAULT_PARAMETERS == 85_315
    assert 0.8 * PAPER_PARAMETERS <= count <= 1.2 * PAPER_PARAMETERS


def test_rejects_unknown_activation_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="unknown activation 'swish'.*silu"):
        EGNN(activation="swish")
    with pytest.raises(ValueError, match="num_layers"):
        EGNN(num_layers=0)
    with pytest.raises(ValueError, match="cutoff_radius"):
        EGNN(cutoff_radius=0.0)


def test_float32_forward_and_backward_on_default_model() -> None:
    rng = np.random.default_rng(3)
    samples = [periodic(rng), molecule(rng)]
    graph = dgl.batch([radius_graph(s) for s in samples])
    graph.edata["shift"] = graph.edata["shift"].float()
    batch = collate_structures(samples, inputs=graph)  # float32 positions
    batch.pos.requires_grad_(True)
    torch.manual_seed(0)
    output = EGNN()(batch)
    assert isinstance(output, BackboneOutput) and output.structure_features is None
    out = output.atom_features
    assert out.shape == (17, 64) and out.dtype == torch.float32
    out.sum().backward()
    assert batch.pos.grad is not None and torch.isfinite(batch.pos.grad).all()


# ------------------------------------------------------------- the layer
def naive_forward(model: EGNN, batch: Batch) -> torch.Tensor:
    """The model written the textbook way: phi_e's first layer as one edge-sized
    matmul over ``[h_i, h_j, s_ij]`` and aggregation by ``index_add``."""
    graph = batch.inputs
    src, dst = (t.long() for t in graph.edges())
    vectors = batch.pos[src] + graph.edata["shift"] - batch.pos[dst]
    squared = (vectors * vectors).sum(-1)
    envelope = model.cutoff(squared.sqrt())[:, None]
    if model.radial_basis is not None:
        feature = model.radial_basis(squared.sqrt())  # [num_edges, num_radial]
    else:
        feature = (squared / model.cutoff_radius ** 2)[:, None]  # the paper's input, [num_edges, 1]
    h = model.embedding(batch.atomic_numbers)
    for layer in model.layers:
        weight, bias = layer.concatenated_edge_weight()
        pairs = torch.cat([h[dst], h[src], feature], dim=1)  # [num_edges, 2H + K]
        message = layer.activation(layer.edge_out(layer.activation(pairs @ weight.T + bias)))
        gate = torch.sigmoid(layer.gate(message)) if layer.gate is not None else 1.0
        aggregate = torch.zeros_like(h).index_add(0, dst, message * gate * envelope)
        update = layer.node_mlp(torch.cat([h, aggregate], dim=1))
        h = layer.norm(h + update if layer.residual else update)
    return h


@pytest.mark.parametrize("hyper", [
    {},
    {"attention": False, "residual": False, "activation": "relu"},
    {"layer_norm": True, "hidden_dim": 16, "cutoff_radius": 5.0},
    {"num_radial": 0},
])
def test_node_projection_layer_equals_naive_concatenation(hyper: dict[str, Any]) -> None:
    """Values, forces and second-order parameter gradients (the ones a force
    loss needs) agree with the naive implementation."""
    rng = np.random.default_rng(11)
    batch = make_batch([periodic(rng), molecule(rng), slab(rng)])
    model = make_model(**hyper)
    w = readout(model.embedding_dim)
    results = []
    for forward in (lambda b: model(b).atom_features, lambda b: naive_forward(model, b)):
        model.zero_grad()
        embeddings = forward(batch)
        energy = (embeddings @ w).sum()
        (gradient,) = torch.autograd.grad(energy, batch.pos, create_graph=True)
        loss = energy ** 2 + (gradient ** 2).sum()
        loss.backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        results.append((embeddings.detach(), gradient.detach(), grads))
    (h_fast, f_fast, g_fast), (h_naive, f_naive, g_naive) = results
    assert_close(h_fast.numpy(), h_naive.numpy())
    assert_close(f_fast.numpy(), f_naive.numpy())
    for fast, naive in zip(g_fast, g_naive):
        assert_close(fast.numpy(), naive.numpy(), rtol=1e-8)


def test_no_linear_layer_is_an_edge_sized_matmul_over_node_pairs() -> None:
    """Per-edge linear layers take at most H features; the 2H-wide input of
    phi_e never exists per edge."""
    rng = np.random.default_rng(5)
    batch = make_batch([periodic(rng)])
    model = make_model()
    num_edges = batch.inputs.num_edges()
    hidden = model.embedding_dim
    calls: list[tuple[int, int]] = []
    hooks = [module.register_forward_hook(lambda m, args, out: calls.append(tuple(args[0].shape)))
             for module in model.modules() if isinstance(module, torch.nn.Linear)]
    try:
        model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    edge_calls = [shape for shape in calls if shape[0] == num_edges]
    assert num_edges > 20 * batch.pos.shape[0]  # rows tell edges from nodes apart
    assert edge_calls and all(width <= hidden for _, width in edge_calls)
    assert max(width for _, width in calls) == 2 * hidden  # phi_h's [h_i, m_i], per node


def test_same_embeddings_from_the_dgl_graph_representation() -> None:
    """Through matsciml-dgl's own ``dgl-graph`` batches (its default float32
    positions and shifts), the model sees the structures the brute-force
    graphs describe, to float32 round-off."""
    from matsciml.registry import Registry

    rng = np.random.default_rng(4)
    samples = [periodic(rng), molecule(rng), slab(rng)]
    representation = Registry().representation("dgl-graph").build()
    batch = representation.collate([representation(s) for s in samples])
    batch.pos = batch.pos.double()
    model = make_model()
    assert_close(model(batch).atom_features.detach().numpy(),
                 model(make_batch(samples)).atom_features.detach().numpy(), rtol=1e-5)


# -------------------------------------------------------------- symmetries
def test_passes_the_conformance_kit() -> None:
    """Output contract, finite outputs and gradients, rotation/translation/permutation invariance on
    periodic, slab and molecular structures, forces against finite differences, supercell
    extensivity, batch isolation and the state-dict round trip: the core's shared kit."""
    from matsciml.testing import check_backbone

    check_backbone("egnn", params={"hidden_dim": 16, "num_layers": 2}).raise_for_failures()


@pytest.mark.parametrize("kind", sorted(STRUCTURES))
def test_invariant_under_reflections(kind: str) -> None:
    """E(3) includes improper rotations; the kit checks proper ones."""
    rng = np.random.default_rng(21)
    sample = STRUCTURES[kind](rng)
    model = make_model()
    energy, forces, embeddings = energy_and_forces(model, sample)
    reflection = -random_rotation(rng)
    moved = translate_sample(rotate_sample(sample, reflection), rng.normal(scale=3.0, size=3))
    energy_moved, forces_moved, embeddings_moved = energy_and_forces(model, moved)
    assert abs(energy_moved - energy) <= 1e-5 * abs(energy)
    assert_close(embeddings_moved, embeddings)
    assert_close(forces_moved, forces @ reflection.T)


@pytest.mark.parametrize("kind", ["periodic", "slab"])
def test_invariant_when_atoms_are_moved_by_lattice_vectors(kind: str) -> None:
    rng = np.random.default_rng(23)
    sample = STRUCTURES[kind](rng)
    model = make_model()
    energy, forces, embeddings = energy_and_forces(model, sample)
    moved = dict(sample)
    jumps = rng.integers(-2, 3, size=(len(sample["pos"]), 3)) * sample["pbc"]
    moved["pos"] = sample["pos"] + jumps @ sample["cell"]
    energy_moved, forces_moved, embeddings_moved = energy_and_forces(model, moved)
    assert abs(energy_moved - energy) <= 1e-5 * abs(energy)
    assert_close(embeddings_moved, embeddings)
    assert_close(forces_moved, forces)


# ------------------------------------------------------------ smoothness
def test_energy_is_continuous_and_flat_where_a_pair_crosses_the_cutoff() -> None:
    direction = np.array([0.48, -0.6, 0.64])
    model = make_model()

    def dimer(distance: float) -> dict[str, Any]:
        return {"atomic_numbers": np.array([6, 8]), "pos": np.stack([np.zeros(3), distance * direction]),
                "pbc": np.array([False, False, False])}

    apart, _, _ = energy_and_forces(model, dimer(CUTOFF + 1e-6))  # no edge at all
    near, forces_near, _ = energy_and_forces(model, dimer(CUTOFF - 1e-6))
    _, forces_mid, _ = energy_and_forces(model, dimer(CUTOFF / 2))
    assert abs(near - apart) <= 1e-10 * abs(apart)
    # The envelope's slope falls linearly to zero at the cutoff: O(1e-6) here.
    assert np.abs(forces_near).max() <= 1e-5 * np.abs(forces_mid).max()
    assert np.abs(forces_mid).max() > 1e-4


def test_model_cutoff_below_graph_cutoff_ignores_the_extra_edges() -> None:
    rng = np.random.default_rng(32)
    sample = periodic(rng)
    model = make_model(cutoff_radius=4.0)
    wide = energy_and_forces(model, sample, cutoff=CUTOFF)
    tight = energy_and_forces(model, sample, cutoff=4.0)
    for a, b in zip(wide, tight):
        assert_close(np.asarray(a), np.asarray(b))
