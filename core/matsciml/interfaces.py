"""The interfaces components meet through (DESIGN.md rule 2).

These are structural protocols: a plugin does not subclass anything from
the core, it provides objects with these attributes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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
