"""A working entry point beside five broken ones in the same distribution."""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import DatasetSpec


def make_dataset() -> list[dict[str, object]]:
    """One helium atom: a list is already a map-style dataset."""
    import numpy as np

    return [{"atomic_numbers": np.array([2]), "pos": np.zeros((1, 3)), "pbc": np.zeros(3, dtype=bool)}]


@hookimpl
def matsciml_datasets() -> list[DatasetSpec]:
    return [DatasetSpec(name="faulty-sibling-dataset", summary="one helium atom (test fixture)",
                        factory=make_dataset)]
