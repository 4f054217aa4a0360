"""The interfaces components meet through (DESIGN.md rule 2).

These are structural protocols: a plugin does not subclass anything from
the core, it provides objects with these attributes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from matsciml.data.schema import Sample

if TYPE_CHECKING:
    from matsciml.batch import Batch


@runtime_checkable
class Representation(Protocol):
    """Turns samples into model input.

    ``__call__`` converts one sample (see :mod:`matsciml.data.schema`) into
    an item holding what its models consume (a DGL graph, a padded point
    cloud...); it runs in DataLoader workers, so it must be picklable.
    ``collate`` turns a list of items into a :class:`matsciml.batch.Batch`
    (build it with :func:`matsciml.batch.collate_structures`, passing the
    representation's own batched input as ``inputs``). Models compute every
    geometric quantity from ``batch.pos``, so tasks get forces as -dE/dpos.
    """

    name: str

    def __call__(self, sample: Sample) -> Any: ...

    def collate(self, items: Sequence[Any]) -> Batch: ...


@dataclass
class BackboneOutput:
    """What every backbone's ``forward`` returns: the typed output tasks read.

    Attributes:
        atom_features: ``[num_atoms_total, embedding_dim]``, one row per atom
            of the batch, in ``batch.atomic_numbers`` order. Energy tasks
            read these and sum per-atom energies (extensive, exact for
            supercells); every backbone must provide them.
        structure_features: ``[num_structures, structure_embedding_dim]`` or
            None: a per-structure embedding for models that have one (a
            Set2Set readout, a global state vector). Property regression
            reads it when present instead of pooling ``atom_features``.
    """

    atom_features: torch.Tensor
    structure_features: torch.Tensor | None = None


@runtime_checkable
class Backbone(Protocol):
    """A model: a ``torch.nn.Module`` from a :class:`~matsciml.batch.Batch` to a :class:`BackboneOutput`.

    Attributes:
        representation: the representation whose batches ``forward`` takes.
        embedding_dim: width ``D`` of ``atom_features``.
        structure_embedding_dim: width of ``structure_features``, or None
            when the model has none (an optional attribute; None if absent).

    ``forward`` computes every geometric quantity from ``batch.pos`` (and
    the representation's periodic shifts), so tasks get forces and stress
    by autograd.
    """

    representation: str
    embedding_dim: int

    def forward(self, batch: Batch) -> BackboneOutput: ...
