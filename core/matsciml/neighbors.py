"""The one periodic neighbour search of matsciml, from the vesin neighbour list.

Why this module exists: every representation (DGL radius graphs, padded
point clouds) and the sample schema's check for coincident atoms need the
pairs of atoms, periodic images included, closer than some radius. They all
use this search, so there is one set of conventions and one set of guards.
The search itself is done by vesin (a C++ cell list made for atomistic
systems), never by Python loops over atoms; everything around it is
whole-array numpy. It imports neither DGL nor any model.

Conventions (representations rely on them):

* an edge is ``(sender j, receiver i, image S)`` with the edge vector
  ``pos[j] + S @ cell - pos[i]`` (Å), i.e. it points from the centre atom
  ``i`` to its neighbour ``j`` (or to ``j``'s periodic image ``S``);
* an edge exists when that vector is *strictly* shorter than
  ``cutoff_radius`` (vesin's convention; a neighbour exactly at the cutoff
  is left out);
* periodic images are included: in a cell shorter than the cutoff an atom
  sees its own images (edges ``i -> i`` with ``S != 0``); there is never a
  self-loop ``i -> i`` with ``S = 0``;
* :func:`radius_graph` is symmetric: with ``(j, i, S)`` comes ``(i, j, -S)``;
  :func:`neighbor_pairs` lists each pair once;
* image components along non-periodic directions are always 0.

Boundary conditions, and why this way (measured with vesin 0.4.2, the
release the pinned DGL stack can load, on the 2-core machine; times are
per frame, best of several passes):

* vesin >= 0.4 takes one periodic flag per cell direction, so mixed
  boundary conditions (a slab with ``pbc = (True, True, False)``) are
  searched natively. This is checked against brute force over explicit
  images for random skewed and rotated cells, atoms far outside the cell
  along the open directions, and open-direction cell vectors that are
  zero, tiny or parallel to a periodic one (tests/test_neighbors.py).
  The alternative, searching fully periodically with the open vectors made
  long enough that no image along them is within the cutoff, finds the same
  edges but is slower: 185 µs against 160 µs on the 300 frames of the
  shipped slab-emt-s2ef devset read as ``(True, True, False)``.
* vesin kills the process (SIGFPE) on some degenerate boxes, e.g. a zero
  cell with one periodic direction. So the periodic vectors are checked
  here (:func:`degenerate_lattice`, which the sample schema applies too),
  and the open-direction vectors, which only vesin's binning sees, are
  replaced by vectors orthogonal to the periodic ones, longer than the
  structure's extent plus the search radius. Edges do not depend on them:
  images along open directions are 0. Without any periodic direction the
  cell is not used at all.
* vesin's half list (each pair once) mirrored in numpy is about 20 % faster
  than its full list on the 83-atom periodic frames of lips.extxyz
  (830 µs against 1050 µs, 6 Å), so the half list is what is searched.
* Small cutoffs are searched with a larger radius. vesin's cell list makes
  bins about one cutoff wide, and each bin costs about 0.4 µs whether it
  holds atoms or not: vesin's own 0.1 Å search (the schema's check for
  coincident atoms) of a LiPS frame makes about 10^5 bins and takes 15 ms.
  So the search radius is the larger of the cutoff and the mean spacing of
  the atoms (``(volume / num_atoms) ** (1/3)``, 2.7 Å on LiPS: about one atom
  per bin), and the pairs beyond the cutoff (about two per atom) are
  dropped in numpy: 150 µs per LiPS frame, of which vesin takes about 120 µs
  and its fixed cost per call (one atom) 30-55 µs. Radii from 0.8 to 1.0
  times the mean spacing cost the same; 1.25 times is slower (more pairs).
  For cutoffs above the mean spacing (radius graphs of dense structures)
  nothing changes; dilute structures (a molecule in a large periodic box)
  get fewer, fuller bins.

vesin versions: the pinned DGL stack needs vesin 0.4.x (0.5 and later fail
to import with torch 2.2.1; this module then says so), current torch gets
the newest release (0.6.2 when this was written; the tests pass on both).
The part of vesin's numpy API used here, ``NeighborList(cutoff=...,
full_list=...)`` and ``compute(points, box, periodic, quantities, copy)``,
is the same in both; 0.6 makes the constructor's arguments keyword-only
(they are passed by keyword here) and adds ``algorithm`` (on CPU "auto" is
the cell list), ``skin`` (0: no caching between calls) and ``n_threads``
(default: one thread per core). ``n_threads`` is set to 1 when present: the
data pipeline's parallelism is its worker processes, and a thread pool per
search in each worker would oversubscribe the cores (on one 83-atom frame
the threads gain nothing measurable). The newer releases also import torch
when it is installed, so this module is imported lazily where import time
matters (:mod:`matsciml.data.schema`).
"""
from __future__ import annotations

import inspect
from importlib.metadata import PackageNotFoundError, version
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

try:
    from vesin import NeighborList
except AttributeError as exc:  # vesin >= 0.5 asks for torch.uint64, which torch < 2.3 lacks

    def _installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "(not installed)"

    raise ImportError(
        f"vesin {_installed('vesin')} cannot be imported with torch {_installed('torch')} ({exc}); "
        f"vesin 0.5 and later need torch >= 2.3: install 'vesin>=0.4,<0.5' (as scripts/pins/dgl-stack.txt "
        f"does) or a newer torch"
    ) from exc

# Periodic vectors whose Gram determinant, relative to the product of their
# squared lengths (the squared sine of the angles between them), falls below
# this are treated as degenerate: vesin would divide by ~0 on them.
_DEGENERATE_SINE_SQUARED = 1e-10

_VESIN_OPTIONS: dict[str, int] = (
    {"n_threads": 1} if "n_threads" in inspect.signature(NeighborList.__init__).parameters else {}
)


class NeighborPairs(NamedTuple):
    """A half neighbour list: each pair (or atom and periodic image) once.

    The vector of pair ``k`` is ``pos[second[k]] + images[k] @ cell -
    pos[first[k]]`` and its length is ``distances[k]``.
    """

    first: np.ndarray  # [num_pairs] int64
    second: np.ndarray  # [num_pairs] int64
    images: np.ndarray  # [num_pairs, 3] int64
    distances: np.ndarray  # [num_pairs] float64, Å


def neighbor_pairs(pos: ArrayLike, cell: ArrayLike | None, pbc: ArrayLike | None,
                   cutoff_radius: float) -> NeighborPairs:
    """Every pair of atoms, or atom and periodic image, closer than ``cutoff_radius``, once.

    Arguments as in :func:`radius_graph`. An atom's own periodic images are
    included (``first == second`` with a non-zero image); each pair comes with
    one of its two images ``S`` / ``-S``, in no particular order.

    Raises:
        ValueError: as :func:`radius_graph`.
    """
    positions, box, periodic, search_radius = _prepare(pos, cell, pbc, cutoff_radius)
    return NeighborPairs(*_half_list(positions, box, periodic, float(cutoff_radius), search_radius,
                                     with_distances=True))


def radius_graph(pos: ArrayLike, cell: ArrayLike | None, pbc: ArrayLike | None, cutoff_radius: float,
                 max_neighbors: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of atoms (or periodic images) closer than ``cutoff_radius``, both ways.

    Args:
        pos: ``[num_atoms, 3]`` Cartesian positions in Å; they need not be
            wrapped into the cell.
        cell: ``[3, 3]`` lattice vectors as rows in Å, or None for a
            non-periodic structure (a molecule). Vectors of non-periodic
            directions may be anything, zero included.
        pbc: ``[3]`` periodic directions (None: none).
        cutoff_radius: Å; edges are strictly shorter than this.
        max_neighbors: keep only the nearest this many senders of each
            receiver (None: all). Among neighbours at exactly equal
            distance, the one with the lower sender index (then image) is kept.
            The graph is then no longer symmetric.

    Returns:
        ``(senders, receivers, images)``: ``[num_edges]`` int64,
        ``[num_edges]`` int64 and ``[num_edges, 3]`` int64, such that
        ``pos[senders] + images @ cell - pos[receivers]`` is the edge vector,
        shorter than ``cutoff_radius``. Edges come in no particular order,
        except with ``max_neighbors``, where they are sorted by receiver,
        then distance.

    Raises:
        ValueError: on a non-positive cutoff, badly shaped or non-finite
            positions, or a periodic direction without a usable cell vector.
    """
    if max_neighbors is not None and (int(max_neighbors) != max_neighbors or max_neighbors < 1):
        raise ValueError(f"max_neighbors must be a positive integer or None, got {max_neighbors!r}")
    positions, box, periodic, search_radius = _prepare(pos, cell, pbc, cutoff_radius)
    # vesin pairs (first, second, S) have the vector pos[second] + S @ box -
    # pos[first]: first is our receiver, second our sender. Each pair comes
    # once; its mirror (second, first, -S) is added here.
    first, second, shifts, distances = _half_list(positions, box, periodic, float(cutoff_radius),
                                                  search_radius, with_distances=max_neighbors is not None)
    senders = np.concatenate([second, first])
    receivers = np.concatenate([first, second])
    images = np.concatenate([shifts, -shifts])
    if max_neighbors is None:
        return senders, receivers, images
    distances = np.concatenate([distances, distances])
    keep = nearest_per_receiver(receivers, distances, int(max_neighbors), len(positions),
                                tie_breakers=(images[:, 2], images[:, 1], images[:, 0], senders))
    return senders[keep], receivers[keep], images[keep]


def nearest_per_receiver(receivers: np.ndarray, distances: np.ndarray, max_neighbors: int, num_atoms: int,
                         tie_breakers: tuple[np.ndarray, ...] = ()) -> np.ndarray:
    """Indices of the ``max_neighbors`` shortest edges into each receiver.

    Vectorised: one lexsort by (receiver, distance, *tie_breakers), then each
    edge's rank inside its receiver's group is its sorted position minus the
    group's start.

    Args:
        receivers: ``[num_edges]`` int64.
        distances: ``[num_edges]`` float.
        max_neighbors: how many edges to keep per receiver.
        num_atoms: number of receivers (atoms).
        tie_breakers: ``[num_edges]`` keys ordering edges of equal distance,
            most significant last (``np.lexsort`` order).

    Returns:
        ``[num_kept]`` int64 edge indices, sorted by receiver then distance.
    """
    order = np.lexsort((*tie_breakers, distances, receivers))
    counts = np.bincount(receivers, minlength=num_atoms)
    group_start = np.cumsum(counts) - counts
    rank = np.arange(len(order)) - group_start[receivers[order]]
    return order[rank < max_neighbors]


def degenerate_lattice(vectors: ArrayLike) -> bool:
    """True when lattice vectors (rows, Å) are zero or (nearly) parallel.

    The criterion that keeps vesin from dividing by ~0: the Gram determinant
    of the vectors, relative to the product of their squared lengths (the
    squared sine of the angles between them), is at most 1e-10. The sample
    schema refuses such cells with the same test, so a sample that passes
    validation can always be searched. Worked in Python floats: for at most
    three vectors that is several times faster than numpy's small-matrix calls,
    and it runs for every sample read.
    """
    rows = np.asarray(vectors, dtype=np.float64).reshape(-1, 3).tolist()
    if len(rows) > 3:
        return True  # more than three vectors in space are never independent
    lengths_squared = [x * x + y * y + z * z for x, y, z in rows]
    if not rows:
        return False
    if min(lengths_squared) == 0:
        return True
    if len(rows) == 1:
        return False
    normal = _cross(rows[0], rows[1])
    if len(rows) == 2:
        gram_determinant = normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2
    else:
        gram_determinant = (normal[0] * rows[2][0] + normal[1] * rows[2][1] + normal[2] * rows[2][2]) ** 2
    product = 1.0
    for length_squared in lengths_squared:
        product *= length_squared
    return gram_determinant <= _DEGENERATE_SINE_SQUARED * product


def _cross(a: list[float], b: list[float]) -> tuple[float, float, float]:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _volume(box: np.ndarray) -> float:
    """|det(box)| in Python floats (see :func:`degenerate_lattice` for why)."""
    a, b, c = box.tolist()
    normal = _cross(a, b)
    return abs(normal[0] * c[0] + normal[1] * c[1] + normal[2] * c[2])


def _prepare(pos: ArrayLike, cell: ArrayLike | None, pbc: ArrayLike | None,
             cutoff_radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Checked positions, vesin's box, periodic flags and the radius to search."""
    positions = np.ascontiguousarray(pos, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [num_atoms, 3], got {positions.shape}")
    if not np.isfinite(positions).all():
        raise ValueError("positions hold NaN or infinite values; cannot search neighbours")
    cutoff_radius = float(cutoff_radius)
    if not cutoff_radius > 0 or not np.isfinite(cutoff_radius):
        raise ValueError(f"cutoff_radius must be a positive number of Å, got {cutoff_radius}")
    periodic = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool)
    if periodic.shape != (3,):
        periodic = np.broadcast_to(periodic, (3,))
    periodic = np.ascontiguousarray(periodic)
    box = _search_box(positions, cell, periodic, cutoff_radius)
    search_radius = cutoff_radius
    if len(positions):
        # About one atom per bin of vesin's cell list (module docstring).
        if periodic.any():
            volume = _volume(box)
        else:
            volume = float(np.prod(np.ptp(positions, axis=0) + cutoff_radius))
        mean_spacing = (volume / len(positions)) ** (1 / 3)
        if mean_spacing > cutoff_radius:
            search_radius = mean_spacing
            if periodic.any() and not periodic.all():
                box = _search_box(positions, cell, periodic, search_radius)
    return positions, box, periodic, search_radius


def _half_list(positions: np.ndarray, box: np.ndarray, periodic: np.ndarray, cutoff_radius: float,
               search_radius: float, with_distances: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """vesin's half list within ``search_radius``, cut to pairs shorter than ``cutoff_radius``:
    ``(first, second, images, distances)`` as in :class:`NeighborPairs`, distances None
    unless asked for."""
    if len(positions) == 0:
        return _empty_half_list(with_distances)
    trim = search_radius > cutoff_radius
    quantities = "ijSd" if with_distances or trim else "ijS"
    search = NeighborList(cutoff=search_radius, full_list=False, **_VESIN_OPTIONS)
    # copy=False: views into `search`, copied by astype before it is freed
    found = search.compute(points=positions, box=box, periodic=periodic, quantities=quantities, copy=False)
    first, second, shifts = found[0], found[1], found[2].reshape(-1, 3)
    distances = found[3] if len(found) > 3 else None
    if trim:
        near = distances < cutoff_radius
        if not near.any():  # the usual answer of the schema's check for coincident atoms
            return _empty_half_list(with_distances)
        first, second, shifts, distances = first[near], second[near], shifts[near], distances[near]
    return (first.astype(np.int64), second.astype(np.int64), shifts.astype(np.int64),
            np.array(distances, dtype=np.float64) if with_distances else None)


def _empty_half_list(with_distances: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty.copy(), np.zeros((0, 3), dtype=np.int64), np.zeros(0) if with_distances else None


def _search_box(positions: np.ndarray, cell: ArrayLike | None, periodic: np.ndarray,
                search_radius: float) -> np.ndarray:
    """The ``[3, 3]`` box handed to vesin, checked so vesin cannot crash on it.

    Periodic vectors are taken as given (and must be independent); the
    vectors of non-periodic directions are replaced by orthogonal ones
    longer than the structure's extent plus the search radius. Without any
    periodic direction the box is zero (vesin bins the atoms' bounding box).
    """
    num_periodic = int(periodic.sum())
    if cell is None:
        if num_periodic:
            raise ValueError(f"pbc is {periodic.tolist()} but no cell was given; periodic directions "
                             f"need lattice vectors")
        return np.zeros((3, 3))
    box = np.array(cell, dtype=np.float64)  # a copy: rows may be replaced below
    if box.shape != (3, 3):
        raise ValueError(f"cell must have shape [3, 3] (lattice vectors as rows), got {box.shape}")
    if num_periodic == 0:
        return np.zeros((3, 3))
    periodic_vectors = box[periodic]
    if not np.isfinite(periodic_vectors).all():
        raise ValueError("the cell vectors of the periodic directions hold NaN or infinite values")
    if degenerate_lattice(periodic_vectors):
        raise ValueError(f"the cell vectors of the periodic directions {np.flatnonzero(periodic).tolist()} "
                         f"are zero or (nearly) parallel: {periodic_vectors.tolist()}")
    if num_periodic == 3:
        return box
    # Unit vectors spanning the complement of the periodic directions.
    if num_periodic == 2:
        normal = np.cross(periodic_vectors[0], periodic_vectors[1])
        complement = (normal / np.linalg.norm(normal))[None, :]
    else:
        axis = periodic_vectors[0] / np.linalg.norm(periodic_vectors[0])
        helper = np.eye(3)[np.argmin(np.abs(axis))]
        first = np.cross(axis, helper)
        first /= np.linalg.norm(first)
        complement = np.stack([first, np.cross(axis, first)])
    extent = np.ptp(positions @ complement.T, axis=0) if len(positions) else np.zeros(len(complement))
    box[~periodic] = complement * (extent + search_radius + 1.0)[:, None]
    return box
