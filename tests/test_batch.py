"""The common batch: collation of samples and moving between devices."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from matsciml.batch import Batch, collate_structures
from matsciml.errors import MatscimlError
from matsciml.testing import random_molecule_sample, random_periodic_sample


def _samples() -> list[dict]:
    rng = np.random.default_rng(0)
    first = random_periodic_sample(rng, num_atoms=4)
    second = random_molecule_sample(rng, num_atoms=3)
    for index, sample in enumerate((first, second)):
        sample["energy"] = np.asarray(-1.5 * (index + 1))
        sample["forces"] = rng.normal(size=(len(sample["atomic_numbers"]), 3))
        sample["tags"] = np.ones(len(sample["atomic_numbers"]), dtype=np.int64)
        sample["label"] = "text is left out"
    return [first, second]


def test_collate_concatenates_atoms_and_stacks_structures() -> None:
    """Per-atom arrays are concatenated, per-structure targets stacked, strings left out."""
    samples = _samples()
    batch = collate_structures(samples)
    assert batch.num_structures == 2 and batch.num_atoms.tolist() == [4, 3]
    assert batch.structure_index.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert batch.pos.shape == (7, 3) and batch.pos.dtype == torch.float32
    assert batch.targets["energy"].tolist() == [-1.5, -3.0]
    assert batch.targets["forces"].shape == (7, 3)
    np.testing.assert_allclose(batch.targets["forces"][4:].numpy(), samples[1]["forces"], rtol=1e-6)
    assert batch.extras["tags"].tolist() == [1] * 7
    assert "label" not in batch.targets
    assert batch.cell[1].abs().sum() == 0 and batch.pbc.tolist() == [[True] * 3, [False] * 3]


def test_collate_keeps_only_keys_every_sample_has() -> None:
    """A target missing from one sample is not a target of the batch."""
    samples = _samples()
    del samples[1]["energy"]
    assert "energy" not in collate_structures(samples).targets


def test_collate_in_float64() -> None:
    batch = collate_structures(_samples(), dtype=torch.float64)
    assert batch.pos.dtype == batch.targets["forces"].dtype == batch.cell.dtype == torch.float64


def test_to_moves_nested_inputs() -> None:
    """Tensors in dicts, lists and tuples of ``inputs`` move with the batch."""
    inputs = {"edges": (torch.zeros(3, dtype=torch.long), [torch.ones(2)]), "shift": torch.zeros(3, 3)}
    batch = collate_structures(_samples(), inputs=inputs).to("meta")
    assert batch.pos.device.type == "meta" and batch.targets["energy"].device.type == "meta"
    assert batch.inputs["shift"].device.type == "meta"
    assert batch.inputs["edges"][0].device.type == "meta" and batch.inputs["edges"][1][0].device.type == "meta"
    assert isinstance(batch, Batch)


def test_inputs_that_cannot_move_explain_the_fix() -> None:
    """A representation input whose library lacks the device fails with the fix named."""
    class CPUOnly:
        def to(self, device):
            raise RuntimeError("this build has no CUDA support")

    batch = collate_structures(_samples(), inputs=CPUOnly())
    with pytest.raises(MatscimlError, match="CPUOnly.*no CUDA support.*trainer.accelerator=cpu"):
        batch.to("meta")
