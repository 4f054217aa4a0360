"""Provides ``toy-mlp`` (a clash with matsciml-toyplugin) and ``dup-only-dataset`` (no clash)."""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import DatasetSpec, ModelSpec


def make_dataset() -> list[dict[str, object]]:
    """Two hydrogen molecules: a list is already a map-style dataset."""
    import numpy as np

    molecule = {
        "atomic_numbers": np.array([1, 1]),
        "pos": np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]]),
        "pbc": np.zeros(3, dtype=bool),
    }
    return [dict(molecule), dict(molecule)]


def make_model() -> object:
    import torch

    return torch.nn.Linear(4, 4)


@hookimpl
def matsciml_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="toy-mlp",
            summary="another toy-mlp (clashes with matsciml-toyplugin's)",
            factory=make_model,
            representation="toy-points",
        )
    ]


@hookimpl
def matsciml_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="dup-only-dataset",
            summary="two hydrogen molecules (test fixture)",
            factory=make_dataset,
            targets=(),
        )
    ]
