"""The core's periodic neighbour search (:mod:`matsciml.neighbors`, vesin).

Edge sets are compared, edge by edge (sender, receiver, image), with the
brute-force search over explicitly enumerated periodic images of
:mod:`matsciml.testing`. Nothing here needs DGL: these tests run on the
pinned stack (vesin 0.4.x) and on current torch (the newest vesin) alike.
The edge-comparison helpers are also used by tests/test_dgl_representation.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from matsciml.neighbors import degenerate_lattice, neighbor_pairs, radius_graph
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


# ----------------------------------------------------------------- radius graphs
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


@pytest.mark.parametrize("cell_length,skew,num_atoms", PERIODIC_CASES)
def test_periodic_edges_match_brute_force(cell_length: float, skew: float, num_atoms: int) -> None:
    """Skewed cells, atoms unwrapped by whole lattice vectors: the edges of brute force, each once, both ways."""
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


def test_single_atom_sees_only_its_images() -> None:
    """One atom in a cell smaller than the cutoff: all edges join it to its own images."""
    rng = np.random.default_rng(7)
    sample = random_periodic_sample(rng, 1, cell_length=2.6, skew=0.3)
    senders, receivers, images = radius_graph(sample["pos"], sample["cell"], sample["pbc"], CUTOFF)
    reference = brute_force_edges(sample["pos"], sample["cell"], sample["pbc"], CUTOFF)
    assert len(senders) > 20 and np.all(senders == 0) and np.all(receivers == 0)
    assert_same_edges(edge_set(senders, receivers, images), reference)


@pytest.mark.parametrize("pbc", [(True, True, False), (True, False, True), (True, False, False)])
def test_mixed_pbc_matches_brute_force(pbc: tuple[bool, bool, bool]) -> None:
    """Slabs and wires, rotated, with atoms far outside the cell along the open
    directions and open-direction cell vectors that are normal, zero, tiny or
    parallel to a periodic one (none of which may matter)."""
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


def test_molecule_without_cell() -> None:
    """A molecule: no images; a zero or arbitrary cell with no periodic direction changes nothing."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        molecule = random_molecule_sample(rng, 12)
        assert "cell" not in molecule
        pos = molecule["pos"] - 50.0
        reference = brute_force_edges(pos, None, molecule["pbc"], 2.5)
        senders, receivers, images = radius_graph(pos, None, molecule["pbc"], 2.5)
        assert np.all(images == 0)
        assert_same_edges(edge_set(senders, receivers, images), reference, cutoff=2.5)
        for cell in (np.zeros((3, 3)), np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1e-3]])):
            again = radius_graph(pos, cell, molecule["pbc"], 2.5)
            assert edge_set(*again) == edge_set(senders, receivers, images)


def test_max_neighbors_keeps_the_nearest() -> None:
    """max_neighbors keeps the nearest senders of each receiver, sorted by receiver."""
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


def test_bad_inputs_raise_instead_of_crashing() -> None:
    """vesin kills the process (SIGFPE) on some degenerate boxes; radius_graph must refuse them."""
    pos = np.random.default_rng(0).uniform(size=(4, 3))
    with pytest.raises(ValueError, match="zero or"):
        radius_graph(pos, np.zeros((3, 3)), [True, False, False], CUTOFF)
    with pytest.raises(ValueError, match="zero or"):
        radius_graph(pos, np.array([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 3.0]]), [True, True, True], CUTOFF)
    with pytest.raises(ValueError, match="zero or"):
        neighbor_pairs(pos, np.diag([5.0, 5.0, 0.0]), [True, True, True], 0.1)
    with pytest.raises(ValueError, match="no cell"):
        radius_graph(pos, None, [True, True, True], CUTOFF)
    with pytest.raises(ValueError, match="cutoff_radius"):
        radius_graph(pos, None, None, 0.0)
    with pytest.raises(ValueError, match="max_neighbors"):
        radius_graph(pos, None, None, CUTOFF, max_neighbors=0)
    with pytest.raises(ValueError, match="NaN"):
        neighbor_pairs(np.full((2, 3), np.nan), None, None, 0.1)


# ----------------------------------------------------------------- small cutoffs, half lists
def crowded_sample(rng: np.random.Generator, num_atoms: int, cell_length: float) -> dict:
    """Uniformly random atoms (no minimum distance) in a skewed cell, plus a duplicate and a
    pair straddling the cell boundary, so that some pairs are closer than a tenth of an Å."""
    cell = np.eye(3) * cell_length + rng.uniform(-0.3, 0.3, size=(3, 3)) * cell_length
    fractional = rng.uniform(size=(num_atoms, 3))
    fractional[1] = fractional[0]  # two atoms at one position
    fractional[3] = fractional[2]
    fractional[2, 0], fractional[3, 0] = 0.002, 0.997  # near each other across the boundary
    return {"pos": fractional @ cell, "cell": cell, "pbc": np.array([True, True, True])}


@pytest.mark.parametrize("cutoff", [0.05, 0.1, 0.3, 1.0, 2.0])
def test_small_cutoffs_match_brute_force(cutoff: float) -> None:
    """Cutoffs below the atoms' mean spacing are searched with a larger radius and trimmed:
    the result is still exactly the brute-force edge set, for periodic, slab and open structures."""
    rng = np.random.default_rng(int(cutoff * 1000))
    for pbc in ((True, True, True), (True, True, False), (False, False, False)):
        for _ in range(3):
            sample = unwrap(crowded_sample(rng, 40, cell_length=float(rng.choice([4.0, 9.0]))), rng, spread=1)
            periodic = np.array(pbc)
            reference = brute_force_edges(sample["pos"], sample["cell"], periodic, cutoff)
            senders, receivers, images = radius_graph(sample["pos"], sample["cell"], periodic, cutoff)
            assert_same_edges(edge_set(senders, receivers, images), reference, cutoff=cutoff)
            assert edge_lengths(sample["pos"], sample["cell"], senders, receivers, images).max(initial=0) < cutoff
            if periodic.all():  # unwrapped by whole lattice vectors, atom 1 sits on an image of atom 0
                assert (0, 1) in set(zip(senders.tolist(), receivers.tolist())), "the duplicate atom is missed"


def test_dilute_structures_match_brute_force() -> None:
    """Few atoms in a large cell (search radius far above the cutoff): still exactly brute force."""
    rng = np.random.default_rng(23)
    for num_atoms, cell_length in ((1, 30.0), (2, 40.0), (5, 25.0)):
        sample = random_periodic_sample(rng, num_atoms, cell_length=cell_length, skew=0.2, min_distance=1.0)
        for cutoff in (0.1, CUTOFF, 13.0):
            reference = brute_force_edges(sample["pos"], sample["cell"], sample["pbc"], cutoff)
            found = edge_set(*radius_graph(sample["pos"], sample["cell"], sample["pbc"], cutoff))
            assert_same_edges(found, reference, cutoff=cutoff)


def test_neighbor_pairs_is_the_half_of_radius_graph() -> None:
    """neighbor_pairs lists each pair once with its true length; mirrored, it is radius_graph."""
    rng = np.random.default_rng(29)
    for cutoff in (0.1, 3.0):
        sample = unwrap(crowded_sample(rng, 30, cell_length=5.0), rng)
        pairs = neighbor_pairs(sample["pos"], sample["cell"], sample["pbc"], cutoff)
        assert pairs.first.dtype == pairs.second.dtype == pairs.images.dtype == np.int64
        assert pairs.distances.dtype == np.float64
        # vector of a pair: pos[second] + image @ cell - pos[first]
        np.testing.assert_allclose(pairs.distances, edge_lengths(sample["pos"], sample["cell"], pairs.second,
                                                                 pairs.first, pairs.images), atol=1e-9)
        assert np.all(pairs.distances < cutoff)
        half = edge_set(pairs.second, pairs.first, pairs.images)
        mirror = edge_set(pairs.first, pairs.second, -pairs.images)
        assert not half & mirror, "a pair is listed in both directions"
        assert half | mirror == edge_set(*radius_graph(sample["pos"], sample["cell"], sample["pbc"], cutoff))


def test_neighbor_pairs_of_a_single_atom_and_an_empty_structure() -> None:
    """One atom has no pairs unless its own images are within reach; zero atoms have none."""
    lone = neighbor_pairs(np.zeros((1, 3)), None, None, 0.1)
    assert len(lone.first) == len(lone.distances) == 0 and lone.images.shape == (0, 3)
    own = neighbor_pairs(np.zeros((1, 3)), np.diag([0.08, 5.0, 5.0]), [True, True, True], 0.1)
    assert own.first.tolist() == own.second.tolist() == [0]
    assert np.abs(own.images).tolist() == [[1, 0, 0]]
    np.testing.assert_allclose(own.distances, [0.08])
    empty = neighbor_pairs(np.zeros((0, 3)), np.eye(3) * 4.0, [True, True, True], 1.0)
    assert len(empty.first) == 0


# ----------------------------------------------------------------- degenerate lattices
@pytest.mark.parametrize("vectors, degenerate", [
    (np.eye(3) * 4.0, False),
    (np.array([[4.0, 0, 0], [3.0, 0.5, 0], [0.1, 0.2, 5.0]]), False),
    (np.array([[4.0, 0, 0], [0, 4.0, 0]]), False),
    (np.array([[4.0, 0, 0]]), False),
    (np.zeros((0, 3)), False),
    (np.zeros((3, 3)), True),
    (np.array([[4.0, 0, 0], [0, 0, 0]]), True),
    (np.array([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 3.0]]), True),
    (np.array([[3.0, 0, 0], [6.0, 1e-6, 0], [0, 0, 3.0]]), True),  # sine 1.7e-7: vesin divides by ~0
    (np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]]), True),  # coplanar
    (np.array([[1e-30, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]), False),  # tiny but independent
])
def test_degenerate_lattice(vectors: np.ndarray, degenerate: bool) -> None:
    """Zero, parallel or coplanar lattice vectors are degenerate; independent ones of any length are not."""
    assert degenerate_lattice(vectors) is degenerate
