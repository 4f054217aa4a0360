"""The ``dgl-graph`` representation: one DGL radius graph per structure.

Graph format (what models of ``dgl-graph`` may rely on):

* nodes are the atoms, in sample order;
* an edge runs from sender ``j`` (``src``, the neighbour) to receiver ``i``
  (``dst``, the centre atom), for every neighbour strictly closer than
  ``cutoff_radius``, periodic images included (an atom in a small cell has
  edges from its own images); there are no self-loops with a zero image;
* ``g.ndata["atomic_numbers"]``: ``[num_nodes]`` int64;
* ``g.edata["shift"]``: ``[num_edges, 3]`` float (the representation's
  dtype), ``image @ cell`` in Å, so the edge vector is
  ``batch.pos[src] + shift - batch.pos[dst]``;
* ``g.edata["image"]``: ``[num_edges, 3]`` int64, the image of the sender in
  lattice vectors (0 along non-periodic directions).

Positions are deliberately not stored in the graph: ``batch.pos`` is the one
source of truth, so that a task can set ``requires_grad`` on it and get
forces as -dE/dpos by autograd. A model computes edge vectors from
``batch.pos`` with :func:`matsciml.nn.edge_vectors` (the formula above;
:func:`edge_vectors` here applies it to a batch); ``dgl.batch`` offsets node ids, so
``src`` and ``dst`` of the batched graph index ``batch.pos`` directly.

Per-sample work is one neighbour search (:mod:`matsciml.neighbors`) and
one small graph; a batch is ``dgl.batch`` of those graphs plus array concatenations
(:func:`matsciml.batch.collate_structures`).

A batch is a :class:`GraphBatch`, a :class:`~matsciml.batch.Batch` whose
move to a device turns DGL's failure to reach that device (the DGL wheels on
PyPI are CPU builds) into one line saying which build to install.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, NamedTuple

import dgl
import numpy as np
import torch

from matsciml.nn import geometry
from matsciml.batch import Batch, collate_structures
from matsciml.data.schema import Sample
from matsciml.errors import MatscimlError
from matsciml.neighbors import radius_graph

_DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "float32": (torch.float32, np.dtype(np.float32)),
    "float64": (torch.float64, np.dtype(np.float64)),
}


class GraphItem(NamedTuple):
    """One converted sample: the sample itself (for positions and targets)
    and its single-structure graph."""

    sample: Sample
    graph: dgl.DGLGraph


# DGL's runtime says "Device API cuda is not enabled. Please install the cuda version of dgl."
# (then a C++ stack trace) when a graph is sent to a device its build lacks.
_MISSING_DEVICE_API = re.compile(r"Device API (\w+) is not enabled")

#: where DGL publishes its CUDA wheels, one index page per torch minor version and CUDA version
DGL_WHEEL_INDEX = "https://data.dgl.ai/wheels/torch-{torch}/{cuda}/repo.html"


def _missing_device_api(exc: BaseException) -> tuple[str, BaseException] | None:
    """``(device type, DGL's error)`` if ``exc``, or an exception it was raised from, is DGL
    saying its build lacks that device; None otherwise."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, dgl.DGLError):
            found = _MISSING_DEVICE_API.search(str(current))
            if found:
                return found.group(1), current
        current = current.__cause__ or current.__context__
    return None


def cuda_install_command() -> str:
    """``pip install dgl==VERSION+cuXYZ -f INDEX`` for the DGL and torch installed here.

    The index page is chosen by torch's minor version and the CUDA version
    torch was built with (``torch.version.cuda``); with a CPU build of torch
    it names CUDA 12.1, the CUDA build of the pinned torch 2.2.1.
    """
    version = dgl.__version__.split("+")[0]
    torch_minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    cuda = "cu" + (torch.version.cuda or "12.1").replace(".", "")
    return f"pip install dgl=={version}+{cuda} -f {DGL_WHEEL_INDEX.format(torch=torch_minor, cuda=cuda)}"


def device_unreachable_message(device: torch.device | str, missing: str = "cuda") -> str:
    """One line: the DGL installed here cannot put graphs on ``device``, and what to install.

    Args:
        device: where the batch was to go (``cuda:0``).
        missing: the device type DGL's error names as not built in.
    """
    target = str(device)
    if missing == "cuda":
        return (f"the DGL installed here ({dgl.__version__}, CPU build) cannot put graphs on {target}; "
                f"install the CUDA build: {cuda_install_command()} (see README 'GPU')")
    return (f"the DGL installed here ({dgl.__version__}) has no {missing} support, so it cannot put graphs "
            f"on {target}; train on a device DGL supports (trainer.accelerator=cpu, or gpu with DGL's CUDA "
            f"build; see README 'GPU')")


class GraphBatch(Batch):
    """A :class:`~matsciml.batch.Batch` of ``dgl-graph`` inputs (what :meth:`DGLGraphRepresentation.collate` returns).

    The same fields and behaviour as its base; only a failed move to a
    device differs. Why: the DGL wheels on PyPI are CPU builds, and sending
    their graphs to a GPU raises a ``DGLError`` of a dozen lines ending in a
    C++ stack trace. Here that becomes one :class:`~matsciml.errors.MatscimlError`
    line naming the DGL version, the device and the install command of the
    CUDA build; the ``DGLError`` stays attached as its cause.
    """

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "GraphBatch":
        try:
            return super().to(device, non_blocking=non_blocking)  # type: ignore[return-value]
        except Exception as exc:  # noqa: BLE001 - only DGL's missing-device error is translated
            found = _missing_device_api(exc)
            if found is None:
                raise
            missing, dgl_error = found
            raise MatscimlError(device_unreachable_message(device, missing)) from dgl_error

    @classmethod
    def of(cls, batch: Batch) -> "GraphBatch":
        """The same batch (the same tensors, not copies) as a :class:`GraphBatch`."""
        return cls(**{field.name: getattr(batch, field.name) for field in fields(batch)})


class DGLGraphRepresentation:
    """Turns samples into DGL radius graphs and collates them into a :class:`~matsciml.batch.Batch`.

    Args:
        cutoff_radius: neighbour cutoff in Å (edges strictly shorter).
        max_neighbors: keep only the nearest this many neighbours of each
            atom; None keeps all within the cutoff.
        dtype: ``"float32"`` or ``"float64"``, the float type of
            ``edata["shift"]``, ``batch.pos``, the cell and float targets.
    """

    name = "dgl-graph"

    def __init__(self, cutoff_radius: float = 6.0, max_neighbors: int | None = None,
                 dtype: str = "float32") -> None:
        cutoff_radius = float(cutoff_radius)
        if not cutoff_radius > 0 or not np.isfinite(cutoff_radius):
            raise ValueError(f"dgl-graph: cutoff_radius must be a positive number of Å, got {cutoff_radius}")
        if max_neighbors is not None:
            if isinstance(max_neighbors, bool) or int(max_neighbors) != max_neighbors or max_neighbors < 1:
                raise ValueError(f"dgl-graph: max_neighbors must be a positive integer or None, "
                                 f"got {max_neighbors!r}")
            max_neighbors = int(max_neighbors)
        dtype_name = str(dtype).removeprefix("torch.")
        if dtype_name not in _DTYPES:
            raise ValueError(f"dgl-graph: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.cutoff_radius = cutoff_radius
        self.max_neighbors = max_neighbors
        self.dtype = dtype_name
        self._torch_dtype, self._numpy_dtype = _DTYPES[dtype_name]

    def __call__(self, sample: Sample) -> GraphItem:
        """The sample with its radius graph (format in the module docstring)."""
        return GraphItem(sample, self.graph_from_edges(sample, *self.edges(sample)))

    def edges(self, sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The neighbour search: ``(senders, receivers, images)``, ``[num_edges]``,
        ``[num_edges]`` and ``[num_edges, 3]`` int64 (see
        :func:`matsciml.neighbors.radius_graph`)."""
        return radius_graph(sample["pos"], sample.get("cell"), sample["pbc"], self.cutoff_radius,
                            self.max_neighbors)

    def graph_from_edges(self, sample: Sample, senders: np.ndarray, receivers: np.ndarray,
                         images: np.ndarray) -> dgl.DGLGraph:
        """The single-structure graph of ``sample`` with the given edges."""
        atomic_numbers = np.asarray(sample["atomic_numbers"], dtype=np.int64)
        cell = sample.get("cell")
        if cell is None:
            shift = np.zeros(images.shape, dtype=self._numpy_dtype)
        else:
            # [num_edges, 3] Cartesian offsets of the sender images, Å
            shift = (images @ np.asarray(cell, dtype=np.float64)).astype(self._numpy_dtype, copy=False)
        graph = dgl.graph((torch.from_numpy(senders), torch.from_numpy(receivers)),
                          num_nodes=len(atomic_numbers), idtype=torch.int64)
        graph.ndata["atomic_numbers"] = torch.from_numpy(atomic_numbers)
        graph.edata["shift"] = torch.from_numpy(shift)
        graph.edata["image"] = torch.from_numpy(images)
        return graph

    def collate(self, items: Sequence[GraphItem]) -> GraphBatch:
        """A :class:`GraphBatch` (a :class:`~matsciml.batch.Batch`) whose ``inputs`` is the batched graph.

        Node ``n`` of the batched graph is row ``n`` of ``batch.pos``,
        ``batch.atomic_numbers`` and atom-wise targets.
        """
        if not items:
            raise ValueError("dgl-graph: cannot collate an empty list of samples")
        graph = dgl.batch([item.graph for item in items])
        return GraphBatch.of(collate_structures([item.sample for item in items], inputs=graph,
                                                dtype=self._torch_dtype))

    def __repr__(self) -> str:
        return (f"DGLGraphRepresentation(cutoff_radius={self.cutoff_radius}, "
                f"max_neighbors={self.max_neighbors}, dtype={self.dtype!r})")


def edge_vectors(batch: Batch) -> torch.Tensor:
    """``[num_edges, 3]`` edge vectors ``pos[src] + shift - pos[dst]`` in Å, from ``batch.pos``.

    A helper for models and tests that hands the batched graph's edges to
    the one formula, :func:`matsciml.nn.edge_vectors`; differentiable with
    respect to ``batch.pos``.
    """
    graph: Any = batch.inputs
    src, dst = graph.edges()
    return geometry.edge_vectors(batch.pos, src, dst, graph.edata["shift"])
