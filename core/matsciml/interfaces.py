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


def output_problems(backbone: Any, output: Any, num_atoms: int, num_structures: int) -> list[str]:
    """What breaks the backbone contract in ``output``, returned by ``backbone`` on a batch of
    ``num_atoms`` atoms in ``num_structures`` structures; empty when nothing does.

    The one statement of the output contract: the pipeline checks a built
    model with it (``matsciml.training.run``) and so does the conformance kit
    (``matsciml.testing.check_backbone``).
    """
    if not isinstance(output, BackboneOutput):
        return [f"forward returned a {type(output).__name__}, not matsciml.interfaces.BackboneOutput"]
    problems = []
    width = getattr(backbone, "embedding_dim", None)
    structure_width = getattr(backbone, "structure_embedding_dim", None)
    problems += _feature_problems("atom_features", output.atom_features, num_atoms, width,
                                  "[num_atoms_total, embedding_dim]")
    features = output.structure_features
    if features is None and structure_width is not None:
        problems.append(f"the model declares structure_embedding_dim={structure_width} but forward returned "
                        f"no structure_features")
    elif features is not None and structure_width is None:
        problems.append("forward returned structure_features but the model declares no "
                        "structure_embedding_dim; set it to their width")
    elif features is not None:
        problems += _feature_problems("structure_features", features, num_structures, structure_width,
                                      "[num_structures, structure_embedding_dim]")
    return problems


def _feature_problems(name: str, value: Any, rows: int, width: Any, layout: str) -> list[str]:
    if not isinstance(value, torch.Tensor):
        return [f"BackboneOutput.{name} is a {type(value).__name__}, not a torch.Tensor"]
    expected = (rows, width)
    if value.ndim != 2 or tuple(value.shape) != expected:
        return [f"forward returned {name} of shape {list(value.shape)} for this batch, expected {layout} = "
                f"[{rows}, {width}]"]
    if not value.is_floating_point():
        return [f"forward returned {name} of dtype {value.dtype}, not floating point"]
    return []
