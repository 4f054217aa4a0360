"""Would provide the task ``hook-returns-none``; its hook lost its ``return``."""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import TaskSpec


@hookimpl
def matsciml_tasks() -> None:
    [TaskSpec(name="hook-returns-none", summary="never returned", factory=dict)]
