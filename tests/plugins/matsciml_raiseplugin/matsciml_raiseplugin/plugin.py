"""Describes ``toy-raise`` and ``toy-raise-dataset``; building either raises, as buggy plugin code does."""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import DatasetSpec, ModelSpec


def make_model(hidden_dim: int = 16, dropout: float = 0.1) -> object:
    raise ValueError(f"simulated factory failure: hidden_dim={hidden_dim} is not supported")


def make_dataset(size: int = 3) -> object:
    raise TypeError("simulated factory failure: cannot open the toy data")


@hookimpl
def matsciml_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="toy-raise",
            summary="a model whose factory always raises (test fixture)",
            factory=make_model,
            defaults={"hidden_dim": 16, "dropout": 0.1},
            param_help={"hidden_dim": "width", "dropout": "dropout probability"},
            param_ranges={"hidden_dim": ">=1", "dropout": "[0,1)"},
            representation="toy-points",
            representation_distribution="matsciml-toyplugin",
        )
    ]


@hookimpl
def matsciml_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="toy-raise-dataset",
            summary="a dataset whose factory always raises (test fixture)",
            factory=make_dataset,
            defaults={"size": 3},
            targets=("energy",),
        )
    ]
