"""Would provide the dataset ``hook-not-iterable``; its hook returns an int."""
from __future__ import annotations

from matsciml.hookspecs import hookimpl


@hookimpl
def matsciml_datasets() -> int:
    return 42
