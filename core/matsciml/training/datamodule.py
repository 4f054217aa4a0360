"""A LightningDataModule over any registered dataset or dataset files.

It opens the dataset (a registered name or a path to LMDB files), splits it
deterministically from a seed (or reuses a recorded split), applies the
representation to each sample in the loader's workers, and collates batches
with the representation's ``collate``.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from matsciml.data.splits import Split, make_split
from matsciml.errors import MatscimlError


def open_dataset(name_or_path: str | os.PathLike[str], keys: Iterable[str] | None = None,
                 options: Mapping[str, Any] | None = None) -> Dataset:
    """A registered dataset by name, or dataset files/directories by path."""
    path = Path(name_or_path)
    if path.exists() or path.suffix == ".lmdb" or os.sep in str(name_or_path):
        from matsciml.data.dataset import LMDBDataset

        return LMDBDataset(path, keys=keys)
    from matsciml.registry import get_registry

    spec = get_registry().dataset(str(name_or_path))
    params = dict(options or {})
    if keys is not None and "keys" in spec.defaults:
        params["keys"] = list(keys)
    return spec.build(**params)


class RepresentedDataset(Dataset):
    """``dataset[i]`` passed through a representation (runs in loader workers)."""

    def __init__(self, dataset: Dataset, representation: Any) -> None:
        self.dataset = dataset
        self.representation = representation

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.representation(self.dataset[index])


class MatSciDataModule(pl.LightningDataModule):
    """Splits, loaders and collation for one dataset and one representation.

    Args:
        dataset: registered dataset name, or path to LMDB file(s)/directory.
        representation: object with ``__call__(sample)`` and ``collate(items)``.
        batch_size: structures per batch.
        num_workers: DataLoader worker processes (0 = in the main process).
        split: fractions of (train, val, test).
        seed: seed of the split and of training-set shuffling.
        keys: sample keys to read (targets plus structure), all when None.
        split_indices: a recorded :class:`~matsciml.data.splits.Split` to reuse.
        dataset_options: keyword options of a registered dataset's factory.
    """

    def __init__(self, dataset: str, representation: Any, batch_size: int = 8, num_workers: int = 0,
                 split: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, keys: Iterable[str] | None = None,
                 split_indices: Split | None = None, dataset_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.dataset_name = str(dataset)
        self.representation = representation
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.split_fractions = tuple(split)
        self.seed = int(seed)
        self.keys = None if keys is None else list(keys)
        self.dataset_options = dict(dataset_options or {})
        self.split: Split | None = split_indices
        self.dataset: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset = open_dataset(self.dataset_name, self.keys, self.dataset_options)
        size = len(self.dataset)  # type: ignore[arg-type]
        if self.split is None:
            self.split = make_split(size, self.split_fractions, self.seed)
        elif self.split.num_samples != size:
            raise MatscimlError(f"the recorded split is for {self.split.num_samples} samples but dataset "
                                f"{self.dataset_name!r} has {size}; it is not the dataset the run was trained on")

    def subset(self, part: str) -> Subset:
        """The raw samples of ``part`` (train, val, test) or ``all``."""
        self.setup()
        if part == "all":
            return Subset(self.dataset, list(range(len(self.dataset))))  # type: ignore[arg-type]
        if part not in ("train", "val", "test"):
            raise MatscimlError(f"unknown split {part!r}; use train, val, test or all")
        indices = self.split[part]  # type: ignore[index]
        if not indices:
            raise MatscimlError(f"the {part} split of {self.dataset_name!r} is empty; change the split fractions")
        return Subset(self.dataset, indices)

    def loader(self, part: str, shuffle: bool = False) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            RepresentedDataset(self.subset(part), self.representation),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=self.representation.collate,
            persistent_workers=self.num_workers > 0,
            generator=generator if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def samples(self, part: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Raw samples of a split, for statistics and baselines.

        With ``limit``, a seeded random subset of at most that many, so that
        memory stays flat in the dataset's size.
        """
        subset = self.subset(part)
        positions = range(len(subset))
        if limit is not None and len(subset) > limit:
            generator = torch.Generator().manual_seed(self.seed)
            positions = sorted(torch.randperm(len(subset), generator=generator)[:limit].tolist())
        return [subset[i] for i in positions]
