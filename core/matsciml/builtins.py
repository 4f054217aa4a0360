"""The core's own components, registered through the public hooks.

This module is the entry point ``matsciml-builtins`` of the ``matsciml``
distribution: the registry finds it exactly as it finds a third-party
plugin (DESIGN.md rule 3). It imports nothing heavy: factories are named by
string and imported only when built.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from matsciml.datasets import DEVSETS, open_devset
from matsciml.errors import MatscimlError
from matsciml.fields import FieldSpec, UnknownFieldError, field_spec
from matsciml.hookspecs import hookimpl
from matsciml.specs import DatasetSpec, TaskSpec, as_yaml

_HEAD_DEFAULTS = {"head_hidden_dim": 64, "head_layers": 1, "activation": "silu"}
_HEAD_HELP = {
    "head_hidden_dim": "width of the hidden layers of the output MLP",
    "head_layers": "number of hidden layers of the output MLP",
    "activation": "activation of the output MLP (silu, relu, gelu, tanh, softplus2)",
}
# Checked before a task is built, so a bad value is one line naming it.
_HEAD_RANGES = {"head_hidden_dim": ">=1", "head_layers": ">=0"}
# The names of matsciml.nn.ACTIVATIONS, written out because this module must not import torch (a test keeps them equal).
_HEAD_CHOICES = {"activation": ("silu", "relu", "gelu", "tanh", "softplus2")}

READOUTS = ("sum", "mean")
"""How property regression pools atom features into a per-structure value."""


def resolve_readouts(targets: Sequence[str], readout: str | Mapping[str, str] | None,
                     metadata: Mapping[str, Any] | None = None, *, note: bool = True) -> dict[str, str]:
    """The readout of each per-structure regression target: ``{target: "sum" | "mean"}``.

    Args:
        targets: the regression targets.
        readout: one readout for every target, a mapping from some targets to
            theirs, or None. A target without one gets the readout its field
            declaration implies (:attr:`matsciml.fields.FieldSpec.extensive`,
            from the registry, else ``metadata`` or the datasets opened in this
            process): ``sum`` when it is extensive (a total over the atoms:
            energy, magnetic moment), ``mean`` when it is intensive (band gap,
            energy per atom). An undeclared key gets ``mean``.
        metadata: the dataset's metadata, for its own keys.
        note: say on standard error, once per call, which targets got
            ``mean`` for want of a declaration.

    Per-atom targets (``charges``, ``forces``, a dataset's per-atom keys...)
    are left out: they are predicted per atom, not pooled, and naming one in
    ``readout`` is an error.
    """
    specs = {target: _declaration(target, metadata) for target in targets}
    per_atom = {target for target, spec in specs.items() if spec is not None and spec.per_atom}
    chosen: dict[str, Any]
    if readout is None:
        chosen = {}
    elif isinstance(readout, str):
        chosen = {target: readout for target in targets if target not in per_atom}
    elif isinstance(readout, Mapping):
        chosen = dict(readout)
    else:
        raise MatscimlError(f"task.readout={readout!r} is not valid: expected sum, mean or a mapping "
                            f"{{target: sum|mean}}; e.g. task.readout={{energy: sum, band_gap: mean}}")
    for target, value in chosen.items():
        if target not in targets:
            raise MatscimlError(f"task.readout names {target!r}, which is not a regression target "
                                f"({', '.join(targets)}); add it to task.targets or remove it from task.readout")
        if value not in READOUTS:
            raise MatscimlError(f"task.readout.{target}={as_yaml(value)} is not valid: expected sum (extensive: "
                                f"totals) or mean (intensive); e.g. task.readout.{target}=mean")
        if target in per_atom:
            raise MatscimlError(f"task.readout names {target!r}, a per-atom target: it is predicted atom by atom, "
                                f"not pooled; remove it from task.readout")
    resolved = {}
    for target in targets:
        if target in per_atom:
            continue
        spec = specs[target]
        extensive = None if spec is None else spec.extensive
        if target in chosen:
            resolved[target] = chosen[target]
        else:
            resolved[target] = "sum" if extensive else "mean"
            if extensive is None and note:
                print(f"matsciml: note: task target {target!r} has no extensive/intensive declaration; using "
                      f"readout mean (set task.readout.{target}=sum for a total, or declare it at conversion: "
                      f"--field {target}=extensive or --field {target}=intensive)", file=sys.stderr)
    return resolved


def _declaration(target: str, metadata: Mapping[str, Any] | None) -> FieldSpec | None:
    """The field declaration of a target (registry, ``metadata``, datasets opened here), or None if there is none."""
    try:
        return field_spec(target, metadata)
    except UnknownFieldError:
        return None  # a dataset's own key whose dataset is not open yet (its metadata says, once it is)


def complete_regression_params(params: Mapping[str, Any], metadata: Mapping[str, Any] | None = None, *,
                               note: bool = True) -> dict[str, Any]:
    """Property regression's hyper-parameters with ``targets`` checked and one readout per target.

    Targets are required: a regression of a property nobody named would be a
    guess (energies have their own tasks, ``is2re`` and ``s2ef``, with
    per-element references). The readouts are resolved by
    :func:`resolve_readouts` (``metadata`` and ``note`` are passed on): when
    a config is resolved, :func:`matsciml.training.run.resolve_config` has
    declared the dataset's own keys in this process first, so a key declared
    ``--field KEY=extensive`` at conversion gets ``sum`` in the printed config.
    """
    targets = params.get("targets")
    if isinstance(targets, str):
        targets = [targets]
    if not targets or not isinstance(targets, (list, tuple)) or \
            not all(isinstance(t, str) and t.strip() for t in targets):
        raise MatscimlError(f"task.targets={targets!r} is not valid: property regression needs the sample keys "
                            f"to predict; e.g. task.targets=[band_gap,formation_energy_per_atom]")
    if len(set(targets)) != len(targets):
        raise MatscimlError(f"task.targets={list(targets)!r} names a key twice; list each target once")
    return {**params, "targets": list(targets),
            "readout": resolve_readouts(targets, params.get("readout"), metadata, note=note)}


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
                    "forces = -dE/dpos by autograd, weighted loss (L1 on energies, MSE on forces of free atoms), OC20 metrics",
            factory="matsciml.tasks.s2ef:S2EFTask",
            defaults={"energy_weight": 1.0, "force_weight": 3.0, "force_loss": "mse",
                      "energy_loss_scaling": "atoms", "force_loss_atoms": "free",
                      "reference_energies": True, **_HEAD_DEFAULTS},
            param_help={
                "energy_weight": "weight of the energy L1 term (error in units of the force RMS, divided as "
                                 "energy_loss_scaling says)",
                "force_weight": "weight of the force-component term (error in units of the force RMS)",
                "force_loss": "mse (weighs the rare large forces of relaxations) or l1 on force components",
                "energy_loss_scaling": "divide the energy error by atoms (N: the per-atom error), sqrt_atoms "
                                       "(sqrt N: a stronger energy term for small cells) or none (total error)",
                "force_loss_atoms": "atoms the force loss covers: free (not held fixed; tag 0 counts as fixed "
                                    "when a dataset has tags and no 'fixed'), as OC20 trains, or all",
                "reference_energies": "fit per-element reference energies on the training split",
                **_HEAD_HELP,
            },
            param_ranges={"energy_weight": ">=0", "force_weight": ">=0", **_HEAD_RANGES},
            param_choices={"force_loss_atoms": ("free", "all"), "force_loss": ("mse", "l1"),
                           "energy_loss_scaling": ("atoms", "sqrt_atoms", "none"), **_HEAD_CHOICES},
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
            summary="Regression of per-structure properties (band gap, formation energy...) and per-atom ones "
                    "(partial charges...): per-target normalisation, sum or mean readout per target, "
                    "L1 or MSE loss, MAE per target",
            factory="matsciml.tasks.regression:PropertyRegressionTask",
            defaults={"targets": None, "loss": "l1", "readout": None, "head_hidden_dim": 64,
                      "head_layers": 2, "activation": "silu"},
            param_help={
                "targets": "sample keys to predict (required): per-structure scalars, or per-atom values "
                           "such as charges (predicted atom by atom)",
                "loss": "l1 or mse, on targets normalised by training statistics",
                "readout": "per-structure targets: pool atom features by sum (extensive) or mean (intensive); "
                           "one value for all or {target: sum|mean}; default from the target's field "
                           "declaration: sum if extensive (total energy, moment), mean if intensive or undeclared",
                **_HEAD_HELP,
            },
            param_ranges=_HEAD_RANGES,
            param_choices={"loss": ("l1", "mse"), **_HEAD_CHOICES},
            targets_param="targets",
            complete_params=complete_regression_params,
        ),
    ]
