"""Property regression: per-structure scalars (band gap, formation energy) and per-atom ones (partial charges).

Whether a target has one value per structure or one per atom is its
declaration in the field registry (:func:`matsciml.fields.field_spec`, with
the dataset's metadata for a dataset's own keys), read when the statistics
are fitted and kept in a buffer, so checkpoints carry it. So is the default
readout of a per-structure target: ``sum`` when its declaration says it is
extensive, ``mean`` when intensive (``task.readout`` overrides either).

How each kind of target is read out of the backbone's :class:`~matsciml.interfaces.BackboneOutput`:

* per-atom targets: one head on ``atom_features``, a value per atom,
  normalised with the mean and std over the atoms of the training sample;
* per-structure targets, when the backbone has ``structure_features``:
  the head reads those;
* otherwise they pool ``atom_features`` with the target's readout:
  ``mean`` (intensive) pools the features and applies the head, as before;
  ``sum`` (extensive) applies the head per atom and sums the contributions,
  normalised per atom, so the prediction is exactly extensive (a 2x
  supercell gets twice the value) and the loss weighs the error per atom.

The loss is L1 or MSE on the normalised errors, averaged over targets; the
metrics are the MAE of each target in its own unit (over atoms for per-atom
targets).

A run on several datasets (:mod:`matsciml.data.concatenated`) fits the
statistics of each dataset on its own training samples: the buffers are
``[datasets, targets]`` and each structure is normalised with the row of its
``dataset_index``. The metrics then also give each dataset's MAE
(``band_gap_mae@mp``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from matsciml.batch import Batch
from matsciml.builtins import complete_regression_params, resolve_readouts
from matsciml.data.concatenated import DATASET_INDEX
from matsciml.errors import MatscimlError
from matsciml.fields import field_spec
from matsciml.nn.scatter import mean_per_structure, sum_per_structure
from matsciml.tasks.base import BaseTask
from matsciml.tasks.heads import MLPHead
from matsciml.tasks.metrics import Metric, scalar_mae


class PropertyRegressionTask(BaseTask):
    """Regress per-structure and per-atom scalar properties.

    Args:
        backbone: a :class:`matsciml.interfaces.Backbone`.
        targets: sample keys to predict (required): scalars per structure, or
            one number per atom (``charges``).
        loss: ``"l1"`` or ``"mse"`` on normalised targets.
        readout: for per-structure targets pooled from atom features,
            ``"sum"`` (extensive) or ``"mean"`` (intensive): one value for
            all, or ``{target: readout}``. A target left out gets the readout
            its field declaration implies (``FieldSpec.extensive``: ``sum``
            if extensive, ``mean`` if intensive), from the registry or, for a
            dataset's own key, from the metadata handed to
            :meth:`fit_statistics` (``mean``, said on standard error, when
            nothing declares it). The resolved readouts are kept in a buffer,
            so checkpoints carry them.
        head_hidden_dim, head_layers, activation: the output MLP.
        optimizer, scheduler: see :class:`~matsciml.tasks.base.BaseTask`.
    """

    progress_metrics = ()
    several_datasets = True

    def __init__(self, backbone: torch.nn.Module, targets: Sequence[str] | None = None, loss: str = "l1",
                 readout: str | Mapping[str, str] | None = None, head_hidden_dim: int = 64, head_layers: int = 2,
                 activation: str = "silu", optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None) -> None:
        super().__init__(backbone, optimizer, scheduler)
        # a dataset's own key may be declared only in its metadata: readouts not given are resolved again,
        # with it, when the statistics are fitted (no note until then)
        params = complete_regression_params({"targets": targets, "readout": readout}, note=False)
        self._readout_given: str | dict[str, str] | None = dict(readout) if isinstance(readout, Mapping) else readout
        if loss not in ("l1", "mse"):
            raise MatscimlError(f"task.loss={loss!r} is not valid: expected 'l1' or 'mse'")
        self.targets: list[str] = params["targets"]
        #: the readout of each per-structure target (per-atom targets have none)
        self.readout: dict[str, str] = params["readout"]
        self.progress_metrics = tuple(f"{t}_mae" for t in self.targets)
        self.loss_name = loss
        width = self.structure_embedding_dim or self.embedding_dim
        self.head = MLPHead(width, len(self.targets), head_hidden_dim, head_layers, activation)
        # per-atom targets of a backbone with per-structure features read atom_features through their own head
        self.atom_head = (MLPHead(self.embedding_dim, len(self.targets), head_hidden_dim, head_layers, activation)
                          if self.structure_embedding_dim is not None else None)
        # one row per dataset of the run (one row unless it trains on several datasets)
        self.register_buffer("target_mean", torch.zeros(1, len(self.targets)))
        self.register_buffer("target_std", torch.ones(1, len(self.targets)))
        self.register_buffer("target_per_atom", torch.zeros(len(self.targets), dtype=torch.bool))
        #: True where a per-structure target's readout is sum: checkpoints carry the resolved readouts
        self.register_buffer("target_sum", self._sum_flags())
        self._per_atom: tuple[bool, ...] = (False,) * len(self.targets)
        #: a label per dataset of a run on several datasets, for per-dataset metrics (set by the run)
        self.dataset_labels: list[str] = []
        self._statistics_count = 0  # training structures read by the last fit_statistics

    # ------------------------------------------------------------ which kind of target
    @property
    def per_atom_metrics(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(f"{t}_mae" for t, atom in zip(self.targets, self._per_atom) if atom)

    def _readout(self, index: int) -> str:
        return "atom" if self._per_atom[index] else self.readout.get(self.targets[index], "mean")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("target_mean", "target_std"):
            stored = state_dict.get(prefix + name)
            if isinstance(stored, torch.Tensor):
                if stored.dim() == 1:  # a checkpoint from before per-dataset statistics: one dataset
                    stored = state_dict[prefix + name] = stored.unsqueeze(0)
                own = getattr(self, name)
                if stored.shape != own.shape:  # its number of datasets
                    setattr(self, name, torch.empty(stored.shape, dtype=own.dtype, device=own.device))
        key = prefix + "target_per_atom"
        if key not in state_dict:  # a checkpoint from before per-atom targets: all per structure
            state_dict[key] = torch.zeros(len(self.targets), dtype=torch.bool)
        self._per_atom = tuple(bool(flag) for flag in state_dict[key].tolist())
        key = prefix + "target_sum"
        if key not in state_dict:  # a checkpoint from before readouts were kept: the constructor's readouts
            state_dict[key] = self._sum_flags()
        for target, atom, total in zip(self.targets, self._per_atom, state_dict[key].tolist()):
            if not atom:
                self.readout[target] = "sum" if total else "mean"
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _sum_flags(self) -> torch.Tensor:
        return torch.tensor([self.readout.get(target) == "sum" for target in self.targets], dtype=torch.bool)

    def _arities(self, metadata: Mapping[str, Any] | None) -> tuple[bool, ...]:
        flags = []
        for target in self.targets:
            spec = field_spec(target, metadata)
            if spec.role != "target":
                raise MatscimlError(f"task.targets names {target!r}, a {spec.describe()}, not a target; "
                                    f"choose keys whose role is target (`matsciml data inspect` lists them)")
            flags.append(spec.per_atom)
        return tuple(flags)

    # ------------------------------------------------------------ statistics and baseline
    def fit_statistics(self, samples: Iterable[Mapping[str, Any]],
                       metadata: Mapping[str, Any] | None = None) -> None:
        per_atom = self._arities(metadata)
        # readouts not given follow the declarations, the dataset's own keys' included (metadata)
        self.readout = resolve_readouts(self.targets, self._readout_given, metadata)
        self.target_sum.copy_(self._sum_flags())
        per_dataset = self._collect(samples, per_atom)
        names = list((metadata or {}).get("datasets") or [])
        count = max(len(names), max(per_dataset) + 1)
        missing = [number for number in range(count) if number not in per_dataset]
        if missing:
            which = ", ".join(names[n] if n < len(names) else str(n) for n in missing)
            raise MatscimlError(f"cannot fit per-dataset statistics: none of the {self._statistics_count} "
                                f"training structures read for them (data.statistics_samples) is from {which}; "
                                f"raise data.statistics_samples, or set it to null to read them all")
        means = torch.zeros(count, len(self.targets), dtype=torch.float64)
        stds = torch.ones(count, len(self.targets), dtype=torch.float64)
        for number, columns in per_dataset.items():
            for column, values in enumerate(columns):
                means[number, column] = float(values.mean())
                stds[number, column] = max(float(values.std()), 1e-6)
        for name, fitted in (("target_mean", means), ("target_std", stds)):
            buffer = getattr(self, name)
            if buffer.shape == fitted.shape:
                buffer.copy_(fitted)  # in place: a wrapper holding the buffer (DDP) keeps seeing it
            else:  # another number of datasets than the buffer was made for
                setattr(self, name, fitted.to(dtype=buffer.dtype, device=buffer.device))
        self.target_per_atom.copy_(torch.as_tensor(per_atom))
        self._per_atom = per_atom
        super().fit_statistics(samples, metadata)

    def _collect(self, samples: Iterable[Mapping[str, Any]],
                 per_atom: Sequence[bool]) -> dict[int, list[np.ndarray]]:
        """Each target's training values, per structure or per atom, for each dataset (``dataset_index``).

        A ``sum``-readout target's totals are divided by the structure's
        atoms: its statistics are per atom.
        """
        columns: dict[int, list[list[np.ndarray]]] = {}
        self._statistics_count = 0
        for index, sample in enumerate(samples):
            self._statistics_count += 1
            num_atoms = len(sample["atomic_numbers"])
            number = int(sample.get(DATASET_INDEX, 0))
            rows = columns.setdefault(number, [[] for _ in self.targets])
            for column, (target, atom) in enumerate(zip(self.targets, per_atom)):
                value = self._value(sample, target, atom, num_atoms, index)
                if not atom and self.readout.get(target) == "sum":
                    value = value / num_atoms
                rows[column].append(value)
        if not columns:
            raise MatscimlError("cannot fit statistics: the training split is empty; use a larger dataset or split")
        return {number: [np.concatenate(column) for column in rows] for number, rows in sorted(columns.items())}

    @staticmethod
    def _value(sample: Mapping[str, Any], target: str, atom: bool, num_atoms: int, index: int) -> np.ndarray:
        if target not in sample:
            raise MatscimlError(f"training sample {index} has no {target!r}; every sample must carry the "
                                f"regression targets")
        value = np.asarray(sample[target], dtype=np.float64)
        if (value.shape != (num_atoms,)) if atom else (value.size != 1):
            kind = f"one number per atom, shape ({num_atoms},)" if atom else "one number per structure"
            raise MatscimlError(f"training sample {index}: {target!r} has shape {value.shape}, but regression "
                                f"predicts {kind}; choose scalar targets")
        return value.reshape(-1)

    def baseline_kinds(self, metadata: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Per-atom targets are predicted per atom; the others by their readout (sum: extensive)."""
        per_atom = self._arities(metadata)
        return {target: "atom" if atom else ("extensive" if self.readout.get(target) == "sum" else "intensive")
                for target, atom in zip(self.targets, per_atom)}

    # ------------------------------------------------------------ prediction
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.predict(batch)

    @property
    def num_datasets(self) -> int:
        """How many datasets the statistics were fitted on (one row of ``target_mean`` each)."""
        return int(self.target_mean.shape[0])

    def dataset_rows(self, batch: Batch) -> torch.Tensor:
        """The statistics row of each structure of ``batch``: its ``dataset_index`` (0 for one dataset)."""
        index = batch.extras.get(DATASET_INDEX)
        if self.num_datasets == 1:
            return torch.zeros(batch.num_structures, dtype=torch.long, device=batch.num_atoms.device)
        if index is None:
            raise MatscimlError(f"this model was trained on {self.num_datasets} datasets, each with its own "
                                f"statistics, but the batch does not say which dataset its structures come from "
                                f"(no {DATASET_INDEX!r}); evaluate it on the run's datasets, or give each sample "
                                f"{DATASET_INDEX} (0..{self.num_datasets - 1}, in the run's dataset.name order)")
        index = index.to(torch.long)
        if bool(((index < 0) | (index >= self.num_datasets)).any()):
            raise MatscimlError(f"{DATASET_INDEX} of a structure is outside 0..{self.num_datasets - 1}, the datasets "
                                f"this model was trained on; give each sample the index of its dataset in the run's "
                                f"dataset.name list")
        return index

    def _statistics(self, batch: Batch, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` of each structure, ``[B, T]``: its dataset's row."""
        rows = self.dataset_rows(batch)
        return self.target_mean.to(dtype)[rows], self.target_std.to(dtype)[rows]

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{target: [B] or [N]}`` in the targets' own units."""
        output = self.features(batch)
        atoms = output.atom_features
        readouts = [self._readout(i) for i in range(len(self.targets))]
        num_atoms = batch.num_atoms.to(atoms.dtype)
        mean, std = self._statistics(batch, atoms.dtype)  # [B, T]
        atom_mean, atom_std = mean[batch.structure_index], std[batch.structure_index]  # [N, T]
        per_atom_out = pooled_out = None
        if output.structure_features is not None:
            pooled_out = self.head(output.structure_features) * std + mean  # [B, T]
            if "atom" in readouts:
                per_atom_out = self.atom_head(atoms) * atom_std + atom_mean  # type: ignore[misc]
        else:
            if "atom" in readouts or "sum" in readouts:
                per_atom_out = self.head(atoms) * atom_std + atom_mean  # [N, T]
            if "mean" in readouts:
                pooled_out = self.head(mean_per_structure(atoms, batch.structure_index, batch.num_atoms)) * std + mean
        prediction = {}
        for i, (target, readout) in enumerate(zip(self.targets, readouts)):
            if readout == "atom":
                prediction[target] = per_atom_out[:, i]  # type: ignore[index]
            elif readout == "sum" and output.structure_features is not None:
                prediction[target] = pooled_out[:, i] * num_atoms  # type: ignore[index]
            elif readout == "sum":
                prediction[target] = sum_per_structure(per_atom_out[:, i], batch.structure_index,  # type: ignore[index]
                                                       batch.num_structures)
            else:
                prediction[target] = pooled_out[:, i]  # type: ignore[index]
        return prediction

    def loss(self, batch: Batch, prediction: dict[str, torch.Tensor]) -> torch.Tensor:
        losses = []
        _, std = self._statistics(batch, batch.pos.dtype)
        for i, target in enumerate(self.targets):
            truth = batch.targets[target].to(prediction[target].dtype)
            scale = std[:, i] if not self._per_atom[i] else std[batch.structure_index, i]
            normalised = (prediction[target] - truth) / scale.to(truth.dtype)
            if self._readout(i) == "sum":
                normalised = normalised / batch.num_atoms.to(normalised.dtype)  # the error per atom
            losses.append(normalised.abs().mean() if self.loss_name == "l1" else normalised.pow(2).mean())
        return torch.stack(losses).mean()

    def metrics(self, batch: Batch, prediction: Mapping[str, torch.Tensor]) -> dict[str, Metric]:
        """The MAE of each target in its own unit (over atoms for per-atom targets).

        With several datasets, also each dataset's: ``{target}_mae@{label}``
        (labels from :attr:`dataset_labels`, set by the run).
        """
        metrics = {f"{target}_mae": scalar_mae(prediction[target], batch.targets[target]) for target in self.targets}
        index = batch.extras.get(DATASET_INDEX)
        if index is None or self.num_datasets < 2:
            return metrics
        labels = self.dataset_labels or [f"dataset{number}" for number in range(self.num_datasets)]
        for number, label in enumerate(labels):
            chosen = index == number
            for target, atom in zip(self.targets, self._per_atom):
                mask = chosen[batch.structure_index] if atom else chosen
                metrics[f"{target}_mae@{label}"] = scalar_mae(prediction[target][mask], batch.targets[target][mask])
        return metrics
