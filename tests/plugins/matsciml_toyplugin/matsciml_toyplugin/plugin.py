"""The entry-point module: describes the plugin's components, builds nothing.

Factories are ``"module:attribute"`` strings so listing components does not
import torch or the model code.
"""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import DatasetSpec, ModelSpec, RepresentationSpec, TaskSpec

_MODEL_DEFAULTS = {"hidden_dim": 16, "num_layers": 2, "cutoff_radius": 4.0, "num_radial": 8}
_MODEL_HELP = {
    "hidden_dim": "width of the per-atom embedding",
    "num_layers": "number of hidden layers of the MLP",
    "cutoff_radius": "Å; the envelope of the convolution ends here (tied to the representation's cutoff)",
    "num_radial": "Gaussians of the distance expansion",
}


@hookimpl
def matsciml_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="toy-mlp",
            summary="one continuous-filter convolution over radius neighbours, then a residual MLP (test fixture)",
            factory="matsciml_toyplugin.model:ToyBackbone",
            defaults=_MODEL_DEFAULTS,
            param_help=_MODEL_HELP,
            representation="toy-points",
            representation_distribution="matsciml-toyplugin",
            tied_params={"cutoff_radius": "cutoff_radius"},
        ),
        ModelSpec(
            name="toy-tensor",
            summary="the toy model with a forward that returns a bare tensor: breaks the contract (test fixture)",
            factory="matsciml_toyplugin.model:ToyTensorBackbone",
            defaults=_MODEL_DEFAULTS,
            param_help=_MODEL_HELP,
            representation="toy-points",
            representation_distribution="matsciml-toyplugin",
            tied_params={"cutoff_radius": "cutoff_radius"},
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
            summary="atoms with their periodic radius neighbours as flat index arrays (test fixture)",
            factory="matsciml_toyplugin.representation:ToyPoints",
            defaults={"cutoff_radius": 4.0, "dtype": "float32"},
            param_help={"cutoff_radius": "Å; neighbours strictly closer than this",
                        "dtype": "float type of positions, shifts and targets"},
            param_ranges={"cutoff_radius": ">0"},
            param_choices={"dtype": ("float32", "float64")},
        )
    ]


@hookimpl
def matsciml_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="toy-dataset",
            summary="a few random molecules with pair-potential energies and forces, in memory (test fixture)",
            factory="matsciml_toyplugin.data:ToyDataset",
            defaults={"num_samples": 4, "seed": 0, "charges": False},
            param_help={"num_samples": "how many structures", "seed": "random seed of the positions",
                        "charges": "add partial charges (per-atom target) and the net charge (model input)"},
            targets=("energy", "forces"),
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
