"""Several datasets read as one, each sample tagged with the dataset it came from.

A run on several datasets (``dataset.name: [data/mp.lmdb, data/oqmd.lmdb]``)
trains one model on all of them while each keeps its own training
statistics: the same property computed with different codes or settings has
different offsets and spreads, and normalising them together would ask the
model to learn the difference between the sources. Each sample carries
``dataset_index`` (0, 1, ... in the order given), a built-in per-structure
field (:mod:`matsciml.fields`) that collate puts in ``batch.extras``, so a
task can normalise each structure with its own dataset's statistics.

Files of one dataset (a directory of ``*.lmdb``) are read as one dataset by
:class:`~matsciml.data.dataset.LMDBDataset` instead: they share statistics.
"""
from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch.utils.data

from matsciml.data.storage import merge_metadata

#: the per-structure field naming a sample's dataset in a run on several datasets
DATASET_INDEX = "dataset_index"


class ConcatenatedDatasets(torch.utils.data.Dataset):
    """``parts`` one after another, as one map-style dataset.

    Args:
        parts: the datasets, each a map-style dataset of samples.
        names: one name per part, as the user gave it (a path or a registered name).

    Sample ``i`` is sample ``i - start`` of the part holding it, with
    ``dataset_index`` set to the part's position. ``metadata`` is the parts'
    metadata merged (:func:`~matsciml.data.storage.merge_metadata`: counts
    add, a key declared differently by two parts is an error) with the part
    names under ``"datasets"``; None when a part has no metadata.
    """

    def __init__(self, parts: Sequence[Any], names: Sequence[str]) -> None:
        if len(parts) != len(names) or len(parts) < 2:
            raise ValueError("ConcatenatedDatasets needs two or more parts, one name each")
        self.parts = list(parts)
        self.names = [str(name) for name in names]
        self._ends: list[int] = np.cumsum([len(part) for part in self.parts]).tolist()
        records = [getattr(part, "metadata", None) for part in self.parts]
        self.metadata: dict[str, Any] | None = None
        if all(isinstance(record, Mapping) for record in records):
            named = [{**record, "name": record.get("name") or name} for record, name in zip(records, self.names)]
            self.metadata = {**merge_metadata(named), "datasets": list(self.names)}

    @property
    def keys(self) -> list[str] | None:
        """The keys decoded (the first part's; setting it sets every part's)."""
        return getattr(self.parts[0], "keys", None)

    @keys.setter
    def keys(self, value: list[str] | None) -> None:
        for part in self.parts:
            if hasattr(part, "keys"):
                part.keys = value

    @property
    def sizes(self) -> list[int]:
        """The number of samples of each part."""
        return [len(part) for part in self.parts]

    def __len__(self) -> int:
        return self._ends[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(part number, index within that part)`` of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} is out of range for {len(self)} samples of "
                             f"{len(self.parts)} datasets")
        part = bisect.bisect_right(self._ends, index)
        return part, index - (self._ends[part - 1] if part else 0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        part, local = self.locate(index)
        sample = dict(self.parts[part][local])
        sample[DATASET_INDEX] = np.int64(part)
        return sample

    def describe(self, index: int) -> tuple[int, str]:
        """``(index within its file, file or dataset name)``, for messages that name a sample."""
        part, local = self.locate(index)
        describe = getattr(self.parts[part], "describe", None)
        return describe(local) if describe is not None else (local, self.names[part])

    def close(self) -> None:
        for part in self.parts:
            close = getattr(part, "close", None)
            if callable(close):
                close()

    def __repr__(self) -> str:
        return f"ConcatenatedDatasets({', '.join(self.names)}; {len(self)} samples)"


def named_parts(dataset: Any, name: str) -> list[tuple[Any, str]]:
    """``(dataset, name)`` of each dataset read together, or of ``dataset`` alone (named ``name``)."""
    if isinstance(dataset, ConcatenatedDatasets):
        return list(zip(dataset.parts, dataset.names))
    return [(dataset, name)]


def dataset_labels(names: Sequence[str]) -> list[str]:
    """Short, distinct labels of several datasets for metric names (``band_gap_mae@mp``).

    The file or folder name without ``.lmdb`` for a path, the name for a
    registered dataset; characters other than letters, digits, ``.``, ``_``
    and ``-`` become ``_``; a label taken twice gets ``-2``, ``-3``...
    """
    import re
    from pathlib import PurePath

    labels: list[str] = []
    for name in names:
        stem = PurePath(str(name).rstrip("/\\")).name
        stem = stem[: -len(".lmdb")] if stem.endswith(".lmdb") else stem
        label = re.sub(r"[^A-Za-z0-9._-]", "_", stem) or "dataset"
        candidate, number = label, 2
        while candidate in labels:
            candidate, number = f"{label}-{number}", number + 1
        labels.append(candidate)
    return labels
