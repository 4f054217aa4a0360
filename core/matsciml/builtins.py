"""The core's own components, registered through the public hooks.

This module is the entry point ``matsciml-builtins`` of the ``matsciml``
distribution: the registry finds it exactly as it finds a third-party
plugin (DESIGN.md rule 3). It imports nothing heavy: factories are named by
string and imported only when built.
"""
from __future__ import annotations

from functools import partial

from matsciml.datasets import DEVSETS, open_devset
from matsciml.hookspecs import hookimpl
from matsciml.specs import DatasetSpec, TaskSpec

_HEAD_DEFAULTS = {"head_hidden_dim": 64, "head_layers": 1, "activation": "silu"}
_HEAD_HELP = {
    "head_hidden_dim": "width of the hidden layers of the output MLP",
    "head_layers": "number of hidden layers of the output MLP",
    "activation": "activation of the output MLP (silu, relu, gelu, tanh)",
}
# Checked before a task is built, so a bad value is one line naming it.
_HEAD_RANGES = {"head_hidden_dim": ">=1", "head_layers": ">=0"}
_HEAD_CHOICES = {"activation": ("silu", "relu", "gelu", "tanh")}


@hookimpl
def matsciml_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name=name,
            summary=info["summary"],
            factory=partial(open_devset, name),
            defaults={"keys": None},
            param_help={"keys": "decode only these sample keys (all when None)"},
            targets=info["targets"],
        )
        for name, info in DEVSETS.items()
    ]


@hookimpl
def matsciml_tasks() -> list[TaskSpec]:
    return [
        TaskSpec(
            name="s2ef",
            summary="Structure to energy and forces (OC20 S2EF): E as a sum of per-atom terms, "
                    "forces = -dE/dpos by autograd, weighted L1 loss",
            factory="matsciml.tasks.s2ef:S2EFTask",
            defaults={"energy_weight": 1.0, "force_weight": 3.0, "reference_energies": True, **_HEAD_DEFAULTS},
            param_help={
                "energy_weight": "weight of the per-atom energy L1 term (in units of the force RMS)",
                "force_weight": "weight of the force-component L1 term (in units of the force RMS)",
                "reference_energies": "fit per-element reference energies on the training split",
                **_HEAD_HELP,
            },
            param_ranges={"energy_weight": ">=0", "force_weight": ">=0", **_HEAD_RANGES},
            param_choices=_HEAD_CHOICES,
            required_targets=("energy", "forces"),
        ),
        TaskSpec(
            name="is2re",
            summary="Initial structure to relaxed energy (OC20 IS2RE): sum of per-atom terms, L1 loss",
            factory="matsciml.tasks.is2re:IS2RETask",
            defaults={"reference_energies": True, **_HEAD_DEFAULTS},
            param_help={"reference_energies": "fit per-element reference energies on the training split",
                        **_HEAD_HELP},
            param_ranges=_HEAD_RANGES,
            param_choices=_HEAD_CHOICES,
            required_targets=("relaxed_energy",),
        ),
        TaskSpec(
            name="regression",
            summary="Regression of per-structure scalar properties (band gap, formation energy...), "
                    "per-target normalisation, L1 or MSE loss, MAE per target",
            factory="matsciml.tasks.regression:PropertyRegressionTask",
            defaults={"targets": ["energy"], "loss": "l1", "readout": "mean", "head_hidden_dim": 64,
                      "head_layers": 2, "activation": "silu"},
            param_help={
                "targets": "sample keys to predict (scalars per structure)",
                "loss": "l1 or mse, on targets normalised by training mean and std",
                "readout": "pool atom embeddings by mean (intensive) or sum (extensive)",
                **_HEAD_HELP,
            },
            param_ranges=_HEAD_RANGES,
            param_choices={"loss": ("l1", "mse"), "readout": ("mean", "sum"), **_HEAD_CHOICES},
        ),
    ]
