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


# ---------------------------------------------------------------- where each key goes: the field registry
def _molecules() -> list[dict]:
    """Two molecules (3 and 5 atoms) with per-atom partial charges and a per-structure total charge."""
    rng = np.random.default_rng(1)
    samples = [random_molecule_sample(rng, num_atoms=3), random_molecule_sample(rng, num_atoms=5)]
    for sample in samples:
        sample["charges"] = rng.normal(size=len(sample["atomic_numbers"]))
        sample["total_charge"] = np.asarray(float(sample["charges"].sum().round()))
        sample["spin_multiplicity"] = np.asarray(1)
        sample["dipole"] = rng.normal(size=3)
    return samples


def test_targets_inputs_and_annotations_go_where_their_fields_say() -> None:
    """charges: per-atom target [N]; total_charge, spin: model inputs [B]; a 3-vector dipole of a 3-atom
    molecule stays per structure [B, 3] (its declaration, not its shape, decides)."""
    samples = _molecules()
    batch = collate_structures(samples)
    assert batch.targets["charges"].shape == (8,) and batch.targets["charges"].dtype == torch.float32
    np.testing.assert_allclose(batch.targets["charges"][3:].numpy(), samples[1]["charges"], rtol=1e-6)
    assert batch.targets["dipole"].shape == (2, 3)
    assert set(batch.input_fields) == {"total_charge", "spin_multiplicity"}
    assert batch.input_fields["total_charge"].shape == (2,)
    assert batch.input_fields["spin_multiplicity"].tolist() == [1, 1]
    assert batch.input_fields["spin_multiplicity"].dtype == torch.int64
    assert "total_charge" not in batch.targets and batch.extras == {}
    moved = batch.to("meta")
    assert moved.input_fields["total_charge"].device.type == "meta"


def test_a_custom_per_atom_key_of_a_dataset_collates() -> None:
    """A key no registry knows, declared per atom by its dataset's metadata, is concatenated like charges."""
    from matsciml.fields import declare_dataset_fields, isolated

    samples = _molecules()
    for sample in samples:
        sample["hirshfeld"] = sample["charges"] * 0.5
        sample["solvent_eps"] = np.asarray(78.4)
    metadata = {"name": "mol", "count": 2, "keys": {
        "hirshfeld": {"dtype": "float64", "shape": ["N"], "count": 2, "role": "target", "arity": "atom"},
        "solvent_eps": {"dtype": "float64", "shape": [], "count": 2, "role": "input", "arity": "structure"}}}
    with isolated():
        declare_dataset_fields(metadata)
        batch = collate_structures(samples)
    assert batch.targets["hirshfeld"].shape == (8,)
    assert batch.input_fields["solvent_eps"].tolist() == pytest.approx([78.4, 78.4])


def test_an_undeclared_key_is_left_out_not_guessed() -> None:
    """A numeric key declared nowhere (a stray info entry of an ad-hoc sample) is neither a target nor an
    input: its layout is never guessed from shapes at read time."""
    samples = _molecules()
    for sample in samples:
        sample["hirshfeld"] = sample["charges"] * 0.5
    batch = collate_structures(samples)
    assert "hirshfeld" not in batch.targets and "hirshfeld" not in batch.input_fields
    assert batch.targets["charges"].shape == (sum(len(s["atomic_numbers"]) for s in samples),)


def test_a_per_atom_key_without_one_row_per_atom_names_the_structure() -> None:
    samples = _molecules()
    samples[1]["charges"] = samples[1]["charges"][:4]
    with pytest.raises(MatscimlError, match=r"cannot collate 'charges', a per-atom target in e .*: structure 1 "
                                            r"of the batch has 5 atoms but its charges has shape \(4,\)"):
        collate_structures(samples)


def test_per_structure_values_of_different_shapes_are_named() -> None:
    samples = _molecules()
    samples[0]["dipole"] = np.zeros(2)
    with pytest.raises(MatscimlError, match=r"cannot collate 'dipole'.*\(2,\), \(3,\)"):
        collate_structures(samples)
