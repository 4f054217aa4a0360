"""A ``torch.utils.data.Dataset`` over one or more matsciml LMDB files.

Safe with multi-process DataLoaders: files are opened lazily in each
process (see :class:`~matsciml.data.storage.DatasetFile`), so the dataset
can be pickled to workers with no open handle in it.
"""
from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch.utils.data

from matsciml.data.schema import Sample
from matsciml.data.storage import DatasetFile, keys_in_every_sample, merge_metadata
from matsciml.fields import dataset_fields, declare_dataset_fields



def resolve_dataset_paths(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named, or every ``*.lmdb`` file (sorted) in a directory named."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted(p for p in entry.glob("*.lmdb") if not p.name.startswith("."))
            if not found:
                raise FileNotFoundError(f"{entry} is a directory with no *.lmdb dataset files in it")
            files.extend(found)
        elif entry.is_file():
            files.append(entry)
        else:
            raise FileNotFoundError(f"{entry}: no such dataset file or directory")
    if not files:
        raise ValueError("no dataset files given")
    return files


class LMDBDataset(torch.utils.data.Dataset):
    """Samples from one or more dataset files, read as one dataset.

    Args:
        paths: a file, a directory of ``*.lmdb`` files, or a list of either.
        keys: decode only these keys (all when None); ``atomic_numbers``,
            ``pos``, ``cell`` and ``pbc`` are always kept.
    """

    def __init__(self, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 keys: Iterable[str] | None = None) -> None:
        self.files = [DatasetFile(path) for path in resolve_dataset_paths(paths)]
        self._ends = []
        total = 0
        for file in self.files:
            total += len(file)
            self._ends.append(total)
        self.keys = None if keys is None else sorted({*keys, "atomic_numbers", "pos", "cell", "pbc"})
        self.metadata: dict[str, Any] = merge_metadata([file.metadata for file in self.files])
        self._declare_fields()

    def _declare_fields(self) -> None:
        """Tell this process the role and arity conversion recorded for the dataset's custom keys."""
        declare_dataset_fields(self.metadata, source=", ".join(str(f.path) for f in self.files))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a DataLoader worker started with spawn gets a fresh process: declare the fields there too
        self.__dict__.update(state)
        self._declare_fields()

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, index: int) -> Sample:
        file, local_index = self.locate(index)
        return file.read(local_index, keys=self.keys)

    def locate(self, index: int) -> tuple[DatasetFile, int]:
        """The file holding sample ``index`` and its index within that file."""
        length = len(self)
        asked = index
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError(f"sample index {asked} is out of range for a dataset of {length} samples")
        file_number = bisect.bisect_right(self._ends, index)
        start = self._ends[file_number - 1] if file_number else 0
        return self.files[file_number], index - start

    def describe(self, index: int) -> tuple[int, str]:
        """``(index within its file, file path)``, for messages that name a sample."""
        file, local_index = self.locate(index)
        return local_index, str(file.path)

    @property
    def targets(self) -> list[str]:
        """Keys whose role is target and that every sample carries (energy, forces, properties...)."""
        fields = dataset_fields(self.metadata)
        return sorted(key for key in keys_in_every_sample(self.metadata)
                      if key in fields and fields[key].role == "target" and self.metadata["keys"][key]["dtype"] != "str")

    def close(self) -> None:
        for file in self.files:
            file.close()

    def __repr__(self) -> str:
        names = ", ".join(str(f.path) for f in self.files)
        return f"LMDBDataset({names}; {len(self)} samples)"
