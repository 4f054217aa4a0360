"""The batch every task receives, whatever the representation.

A representation collates samples into a :class:`Batch`: the parts every
task needs (positions to differentiate, which structure each atom belongs
to, targets) in one fixed form, plus ``inputs``, the representation's own
model input (a DGL graph, a padded point cloud...). Tasks read only the
common fields; backbones read ``inputs`` and ``pos``.

Positions are a separate tensor, not hidden inside ``inputs``, so a task
can set ``requires_grad`` on them and get forces as -dE/dpos by autograd;
backbones must compute every geometric quantity from ``batch.pos``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from matsciml.errors import MatscimlError
from matsciml.fields import FieldSpec, UnknownFieldError, field_spec, registered_names

PER_ATOM_TARGETS = registered_names(role="target", arity="atom")
"""Registered per-atom targets (forces, charges...); :func:`matsciml.fields.field_spec` knows them all."""

_GEOMETRY = frozenset({"atomic_numbers", "pos", "cell", "pbc"})  # fields of their own in a Batch


@dataclass
class Batch:
    """Several structures, concatenated atom-wise.

    Attributes:
        inputs: the representation's model input (e.g. a batched ``dgl.DGLGraph``).
        atomic_numbers: ``[num_atoms_total]`` int64.
        pos: ``[num_atoms_total, 3]`` positions in Å (float32 or float64).
        structure_index: ``[num_atoms_total]`` int64, the structure of each atom.
        num_atoms: ``[num_structures]`` int64.
        cell: ``[num_structures, 3, 3]`` lattice vectors as rows (zeros if none).
        pbc: ``[num_structures, 3]`` bool.
        targets: labels; per-structure ones ``[num_structures, ...]``, per-atom
            ones (forces) ``[num_atoms_total, ...]``.
        extras: structure annotations present in every sample: per atom
            (``tags`` [N] int64, ``fixed`` [N] bool) or per structure
            (``dataset_index`` [B] int64 in a run on several datasets).
        input_fields: sample fields whose role is "model input" (a total
            charge, a spin, a temperature): per-structure ones
            ``[num_structures, ...]``, per-atom ones ``[num_atoms_total, ...]``;
            kept apart from ``targets`` so no task ever trains on them.
        sample_names: where each structure came from (``"sample 17 of
            data/lips.lmdb"``), filled in by the data module so that a
            failure can name the samples of the batch; None when unknown.
        skipped: samples of this batch left out because they failed
            validation at read time (``data.skip_invalid``), as
            ``(name, reason)`` pairs.
    """

    inputs: Any
    atomic_numbers: torch.Tensor
    pos: torch.Tensor
    structure_index: torch.Tensor
    num_atoms: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    input_fields: dict[str, torch.Tensor] = field(default_factory=dict)
    sample_names: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_structures(self) -> int:
        return int(self.num_atoms.shape[0])

    def __len__(self) -> int:
        return self.num_structures

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """The same batch on ``device`` (Lightning calls this to move batches).

        ``inputs`` may be a tensor, an object with ``.to(device)`` (a DGL
        graph) or a dict/list/tuple of those.
        """
        def move(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.to(device, non_blocking=non_blocking)
            if isinstance(value, Mapping):
                return {key: move(item) for key, item in value.items()}
            if isinstance(value, (list, tuple)):
                return type(value)(move(item) for item in value)
            if hasattr(value, "to"):
                return value.to(device)
            return value

        try:
            inputs = move(self.inputs)
        except Exception as exc:  # noqa: BLE001 - whatever the representation's library raises
            raise MatscimlError(
                f"the representation's batch input ({type(self.inputs).__name__}) cannot move to {device}: {exc}. "
                f"The library that builds it may lack support for that device (the DGL wheels on PyPI are "
                f"CPU-only, for example): install its build for that device, or set trainer.accelerator=cpu"
            ) from exc
        return replace(
            self,
            inputs=inputs,
            atomic_numbers=move(self.atomic_numbers),
            pos=move(self.pos),
            structure_index=move(self.structure_index),
            num_atoms=move(self.num_atoms),
            cell=move(self.cell),
            pbc=move(self.pbc),
            targets={k: move(v) for k, v in self.targets.items()},
            extras={k: move(v) for k, v in self.extras.items()},
            input_fields={k: move(v) for k, v in self.input_fields.items()},
        )


def collate_structures(samples: Sequence[Mapping[str, Any]], inputs: Any = None,
                       dtype: torch.dtype = torch.float32) -> Batch:
    """The common part of a batch, built with array operations.

    Each numeric key present in every sample goes where its declaration
    (:func:`matsciml.fields.field_spec`: the registry, or the fields of the
    datasets opened in this process) puts it: targets to ``targets``, model
    inputs to ``input_fields``, structure annotations (tags, fixed) to
    ``extras``. Per-atom keys are concatenated atom-wise (``[num_atoms_total,
    ...]``), per-structure keys stacked (``[num_structures, ...]``); floats
    take ``dtype``. Text is left out.

    Numeric keys that no declaration covers are left out (their layout is
    never guessed at read time).

    Raises:
        MatscimlError: a key's arrays do not have the declared layout (a
            per-atom key without one row per atom, per-structure values of
            different shapes), naming the key and the sample in the batch.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    num_atoms = np.fromiter((len(s["atomic_numbers"]) for s in samples), dtype=np.int64, count=len(samples))
    cells = np.stack([np.asarray(s["cell"]) if "cell" in s else np.zeros((3, 3)) for s in samples])
    pbc = np.stack([np.asarray(s["pbc"], dtype=bool) for s in samples])
    common = set(samples[0]).intersection(*samples[1:]) if len(samples) > 1 else set(samples[0])
    routed: dict[str, dict[str, torch.Tensor]] = {"target": {}, "input": {}, "structure": {}}
    for key in sorted(common - _GEOMETRY):
        values = [s[key] for s in samples]
        if isinstance(values[0], str):
            continue
        try:
            spec = field_spec(key)
        except UnknownFieldError:
            # nothing declared a use for it (an ad-hoc sample's stray info key): leave it out rather than
            # guess its layout; a task that needs it says it is missing and how to declare it
            continue
        tensor = torch.from_numpy(_join(key, spec, values, num_atoms))
        routed[spec.role][key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return Batch(
        inputs=inputs,
        atomic_numbers=torch.from_numpy(np.concatenate([s["atomic_numbers"] for s in samples])),
        pos=torch.from_numpy(np.concatenate([s["pos"] for s in samples])).to(dtype),
        structure_index=torch.from_numpy(np.repeat(np.arange(len(samples), dtype=np.int64), num_atoms)),
        num_atoms=torch.from_numpy(num_atoms),
        cell=torch.from_numpy(cells).to(dtype),
        pbc=torch.from_numpy(pbc),
        targets=routed["target"],
        extras=routed["structure"],
        input_fields=routed["input"],
    )


def _join(key: str, spec: FieldSpec, values: list[Any], num_atoms: np.ndarray) -> np.ndarray:
    """One key's values of a batch: concatenated per atom or stacked per structure, as declared."""
    arrays = [np.asarray(value) for value in values]
    if spec.per_atom:
        for position, (array, count) in enumerate(zip(arrays, num_atoms.tolist())):
            if array.ndim == 0 or array.shape[0] != count:
                raise MatscimlError(
                    f"cannot collate {key!r}, a {spec.describe()}: structure {position} of the batch has "
                    f"{count} atoms but its {key} has shape {tuple(array.shape)}, not {count} rows; "
                    f"correct the data, or declare the key per structure at conversion (--field {key}=structure)")
        try:
            return np.concatenate(arrays)
        except ValueError:
            shown = ", ".join("[" + ", ".join(["N", *map(str, rest)]) + "]"
                              for rest in sorted({array.shape[1:] for array in arrays}))
            raise MatscimlError(f"cannot collate {key!r}: its rows differ in shape between structures of the "
                                f"batch ({shown}); correct the data") from None
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        shown = ", ".join(str(shape) for shape in sorted(shapes))
        raise MatscimlError(
            f"cannot collate {key!r}, a {spec.describe()}: its shape differs between structures of the batch "
            f"({shown}), so the values cannot be stacked; correct the data, or declare the key per atom at "
            f"conversion (--field {key}=atom) if it has one row per atom")
    return np.stack(arrays)
