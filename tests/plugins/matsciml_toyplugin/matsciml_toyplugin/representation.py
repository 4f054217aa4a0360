"""The ``toy-points`` representation: tensors per sample, concatenated per batch."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class ToyPoints:
    """Sample -> dict of tensors; a batch concatenates atoms and records their structure."""

    name = "toy-points"

    def __call__(self, sample: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {
            "atomic_numbers": torch.as_tensor(sample["atomic_numbers"], dtype=torch.long),
            "pos": torch.as_tensor(sample["pos"], dtype=torch.float32),
        }

    def collate(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        sizes = torch.tensor([len(item["atomic_numbers"]) for item in items])
        return {
            "atomic_numbers": torch.cat([item["atomic_numbers"] for item in items]),
            "pos": torch.cat([item["pos"] for item in items]),
            "structure": torch.repeat_interleave(torch.arange(len(items)), sizes),
        }
