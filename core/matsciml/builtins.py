"""The core's own components, registered through the public hooks.

This module is the entry point ``matsciml-builtins`` of the ``matsciml``
distribution: the registry finds it exactly as it finds a third-party
plugin (DESIGN.md rule 3).
"""
from __future__ import annotations

from functools import partial

from matsciml.datasets import DEVSETS, open_devset
from matsciml.hookspecs import hookimpl
from matsciml.specs import DatasetSpec


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
