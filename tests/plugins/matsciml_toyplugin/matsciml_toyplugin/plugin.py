"""The entry-point module: describes the plugin's components, builds nothing.

Factories are ``"module:attribute"`` strings so listing components does not
import torch or the model code.
"""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import DatasetSpec, ModelSpec, RepresentationSpec, TaskSpec

_MODEL_DEFAULTS = {"hidden_dim": 16, "num_layers": 2}
_MODEL_HELP = {
    "hidden_dim": "width of the per-atom embedding",
    "num_layers": "number of hidden layers of the MLP",
}


@hookimpl
def matsciml_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="toy-mlp",
            summary="per-atom MLP over element embeddings and positions (test fixture)",
            factory="matsciml_toyplugin.model:ToyBackbone",
            defaults=_MODEL_DEFAULTS,
            param_help=_MODEL_HELP,
            representation="toy-points",
            representation_distribution="matsciml-toyplugin",
        ),
        ModelSpec(
            name="needs-missing",
            summary="a model whose representation is not installed (test fixture)",
            factory="matsciml_toyplugin.model:ToyBackbone",
            defaults=_MODEL_DEFAULTS,
            param_help=_MODEL_HELP,
            representation="missing-rep",
            representation_distribution="matsciml-missing-rep",
        ),
    ]


@hookimpl
def matsciml_representations() -> list[RepresentationSpec]:
    return [
        RepresentationSpec(
            name="toy-points",
            summary="atoms as a flat point list with a structure index per atom (test fixture)",
            factory="matsciml_toyplugin.representation:ToyPoints",
        )
    ]


@hookimpl
def matsciml_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="toy-dataset",
            summary="a few random molecules held in memory (test fixture)",
            factory="matsciml_toyplugin.data:ToyDataset",
            defaults={"num_samples": 4, "seed": 0},
            param_help={"num_samples": "how many structures", "seed": "random seed of the positions"},
            targets=("energy",),
            num_samples=4,
        )
    ]


@hookimpl
def matsciml_tasks() -> list[TaskSpec]:
    return [
        TaskSpec(
            name="toy-task",
            summary="energy regression, described but never trained (test fixture)",
            factory="matsciml_toyplugin.task:make_toy_task",
            defaults={"loss": "mse", "learning_rate": 1e-3},
            param_help={"loss": "loss function", "learning_rate": "optimiser step size"},
            required_targets=("energy",),
        )
    ]
