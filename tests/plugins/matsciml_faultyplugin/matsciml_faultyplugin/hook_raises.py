"""Would provide the model ``hook-raises``; its hook raises, as a hook with a bug does."""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import ModelSpec


@hookimpl
def matsciml_models() -> list[ModelSpec]:
    raise RuntimeError("simulated failure inside the hook matsciml_models")
