"""Would provide the model ``hook-wrong-type``; its model hook returns a dataset spec."""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import DatasetSpec


@hookimpl
def matsciml_models() -> list[DatasetSpec]:
    return [DatasetSpec(name="hook-wrong-type", summary="a dataset where a model belongs", factory=list)]
