"""The interfaces components meet through (DESIGN.md rule 2).

These are structural protocols: a plugin does not subclass anything from
the core, it provides objects with these attributes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from matsciml.data.schema import Sample


@runtime_checkable
class Representation(Protocol):
    """Turns samples into model input.

    ``__call__`` converts one sample (see :mod:`matsciml.data.schema`) into
    whatever its models consume (a DGL graph, a padded point cloud...);
    ``collate`` batches a list of those. Batches must keep the atoms'
    positions as a tensor the task can differentiate (forces = -dE/dpos).
    """

    name: str

    def __call__(self, sample: Sample) -> Any: ...

    def collate(self, items: Sequence[Any]) -> Any: ...


@runtime_checkable
class Backbone(Protocol):
    """A model: a ``torch.nn.Module`` from a batch to per-atom embeddings.

    ``representation`` names the representation whose batches ``forward``
    takes; ``embedding_dim`` is the width of the per-atom output that task
    heads read.
    """

    representation: str
    embedding_dim: int

    def forward(self, batch: Any) -> Any: ...
