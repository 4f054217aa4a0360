"""A LightningDataModule over any registered dataset or dataset files.

It opens the dataset (a registered name, a path to LMDB files, or a dataset
object), splits it deterministically from a seed (or reuses a recorded
split), applies the representation to each sample in the loader's workers,
and collates batches with the representation's ``collate``.

The split is the data module's state (``state_dict``), which Lightning keeps
in every checkpoint and restores on resume. Statistics and baselines read
samples one at a time (:meth:`MatSciDataModule.iter_samples`), from a
seeded sample of at most ``statistics_samples`` training structures, so no
step holds a whole split in memory.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from matsciml.batch import Batch
from matsciml.data.schema import validate_sample
from matsciml.data.concatenated import ConcatenatedDatasets, named_parts
from matsciml.data.splits import Split, join_splits, make_split, split_summary
from matsciml.errors import DatasetFormatError, InvalidSampleError, MatscimlError
from matsciml.fields import declare_dataset_fields, field_spec

if TYPE_CHECKING:
    from matsciml.registry import Registry


def open_dataset(name_or_path: str | os.PathLike[str] | Sequence[str], keys: Iterable[str] | None = None,
                 options: Mapping[str, Any] | None = None, registry: Registry | None = None) -> Dataset:
    """A registered dataset by name (from ``registry``, the process's by default), or dataset files by path.

    A list of two or more names or paths opens each and reads them one after
    another, each sample tagged with its dataset
    (:class:`~matsciml.data.concatenated.ConcatenatedDatasets`).
    """
    if isinstance(name_or_path, (list, tuple)):
        names = [str(name) for name in name_or_path]
        if len(names) == 1:
            return open_dataset(names[0], keys, options, registry)
        parts = []
        try:
            for name in names:
                parts.append(open_dataset(name, keys, options, registry))
            return ConcatenatedDatasets(parts, names)
        except BaseException:
            for part in parts:
                close = getattr(part, "close", None)
                if callable(close):
                    close()
            raise
    path = Path(name_or_path)
    if path.exists() or path.suffix == ".lmdb" or os.sep in str(name_or_path):
        from matsciml.data.dataset import LMDBDataset

        return LMDBDataset(path, keys=keys)
    if registry is None:
        from matsciml.registry import get_registry

        registry = get_registry()
    spec = registry.dataset(str(name_or_path))
    params = dict(options or {})
    if keys is not None and "keys" in spec.defaults:
        params["keys"] = list(keys)
    return spec.build(**params)


_MISSING = object()


def _is_name_list(value: Any) -> bool:
    """Whether ``value`` names several datasets (a list or tuple of names or paths)."""
    return isinstance(value, (list, tuple)) and all(isinstance(item, (str, os.PathLike)) for item in value)


def _per_structure(key: str, metadata: Mapping[str, Any]) -> bool:
    """Whether a dataset's key has one value per structure (registry first, then the metadata)."""
    try:
        return field_spec(key, metadata).arity == "structure"
    except MatscimlError:
        info = metadata.get("keys", {}).get(key, {})
        return not info.get("per_atom", False) and info.get("arity", "structure") == "structure"


def _group_value(value: Any, where: str, key: str, setting: str, fix: str) -> Hashable:
    """A sample's group id as a hashable Python value (a number, a string or a bool)."""
    if value is _MISSING:
        raise MatscimlError(f"{setting}: {where} has no key {key!r}, and every sample needs its group; {fix}")
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "biuf":
        what = f"an array of shape {tuple(array.shape)}" if array.size != 1 else f"of type {array.dtype}"
        raise MatscimlError(f"{setting}: {key!r} of {where} is {what}, not one number or string per structure, "
                            f"so it cannot name the sample's group; {fix}")
    return array.reshape(()).item()


@dataclass(frozen=True)
class ReadFailure:
    """A sample that could not be read or failed validation (kept apart, named)."""

    name: str
    reason: str


class CheckedReader:
    """Reads samples of a dataset, checked against the schema, each named by its source.

    Every sample read for training, statistics or evaluation passes through
    here: damage found by the storage layer (checksums, undecodable records)
    and schema violations (non-finite values, coincident atoms, degenerate
    cells) become a :class:`ReadFailure` naming the file and the sample
    instead of reaching the model. Failures are returned, not raised, so that
    they cross DataLoader worker processes as data and the main process
    decides what to do (stop, or skip under ``data.skip_invalid``).

    Args:
        dataset: a dataset of samples (an :class:`~matsciml.data.dataset.LMDBDataset`
            names files; others are named by ``dataset_name``).
        dataset_name: how to name the dataset in messages when it has no files.
        validate: check each sample with :func:`~matsciml.data.schema.validate_sample`.
    """

    def __init__(self, dataset: Dataset, dataset_name: str, validate: bool = True) -> None:
        self.dataset = dataset
        self.dataset_name = dataset_name
        self.validate = validate

    def name(self, index: int) -> str:
        """``"sample 17 of data/lips.lmdb"`` (the index within its file)."""
        local_index, source = self._where(index)
        return f"sample {local_index} of {source}"

    def _where(self, index: int) -> tuple[int, str]:
        """``(index within its file, file)`` for datasets that name files, else the dataset's own name."""
        describe = getattr(self.dataset, "describe", None)
        return describe(index) if describe is not None else (index, self.dataset_name)

    def read(self, index: int) -> dict[str, Any] | ReadFailure:
        try:
            sample = self.dataset[index]
            if self.validate:
                local_index, source = self._where(index)
                sample = validate_sample(sample, index=local_index, source=source)
        except (InvalidSampleError, DatasetFormatError) as exc:
            return ReadFailure(self.name(index), str(exc))
        return sample


class RepresentedDataset(Dataset):
    """Samples of some dataset indices, checked and passed through a representation.

    Item ``i`` is ``(name of the sample, representation item)`` or a
    :class:`ReadFailure`; :class:`NamedCollate` builds the batch.
    """

    def __init__(self, reader: CheckedReader, indices: Sequence[int], representation: Any) -> None:
        self.reader = reader
        self.indices = list(indices)
        self.representation = representation

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[str, Any] | ReadFailure:
        index = self.indices[position]
        sample = self.reader.read(index)
        if isinstance(sample, ReadFailure):
            return sample
        return self.reader.name(index), self.representation(sample)


@dataclass
class InvalidBatch:
    """What a loader yields when no sample of a batch could be used.

    Tasks stop on it, naming the samples, or skip it under
    ``data.skip_invalid`` (then it counts in the run's summary).
    """

    failures: list[ReadFailure]
    skip_invalid: bool

    def to(self, device: Any, non_blocking: bool = False) -> "InvalidBatch":
        return self

    def __len__(self) -> int:
        return 0


class NamedCollate:
    """The representation's collate, plus the names of the samples and the failures.

    A batch with unreadable or invalid samples becomes an :class:`InvalidBatch`
    (training stops on it) unless ``skip_invalid``; then the good samples are
    collated and the others listed in ``batch.skipped``.
    """

    def __init__(self, representation: Any, skip_invalid: bool = False) -> None:
        self.representation = representation
        self.skip_invalid = skip_invalid

    def __call__(self, items: Sequence[tuple[str, Any] | ReadFailure]) -> Batch | InvalidBatch:
        failures = [item for item in items if isinstance(item, ReadFailure)]
        good = [item for item in items if not isinstance(item, ReadFailure)]
        if not good or (failures and not self.skip_invalid):
            return InvalidBatch(failures, self.skip_invalid)
        batch = self.representation.collate([item for _, item in good])
        batch.sample_names = [name for name, _ in good]
        batch.skipped = [(failure.name, failure.reason) for failure in failures]
        return batch


def process_rank() -> tuple[int, int]:
    """``(rank, world size)`` of this process in distributed training, ``(0, 1)`` outside it."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochOrder(torch.utils.data.Sampler):
    """Positions ``0..n-1``, in an order that depends only on the seed and the epoch.

    With ``shuffle`` each epoch is a permutation drawn from numpy's PCG64
    seeded with ``(seed, epoch)``; without, the positions in order. The
    order never depends on how many epochs this process has run, so a run
    resumed at epoch k draws the order the uninterrupted run drew. Lightning
    calls :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, num_samples: int, shuffle: bool, seed: int) -> None:
        self.num_samples = int(num_samples)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = np.random.default_rng([self.seed, self.epoch])
        return iter(generator.permutation(self.num_samples).tolist())


class RankBatches(torch.utils.data.Sampler):
    """Batches of ``batch_size`` structures per process, cut from global batches.

    The order (:class:`EpochOrder`) is cut into global batches of
    ``batch_size × world size`` positions, the batches a single process
    with that batch size would see, and each rank takes its contiguous share
    of each. So every sample is read once per epoch, by one rank, and every
    rank takes the same number of steps (DDP's gradient averaging needs
    that). A last global batch is shared as evenly as it allows; when it has
    fewer samples than there are ranks, it is left out of that epoch (at most
    world size − 1 samples, different ones each shuffled epoch), because
    some rank would have nothing to step on. Outside distributed training,
    and for ``distributed=False`` loaders, it is plain batching of the order.
    """

    def __init__(self, sampler: EpochOrder, batch_size: int, distributed: bool = True) -> None:
        self.sampler = sampler  # Lightning finds set_epoch here (batch_sampler.sampler)
        self.batch_size = int(batch_size)
        self.distributed = bool(distributed)

    def _layout(self) -> tuple[int, int]:
        return process_rank() if self.distributed else (0, 1)

    def __len__(self) -> int:
        _, world = self._layout()
        size = self.batch_size * world
        full, rest = divmod(len(self.sampler), size)
        return full + (1 if rest >= world else 0)

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = self._layout()
        order = list(self.sampler)
        size = self.batch_size * world
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            if len(chunk) < world:
                return
            share, extra = divmod(len(chunk), world)
            begin = rank * share + min(rank, extra)
            yield chunk[begin:begin + share + (1 if rank < extra else 0)]


class MatSciDataModule(pl.LightningDataModule):
    """Splits, loaders and collation for one dataset and one representation.

    Args:
        dataset: registered dataset name, path to LMDB file(s)/directory, a
            list of two or more of those (several datasets read together, each
            sample tagged with its ``dataset_index``, each split on its own by
            its own group key), or a map-style dataset object of samples.
        representation: object with ``__call__(sample)`` and ``collate(items)``.
        batch_size: structures per batch.
        num_workers: DataLoader worker processes (0 = in the main process).
        split: fractions of (train, val, test).
        seed: seed of the split and of the statistics sample (properties of the dataset's use).
        order_seed: seed of the training order (with the epoch: :class:`EpochOrder`), a property
            of the run (``run.seed``); ``seed`` when None.
        keys: sample keys to read (targets plus structure), all when None.
        split_indices: a recorded :class:`~matsciml.data.splits.Split` to reuse.
        dataset_options: keyword options of a registered dataset's factory.
        skip_invalid: leave out samples that fail their checks (and count
            them) instead of stopping.
        validate: check each sample read against the schema.
        statistics_samples: at most this many training structures, chosen
            with ``seed``, are read to fit statistics and baselines (None: all).
        registry: where registered dataset names are looked up (the
            process's registry when None).
        split_by: how samples are kept together when no split is given:
            None splits by the dataset's group key when its metadata
            declares one (``group_key``), else by sample; ``"sample"`` by
            sample; any other name is a per-structure key, in every sample,
            whose values are the groups (e.g. ``"system_id"``), and no group
            is in two parts. A split by group prints one line on standard error.
    """

    def __init__(self, dataset: str | os.PathLike[str] | Dataset, representation: Any, batch_size: int = 8,
                 num_workers: int = 0, split: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                 keys: Iterable[str] | None = None, split_indices: Split | None = None,
                 dataset_options: Mapping[str, Any] | None = None, skip_invalid: bool = False,
                 validate: bool = True, statistics_samples: int | None = 10000,
                 registry: Registry | None = None, split_by: str | None = None,
                 order_seed: int | None = None) -> None:
        super().__init__()
        named = isinstance(dataset, (str, os.PathLike)) or _is_name_list(dataset)
        given = None if named else dataset
        #: the dataset as configured: a name or path, or a list of them (several datasets)
        self.dataset_source: str | list[str] = ([str(name) for name in dataset] if _is_name_list(dataset)
                                                else str(dataset) if given is None else "")
        self.dataset_name = (" + ".join(self.dataset_source) if isinstance(self.dataset_source, list)
                             else self.dataset_source or str(getattr(given, "name", type(given).__name__)))
        self.representation = representation
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.split_fractions = tuple(split)
        self.seed = int(seed)
        self.order_seed = self.seed if order_seed is None else int(order_seed)
        self.keys = None if keys is None else list(keys)
        self.dataset_options = dict(dataset_options or {})
        self.split: Split | None = split_indices
        self.skip_invalid = bool(skip_invalid)
        self.validate = bool(validate)
        self.statistics_samples = None if statistics_samples is None else int(statistics_samples)
        self.registry = registry
        self.split_by = split_by
        self.dataset: Dataset | None = given
        self.reader: CheckedReader | None = None
        #: samples left out of statistics under ``skip_invalid``: name -> reason
        self.skipped: dict[str, str] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.reader is not None:
            return
        if self.dataset is None:
            self.dataset = open_dataset(self.dataset_source, self.keys, self.dataset_options, self.registry)
        if self.metadata:
            # collate (here and in loader workers started later) learns the dataset's own keys
            fields = declare_dataset_fields(self.metadata, source=self.dataset_name)
            read_keys = getattr(self.dataset, "keys", None)
            if read_keys is not None:
                # model inputs (a total charge, a spin) always reach the backbone, whatever keys were asked for
                inputs = {key for key, spec in fields.items() if spec.role == "input"}
                self.dataset.keys = sorted({*read_keys, *inputs})
        size = len(self.dataset)  # type: ignore[arg-type]
        if self.split is None:
            if isinstance(self.dataset, ConcatenatedDatasets):
                # each dataset split on its own, by its own group key: each keeps the fractions in every part
                splits = []
                for part, name in named_parts(self.dataset, self.dataset_name):
                    group_key = self.group_key(getattr(part, "metadata", None))
                    groups = None if group_key is None else self._groups_of(part, name, group_key)
                    splits.append(self._make_split(len(part), groups, group_key, name))
                    print(f"matsciml: {name}: {split_summary(splits[-1], groups)}", file=sys.stderr)
                self.split = join_splits(splits)
            else:
                group_key = self.group_key()
                groups = None if group_key is None else self.read_groups(group_key)
                self.split = self._make_split(size, groups, group_key, self.dataset_name)
                if groups is not None:
                    print(f"matsciml: {split_summary(self.split, groups)}", file=sys.stderr)
        else:
            self._check_split(self.split)
        self.reader = CheckedReader(self.dataset, self.dataset_name, validate=self.validate)

    def _make_split(self, size: int, groups: list[Hashable] | None, group_key: str | None, name: str) -> Split:
        """A new seeded split of one dataset, by group when ``groups`` are given."""
        if groups is None:
            return make_split(size, self.split_fractions, self.seed)
        try:
            return make_split(size, self.split_fractions, self.seed, groups=groups, group_key=group_key)
        except ValueError as exc:
            raise MatscimlError(f"dataset {name!r}: {exc} (dataset.split_by=sample splits by sample)") from None

    @property
    def dataset_names(self) -> list[str]:
        """The name of each dataset of the run: one, or several read together."""
        return list(self.dataset_source) if isinstance(self.dataset_source, list) else [self.dataset_name]

    def _check_split(self, split: Split) -> None:
        size = len(self.dataset)  # type: ignore[arg-type]
        if split.num_samples != size:
            raise MatscimlError(f"the recorded split is for {split.num_samples} samples but dataset "
                                f"{self.dataset_name!r} has {size}; it is not the dataset the run was trained on")

    def group_key(self, metadata: Mapping[str, Any] | None = _MISSING) -> str | None:  # type: ignore[assignment]
        """The key whose values group the samples of a new split, or None to split by sample.

        ``split_by`` when it names a key, else the ``group_key`` the dataset's
        metadata declares (None for ``split_by="sample"``); ``metadata`` is
        one dataset's of several (the data module's own by default).
        """
        if self.split_by == "sample":
            return None
        if self.split_by is not None:
            return str(self.split_by)
        declared = ((self.metadata if metadata is _MISSING else metadata) or {}).get("group_key")
        return declared if isinstance(declared, str) and declared else None

    def read_groups(self, key: str) -> list[Hashable]:
        """The value of ``key`` in every sample, as hashable Python numbers or strings.

        Only that key is read (files of an LMDB dataset decode nothing else).
        Under ``skip_invalid`` a sample that cannot be read is a group of its
        own (it is left out when read); otherwise its damage is the error.

        Raises:
            MatscimlError: the key is in no sample (the per-structure keys
                available are listed), is per atom, or is missing from a
                sample (named).
        """
        if isinstance(self.dataset, ConcatenatedDatasets):
            # a group of one dataset is never a group of another: ids are (dataset, value)
            return [(number, value) for number, (part, name) in enumerate(named_parts(self.dataset, self.dataset_name))
                    for value in self._groups_of(part, name, key)]
        return self._groups_of(self.dataset, self.dataset_name, key)

    def _groups_of(self, dataset: Any, dataset_name: str, key: str) -> list[Hashable]:
        """:meth:`read_groups` of one dataset."""
        setting = f"dataset.split_by={key}" if self.split_by is not None else \
            f"the dataset's group key {key!r} (metadata group_key)"
        fix = "set dataset.split_by to a per-structure key every sample has, or dataset.split_by=sample"
        metadata = getattr(dataset, "metadata", None)
        metadata = metadata if isinstance(metadata, Mapping) else None
        if metadata is not None and isinstance(metadata.get("keys"), Mapping):
            recorded = metadata["keys"]
            if key not in recorded:
                available = sorted(name for name, info in recorded.items()
                                   if _per_structure(name, metadata) and (info.get("dtype") == "str"
                                                                          or info.get("shape") == []))
                raise MatscimlError(f"{setting}: dataset {dataset_name!r} has no key {key!r} in any sample; "
                                    f"its per-structure keys are {', '.join(available) or '(none)'}; {fix}")
            if not _per_structure(key, metadata):
                raise MatscimlError(f"{setting}: key {key!r} of dataset {dataset_name!r} has one value per "
                                    f"atom, not one per structure, so it cannot name a sample's group; {fix}")
        files = getattr(dataset, "files", None)
        if files is not None and hasattr(dataset, "locate"):  # an LMDBDataset: decode only that key
            groups: list[Hashable] = []
            for file in files:
                for i in range(len(file)):
                    try:
                        value = file.read(i, keys=[key]).get(key, _MISSING)
                    except DatasetFormatError:
                        if not self.skip_invalid:
                            raise
                        groups.append(("unreadable sample", len(groups)))  # a group of its own, skipped when read
                        continue
                    groups.append(_group_value(value, f"sample {i} of {file.path}", key, setting, fix))
            return groups
        asked = getattr(dataset, "keys", None)
        if isinstance(asked, list):  # a dataset that decodes only some keys: add this one while reading
            dataset.keys = sorted({*asked, key})  # type: ignore[union-attr]
        try:
            reader = CheckedReader(dataset, dataset_name, validate=False)  # type: ignore[arg-type]
            return [_group_value(dataset[i].get(key, _MISSING), reader.name(i), key, setting, fix)  # type: ignore[index]
                    for i in range(len(dataset))]  # type: ignore[arg-type]
        finally:
            if isinstance(asked, list):
                dataset.keys = asked  # type: ignore[union-attr]

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The dataset's metadata record (keys, units, statistics), or None for a dataset without one."""
        metadata = getattr(self.dataset, "metadata", None)
        return metadata if isinstance(metadata, Mapping) else None

    # ------------------------------------------------------------ state (Lightning saves it in checkpoints)
    def state_dict(self) -> dict[str, Any]:
        """The split (indices included), so a checkpoint resumes on exactly the same split."""
        return {"split": self.split.to_json()} if self.split is not None else {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Reuse the split recorded by :meth:`state_dict` (Lightning calls this when resuming)."""
        if "split" not in state_dict:
            return
        try:
            split = Split.from_json(state_dict["split"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MatscimlError(f"the split saved in this checkpoint's data module state is not valid "
                                f"({type(exc).__name__}: {exc}); use another checkpoint of the run") from None
        if self.dataset is not None:
            self._check_split(split)
        self.split = split

    # ------------------------------------------------------------ splits and loaders
    def indices(self, part: str) -> list[int]:
        """Dataset indices of ``part`` (train, val, test) or ``all``."""
        self.setup()
        if part == "all":
            return list(range(len(self.dataset)))  # type: ignore[arg-type]
        if part not in ("train", "val", "test"):
            raise MatscimlError(f"unknown split {part!r}; use train, val, test or all")
        indices = self.split[part]  # type: ignore[index]
        if not indices:
            raise MatscimlError(f"the {part} split of {self.dataset_name!r} is empty; change the split fractions")
        return list(indices)

    def loader(self, part: str, shuffle: bool = False, shard: bool = False) -> DataLoader:
        """A loader over one part of the split.

        ``shuffle`` draws a new order each epoch from ``(seed, epoch)`` alone
        (:class:`EpochOrder`), so a run resumed at an epoch sees the batches the
        uninterrupted run saw. ``shard`` gives this process its share of each
        batch under distributed training (:class:`RankBatches`); loaders for
        evaluation and statistics are not sharded: one process reads them whole.
        """
        order = EpochOrder(len(self.indices(part)), shuffle=shuffle, seed=self.order_seed)
        batches = RankBatches(order, self.batch_size, distributed=shard)
        return DataLoader(
            RepresentedDataset(self.reader, self.indices(part), self.representation),  # type: ignore[arg-type]
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=NamedCollate(self.representation, self.skip_invalid),
            persistent_workers=self.num_workers > 0,
            # the loader's own generator seeds its workers: iterating never draws from the global RNG, which a
            # resumed run restores from its checkpoint (matsciml.training.resume)
            generator=torch.Generator().manual_seed(self.order_seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True, shard=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", shard=True)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def example_batch(self, num_structures: int = 2, attempts: int = 16) -> Batch | None:
        """A small batch of the first readable training samples, to try a backbone on before training.

        Samples that fail their checks are passed over here (training names
        them); None when none of the first ``attempts`` can be read.
        """
        items = []
        for index in self.indices("train")[:attempts]:
            sample = self.reader.read(index)  # type: ignore[union-attr]
            if isinstance(sample, ReadFailure):
                continue
            items.append((self.reader.name(index), self.representation(sample)))  # type: ignore[union-attr]
            if len(items) == num_structures:
                break
        if not items:
            return None
        return NamedCollate(self.representation)(items)  # type: ignore[return-value]

    # ------------------------------------------------------------ samples for statistics and baselines
    def iter_samples(self, part: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Checked samples of a split, read one at a time (memory independent of the split's size).

        With ``limit``, a seeded random subset of at most that many, in index
        order. A sample that fails its checks stops here, naming it, unless
        ``skip_invalid`` (then it is left out and recorded in ``self.skipped``).
        """
        indices = self.indices(part)
        if limit is not None and len(indices) > limit:
            generator = torch.Generator().manual_seed(self.seed)
            chosen = sorted(torch.randperm(len(indices), generator=generator)[:limit].tolist())
            indices = [indices[i] for i in chosen]
        for index in indices:
            sample = self.reader.read(index)  # type: ignore[union-attr]
            if isinstance(sample, ReadFailure):
                if not self.skip_invalid:
                    raise InvalidSampleError(f"{sample.reason}; fix or remove it, or set data.skip_invalid=true "
                                             f"to leave out samples that fail validation")
                self.skipped[sample.name] = sample.reason
                continue
            yield sample

    def statistics_sample(self) -> Iterator[dict[str, Any]]:
        """The training samples statistics are fitted on: at most ``statistics_samples``, seeded, streamed."""
        return self.iter_samples("train", limit=self.statistics_samples)

    def samples(self, part: str, limit: int | None = None) -> list[dict[str, Any]]:
        """:meth:`iter_samples` as a list (small splits and tests; statistics stream instead)."""
        return list(self.iter_samples(part, limit))
