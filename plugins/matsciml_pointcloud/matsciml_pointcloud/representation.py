"""The ``point-cloud`` representation: an atom-centred cloud of nearest neighbours per centre atom.

Format (what models of ``point-cloud`` may rely on); ``batch.inputs`` is a
:class:`PointClouds` with, for ``C`` centres in the batch and ``K`` slots
per cloud (the most neighbours any centre of the batch has, at most
``max_neighbors``):

* ``centres`` ``[C]`` int64: the centre atom of each cloud, as a row of
  ``batch.pos`` / ``batch.atomic_numbers``; clouds come structure by
  structure, centres in atom order;
* ``neighbours`` ``[C, K]`` int64: the neighbour in each slot, as a row of
  ``batch.pos``, sorted by distance; empty slots hold the centre itself;
* ``shifts`` ``[C, K, 3]`` float: ``image @ cell`` of the neighbour in Å
  (0 in empty slots and in molecules);
* ``mask`` ``[C, K]`` bool: True on real neighbours;
* ``structure_index`` ``[C]`` int64: the structure of each centre.

A neighbour is an atom or periodic image strictly closer than
``cutoff_radius`` (the core's neighbour search, :mod:`matsciml.neighbors`;
images included, so an atom in a small cell sees its own images), the
nearest ``max_neighbors`` of them. Clouds are not full pairwise clouds:
their cost is set by ``max_neighbors``, not by the size of the structure.

Positions are not stored: the relative vectors are computed by the model
from ``batch.pos`` (:func:`relative_vectors`), so forces come by autograd.
Element features are the model's: :func:`pair_elements` gives the atomic
numbers of centre and neighbour per slot; a linear map of the symmetric
one-hot ``onehot(Z_centre) + onehot(Z_neighbour)`` (the paper's features)
is ``E[Z_centre] + E[Z_neighbour]`` for an embedding table ``E``, which is
how a model computes it without building one-hot tensors.

Centres: ``centres="all"`` makes a cloud around every atom;
``centres="oc20"`` around the adsorbate and surface atoms (tags 2 and 1) plus
a seeded random share ``subsurface_fraction`` of the subsurface atoms (tag
0), as for OC20 slabs whose fixed bulk matters little. The draw depends on
``seed`` and the structure's elements only, so every frame of a relaxation
gets the same centres.
"""
from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import torch

from matsciml.batch import Batch, collate_structures
from matsciml.data.schema import Sample
from matsciml.neighbors import nearest_per_receiver, radius_graph

_DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "float32": (torch.float32, np.dtype(np.float32)),
    "float64": (torch.float64, np.dtype(np.float64)),
}
CENTRE_CHOICES = ("all", "oc20")


@dataclass
class PointClouds:
    """The batched clouds (layout in the module docstring)."""

    centres: torch.Tensor
    neighbours: torch.Tensor
    shifts: torch.Tensor
    mask: torch.Tensor
    structure_index: torch.Tensor

    @property
    def num_centres(self) -> int:
        return int(self.centres.shape[0])

    @property
    def num_slots(self) -> int:
        """``K``: neighbour slots per cloud in this batch."""
        return int(self.neighbours.shape[1])

    def to(self, device: torch.device | str) -> "PointClouds":
        return PointClouds(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


class CloudItem(NamedTuple):
    """One converted sample: the sample and its clouds (local atom indices)."""

    sample: Sample
    centres: np.ndarray  # [c] int64
    neighbours: np.ndarray  # [c, k] int64
    shifts: np.ndarray  # [c, k, 3] float
    mask: np.ndarray  # [c, k] bool
    truncated: int  # centres that had more than max_neighbors neighbours within the cutoff


class PointCloudRepresentation:
    """Turns samples into atom-centred neighbour clouds and collates them into a :class:`~matsciml.batch.Batch`.

    Args:
        cutoff_radius: neighbours are strictly closer than this, Å.
        max_neighbors: at most this many nearest neighbours per centre (``K``).
        centres: ``"all"`` or ``"oc20"`` (tags 2 and 1, and a share of tag 0).
        subsurface_fraction: with ``centres="oc20"``, the share of
            subsurface atoms (tag 0) that are centres too (at least one when
            the share is above 0 and there are any).
        seed: seeds the draw of subsurface centres.
        dtype: ``"float32"`` or ``"float64"``: positions, shifts, float targets.
    """

    name = "point-cloud"

    def __init__(self, cutoff_radius: float = 5.0, max_neighbors: int = 32, centres: str = "all",
                 subsurface_fraction: float = 0.25, seed: int = 0, dtype: str = "float32") -> None:
        cutoff_radius = float(cutoff_radius)
        if not cutoff_radius > 0 or not np.isfinite(cutoff_radius):
            raise ValueError(f"point-cloud: cutoff_radius must be a positive number of Å, got {cutoff_radius}")
        if isinstance(max_neighbors, bool) or int(max_neighbors) != max_neighbors or max_neighbors < 1:
            raise ValueError(f"point-cloud: max_neighbors must be a positive integer, got {max_neighbors!r}")
        if centres not in CENTRE_CHOICES:
            raise ValueError(f"point-cloud: centres must be one of {', '.join(CENTRE_CHOICES)}, got {centres!r}")
        if not 0.0 <= float(subsurface_fraction) <= 1.0:
            raise ValueError(f"point-cloud: subsurface_fraction must be in [0, 1], got {subsurface_fraction!r}")
        dtype_name = str(dtype).removeprefix("torch.")
        if dtype_name not in _DTYPES:
            raise ValueError(f"point-cloud: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.cutoff_radius = cutoff_radius
        self.max_neighbors = int(max_neighbors)
        self.centres = centres
        self.subsurface_fraction = float(subsurface_fraction)
        self.seed = int(seed)
        self.dtype = dtype_name
        self._torch_dtype, self._numpy_dtype = _DTYPES[dtype_name]
        self._warned = False

    # ------------------------------------------------------------------ one sample
    def __call__(self, sample: Sample) -> CloudItem:
        """The sample with its clouds (format in the module docstring, atom indices local to the sample)."""
        num_atoms = len(sample["atomic_numbers"])
        senders, receivers, images = radius_graph(sample["pos"], sample.get("cell"), sample["pbc"],
                                                  self.cutoff_radius)
        cell = np.asarray(sample["cell"], dtype=np.float64) if sample.get("cell") is not None else None
        shift = images @ cell if cell is not None else np.zeros(images.shape)
        pos = np.asarray(sample["pos"], dtype=np.float64)
        distances = np.linalg.norm(pos[senders] + shift - pos[receivers], axis=1)
        counts = np.bincount(receivers, minlength=num_atoms)
        keep = nearest_per_receiver(receivers, distances, self.max_neighbors, num_atoms,
                                    tie_breakers=(images[:, 2], images[:, 1], images[:, 0], senders))
        senders, receivers, shift = senders[keep], receivers[keep], shift[keep]  # by receiver, then distance
        centres = self.centre_atoms(sample)
        is_centre = np.zeros(num_atoms, dtype=bool)
        is_centre[centres] = True
        chosen = is_centre[receivers]
        senders, receivers, shift = senders[chosen], receivers[chosen], shift[chosen]
        kept = np.minimum(counts, self.max_neighbors)[centres]  # [c] neighbours of each centre
        slots = int(kept.max()) if len(kept) else 0
        row = np.searchsorted(centres, receivers)  # cloud of each kept edge (centres are sorted)
        first = np.cumsum(kept) - kept
        slot = np.arange(len(receivers)) - first[row]
        neighbours = np.repeat(centres[:, None], slots, axis=1)
        neighbours[row, slot] = senders
        shifts = np.zeros((len(centres), slots, 3), dtype=self._numpy_dtype)
        shifts[row, slot] = shift
        mask = np.zeros((len(centres), slots), dtype=bool)
        mask[row, slot] = True
        truncated = int((counts[centres] > self.max_neighbors).sum())
        return CloudItem(sample, centres, neighbours, shifts, mask, truncated)

    def centre_atoms(self, sample: Sample) -> np.ndarray:
        """``[c]`` sorted int64 indices of the centre atoms of ``sample``."""
        num_atoms = len(sample["atomic_numbers"])
        if self.centres == "all":
            return np.arange(num_atoms, dtype=np.int64)
        if "tags" not in sample:
            raise ValueError("point-cloud: centres='oc20' needs per-atom 'tags' (OC20: 0 subsurface, 1 surface, "
                             "2 adsorbate) and this sample has none; use representation.centres=all")
        tags = np.asarray(sample["tags"])
        chosen = tags != 0
        subsurface = np.flatnonzero(tags == 0)
        if len(subsurface) and self.subsurface_fraction > 0:
            count = max(1, int(round(self.subsurface_fraction * len(subsurface))))
            elements = np.asarray(sample["atomic_numbers"], dtype=np.int64)
            key = zlib.crc32(elements.tobytes())  # the same draw for every frame of one system
            rng = np.random.default_rng([self.seed, key, num_atoms])
            chosen[rng.choice(subsurface, size=count, replace=False)] = True
        return np.flatnonzero(chosen).astype(np.int64)

    # ------------------------------------------------------------------ a batch
    def collate(self, items: Sequence[CloudItem]) -> Batch:
        """A :class:`~matsciml.batch.Batch` whose ``inputs`` is the :class:`PointClouds` of all items."""
        if not items:
            raise ValueError("point-cloud: cannot collate an empty list of samples")
        slots = max(1, *(item.neighbours.shape[1] for item in items))  # one empty slot at least: no 0-width tensors
        offsets = np.cumsum([0] + [len(item.sample["atomic_numbers"]) for item in items])[:-1]
        centres = np.concatenate([item.centres + offset for item, offset in zip(items, offsets)])
        neighbours = np.concatenate([_pad(item.neighbours + offset, slots, fill=item.centres + offset)
                                     for item, offset in zip(items, offsets)])
        shifts = np.concatenate([_pad(item.shifts, slots) for item in items])
        mask = np.concatenate([_pad(item.mask, slots) for item in items])
        structure = np.repeat(np.arange(len(items), dtype=np.int64), [len(item.centres) for item in items])
        truncated = sum(item.truncated for item in items)
        if truncated and not self._warned:
            self._warned = True
            warnings.warn(
                f"point-cloud: {truncated} of {len(centres)} centres of a batch have more than "
                f"max_neighbors={self.max_neighbors} neighbours within cutoff_radius={self.cutoff_radius} Å; "
                f"only the nearest are kept, so energies jump where neighbours swap rank; lower "
                f"representation.cutoff_radius or raise representation.max_neighbors", stacklevel=2)
        clouds = PointClouds(
            centres=torch.from_numpy(centres.astype(np.int64)),
            neighbours=torch.from_numpy(neighbours.astype(np.int64)),
            shifts=torch.from_numpy(shifts).to(self._torch_dtype),
            mask=torch.from_numpy(mask),
            structure_index=torch.from_numpy(structure),
        )
        return collate_structures([item.sample for item in items], inputs=clouds, dtype=self._torch_dtype)

    def __repr__(self) -> str:
        return (f"PointCloudRepresentation(cutoff_radius={self.cutoff_radius}, max_neighbors={self.max_neighbors}, "
                f"centres={self.centres!r}, subsurface_fraction={self.subsurface_fraction}, seed={self.seed}, "
                f"dtype={self.dtype!r})")


def _pad(values: np.ndarray, slots: int, fill: np.ndarray | None = None) -> np.ndarray:
    """``values`` ``[c, k, ...]`` padded to ``[c, slots, ...]``; new slots hold ``fill[c]`` (or zeros)."""
    missing = slots - values.shape[1]
    if missing == 0:
        return values
    extra = np.zeros((values.shape[0], missing, *values.shape[2:]), dtype=values.dtype)
    if fill is not None:
        extra[:] = fill.reshape(-1, *([1] * (values.ndim - 1)))
    return np.concatenate([values, extra], axis=1)


def relative_vectors(batch: Batch) -> torch.Tensor:
    """``[C, K, 3]`` vectors from each centre to its neighbours, ``pos[j] + shift - pos[i]``, in Å.

    Differentiable with respect to ``batch.pos`` (forces by autograd); exactly
    zero in empty slots, with zero gradient there.
    """
    clouds: PointClouds = batch.inputs
    pos = batch.pos
    vectors = pos[clouds.neighbours] + clouds.shifts.to(pos.dtype) - pos[clouds.centres][:, None, :]
    return vectors * clouds.mask[..., None].to(pos.dtype)


def pair_elements(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Z_centre [C], Z_neighbour [C, K])``: atomic numbers of each centre and its neighbour slots."""
    clouds: PointClouds = batch.inputs
    return batch.atomic_numbers[clouds.centres], batch.atomic_numbers[clouds.neighbours]
