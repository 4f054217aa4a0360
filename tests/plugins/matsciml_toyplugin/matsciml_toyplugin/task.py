"""The toy task factory: described by the registry, never trained in the tests."""
from __future__ import annotations

from typing import Any


def make_toy_task(backbone: Any = None, loss: str = "mse", learning_rate: float = 1e-3) -> dict[str, Any]:
    """Return a plain description instead of a LightningModule."""
    return {"task": "toy-task", "backbone": backbone, "loss": loss, "learning_rate": learning_rate}
