"""The on-disk format: LMDB files of plain arrays, with a metadata record.

Why this format: LMDB gives random access with no parsing and is safe to
read from many DataLoader worker processes; storing plain bytes with a
dtype and shape (never pickle) means opening a file cannot run code from it.

Each record is ``b"MSML" + uint32 header length + JSON header + payload``;
the header lists, per key, its dtype (a numpy dtype string, or ``"utf8"``
for text), shape and byte range in the payload. Keys of samples are their
index as 8 big-endian bytes; the metadata record is JSON under
``b"__metadata__"``.

Writes are atomic: :class:`DatasetWriter` writes a hidden temporary file
beside the target and renames it over the target only when everything,
metadata included, is on disk. A killed conversion leaves no dataset.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from matsciml import __version__
from matsciml.data.schema import KNOWN_KEYS, SCHEMA_VERSION, Sample, is_per_atom, unit_of, validate_sample
from matsciml.errors import DatasetFormatError

FORMAT_NAME = "matsciml-lmdb"
METADATA_KEY = b"__metadata__"
_MAGIC = b"MSML"
_ALLOWED_DTYPE_KINDS = "biuf"
_DEFAULT_MAP_SIZE = 1 << 36  # 64 GiB of address space; the file holds only what is written
_COMMIT_EVERY = 512
_MAX_REJECTED_RECORDED = 1000


def sample_key(index: int) -> bytes:
    return struct.pack(">Q", index)


# ---------------------------------------------------------------- record codec
def encode_sample(sample: Mapping[str, Any]) -> bytes:
    """Serialise a sample to bytes (numeric arrays and UTF-8 strings only)."""
    entries = []
    chunks = []
    offset = 0
    for key, value in sample.items():
        if isinstance(value, str):
            data = value.encode("utf-8")
            entries.append([key, "utf8", [], offset, len(data)])
        else:
            array = np.asarray(value)  # not ascontiguousarray: it turns scalars into shape (1,)
            if array.dtype.kind not in _ALLOWED_DTYPE_KINDS:
                raise TypeError(f"key {key!r}: dtype {array.dtype} cannot be stored (numbers, booleans, strings only)")
            data = array.tobytes()
            entries.append([key, array.dtype.str, list(array.shape), offset, len(data)])
        chunks.append(data)
        offset += len(data)
    header = json.dumps({"k": entries}, separators=(",", ":")).encode("utf-8")
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *chunks])


def decode_sample(record: bytes, *, keys: Iterable[str] | None = None) -> Sample:
    """Inverse of :func:`encode_sample`; ``keys`` restricts what is decoded."""
    if record[:4] != _MAGIC:
        raise DatasetFormatError("record does not start with the matsciml magic bytes; not a matsciml dataset")
    (header_length,) = struct.unpack_from("<I", record, 4)
    start = 8 + header_length
    header = json.loads(record[8:start])
    wanted = None if keys is None else set(keys)
    payload = memoryview(record)[start:]
    sample: Sample = {}
    for key, dtype, shape, offset, nbytes in header["k"]:
        if wanted is not None and key not in wanted:
            continue
        chunk = payload[offset:offset + nbytes]
        if dtype == "utf8":
            sample[key] = bytes(chunk).decode("utf-8")
            continue
        dtype = np.dtype(dtype)
        if dtype.kind not in _ALLOWED_DTYPE_KINDS:
            raise DatasetFormatError(f"key {key!r} has dtype {dtype}, which matsciml never writes")
        sample[key] = np.frombuffer(chunk, dtype=dtype).reshape(shape).copy()
    return sample


# ---------------------------------------------------------------- statistics
class _RunningStats:
    """Mean, std, min and max of every element seen, in float64.

    Chunks are combined with Chan et al.'s pairwise update of the sum of
    squared deviations, which stays accurate when the mean is large
    compared with the spread (energies of -1e5 eV varying by meV).
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.squared_deviations = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return
        chunk_mean = float(values.mean())
        chunk_m2 = float(np.square(values - chunk_mean).sum())
        self._combine(values.size, chunk_mean, chunk_m2)
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))

    def _combine(self, count: int, mean: float, squared_deviations: float) -> None:
        total = self.count + count
        delta = mean - self.mean
        self.squared_deviations += squared_deviations + delta * delta * self.count * count / total
        self.mean += delta * count / total
        self.count = total

    def as_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "std": math.sqrt(self.squared_deviations / self.count),
                "min": self.minimum, "max": self.maximum}


def merge_statistics(parts: list[dict[str, float]]) -> dict[str, float]:
    """Combine per-file statistics of one key into statistics of the union."""
    stats = _RunningStats()
    for part in parts:
        stats._combine(int(part["count"]), float(part["mean"]), float(part["std"]) ** 2 * int(part["count"]))
    merged = stats.as_dict()
    merged["min"] = min(p["min"] for p in parts)
    merged["max"] = max(p["max"] for p in parts)
    return merged


class _MetadataBuilder:
    """Collects what the metadata record says about the samples written."""

    def __init__(self, units: Mapping[str, str] | None) -> None:
        self.units = dict(units or {})
        self.count = 0
        self.keys: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, _RunningStats] = {}
        self.element_counts: dict[int, int] = {}
        self.atoms = _RunningStats()
        self.total_atoms = 0

    def add(self, sample: Sample) -> None:
        natoms = int(sample["atomic_numbers"].shape[0])
        self.count += 1
        self.atoms.add(np.array([natoms]))
        self.total_atoms += natoms
        elements, counts = np.unique(sample["atomic_numbers"], return_counts=True)
        for z, c in zip(elements.tolist(), counts.tolist()):
            self.element_counts[z] = self.element_counts.get(z, 0) + c
        for key, value in sample.items():
            if isinstance(value, str):
                info = self.keys.setdefault(key, {"dtype": "str", "shape": [], "per_atom": False, "count": 0})
                info["count"] += 1
                continue
            per_atom = is_per_atom(key, value, natoms)
            shape = ["N", *value.shape[1:]] if per_atom else list(value.shape)
            info = self.keys.setdefault(
                key, {"dtype": value.dtype.name, "shape": shape, "per_atom": per_atom, "count": 0}
            )
            info["count"] += 1
            if info["shape"] != shape and info["shape"] != "varies":
                info["shape"] = "varies"
            if info["per_atom"] != per_atom:
                info["per_atom"] = False
            if value.dtype.kind in "iuf" and key not in ("atomic_numbers",):
                self.stats.setdefault(key, _RunningStats()).add(value)

    def build(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        for key, info in self.keys.items():
            info["unit"] = unit_of(key, self.units)
        return {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "count": self.count,
            "keys": self.keys,
            "statistics": {key: stats.as_dict() for key, stats in self.stats.items() if stats.count},
            "elements": {str(z): n for z, n in sorted(self.element_counts.items())},
            "num_atoms": ({"min": int(self.atoms.minimum), "max": int(self.atoms.maximum),
                           "mean": self.atoms.mean, "total": self.total_atoms}
                          if self.count else {"min": 0, "max": 0, "mean": 0.0, "total": 0}),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "matsciml_version": __version__,
            **extra,
        }


# ---------------------------------------------------------------- writing
class DatasetWriter:
    """Write samples to a new LMDB dataset file, atomically.

    Use as a context manager; leaving the block with an exception, or the
    process dying, leaves nothing at ``path``::

        with DatasetWriter("out.lmdb", name="my-data", provenance={...}) as writer:
            for sample in samples:
                writer.append(sample)

    Args:
        path: the dataset file to create.
        name, description: shown by ``matsciml data inspect``.
        units: units of properties the schema does not know.
        provenance: where the data came from (files, command, generator).
        overwrite: replace an existing dataset at ``path``.
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None, description: str = "",
                 units: Mapping[str, str] | None = None, provenance: Mapping[str, Any] | None = None,
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} already exists; choose another output path or pass overwrite=True (--overwrite)")
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a directory; give a file name such as {self.path / 'data.lmdb'}")
        self.name = name or self.path.stem
        self.description = description
        self.provenance = dict(provenance or {})
        self.rejected: list[dict[str, Any]] = []
        self.num_rejected = 0
        self._metadata = _MetadataBuilder(units)
        self._temporary = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None
        self._pending = 0

    @property
    def count(self) -> int:
        return self._metadata.count

    def __enter__(self) -> "DatasetWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(self.path)
        self._env = lmdb.open(str(self._temporary), subdir=False, map_size=_DEFAULT_MAP_SIZE,
                              lock=False, readahead=False, meminit=False, sync=False)
        self._txn = self._env.begin(write=True)
        return self

    def append(self, sample: Mapping[str, Any], *, validate: bool = True, index: int | None = None,
               source: str | None = None) -> None:
        """Add one sample (validated against the schema unless ``validate=False``)."""
        if self._txn is None:
            raise RuntimeError("DatasetWriter.append called outside its `with` block")
        if validate:
            sample = validate_sample(sample, index=index, source=source)
        record = encode_sample(sample)
        self._txn.put(sample_key(self._metadata.count), record)
        self._metadata.add(sample)
        self._pending += 1
        if self._pending >= _COMMIT_EVERY:
            self._txn.commit()
            self._txn = self._env.begin(write=True)
            self._pending = 0

    def reject(self, *, index: int | None, source: str | None, reason: str) -> None:
        """Record a structure that was left out, with where it came from and why."""
        self.num_rejected += 1
        if len(self.rejected) < _MAX_REJECTED_RECORDED:
            self.rejected.append({"index": index, "source": source, "reason": reason})

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            metadata = self._metadata.build({
                "name": self.name,
                "description": self.description,
                "provenance": self.provenance,
                "rejected": self.rejected,
                "num_rejected": self.num_rejected,
            })
            self._txn.put(METADATA_KEY, json.dumps(metadata, indent=1).encode("utf-8"))
            self._txn.commit()
            self._txn = None
            self._env.sync(True)
            self._env.close()
            self._env = None
            os.replace(self._temporary, self.path)
            _fsync_directory(self.path.parent)
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        if self._env is not None:
            self._env.close()
            self._env = None
        self._temporary.unlink(missing_ok=True)


def _remove_stale_partials(target: Path) -> None:
    """Delete temporary files of earlier writers to ``target`` whose process is gone."""
    for partial in target.parent.glob(f".{target.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            partial.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_dataset(path: str | os.PathLike[str], samples: Iterable[Mapping[str, Any]], **options: Any) -> Path:
    """Write an iterable of samples to a new dataset file (see :class:`DatasetWriter`)."""
    with DatasetWriter(path, **options) as writer:
        for index, sample in enumerate(samples):
            writer.append(sample, index=index)
    return writer.path


# ---------------------------------------------------------------- reading
class DatasetFile:
    """Read access to one dataset file. Opened lazily, reopened after fork."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such dataset file")
        self._env: lmdb.Environment | None = None
        self._pid: int | None = None
        self.metadata = self._read_metadata()

    def _open(self) -> lmdb.Environment:
        if self._env is None or self._pid != os.getpid():
            self._env = _shared_environment(self.path)
            self._pid = os.getpid()
        return self._env

    def _read_metadata(self) -> dict[str, Any]:
        with self._open().begin() as txn:
            raw = txn.get(METADATA_KEY)
        if raw is None:
            raise DatasetFormatError(
                f"{self.path}: no matsciml metadata record; it was not written by matsciml. "
                f"Convert your data with `matsciml data convert`"
            )
        try:
            metadata = json.loads(raw)
        except ValueError as exc:
            raise DatasetFormatError(f"{self.path}: the metadata record is not valid JSON ({exc}); the file is damaged") from exc
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
            found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
            raise DatasetFormatError(f"{self.path}: format {found!r} is not {FORMAT_NAME!r}")
        version = metadata.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise DatasetFormatError(
                f"{self.path}: schema version {version} is newer than this matsciml "
                f"({SCHEMA_VERSION}); upgrade matsciml to read it"
            )
        return metadata

    def __len__(self) -> int:
        return int(self.metadata["count"])

    def read(self, index: int, keys: Iterable[str] | None = None) -> Sample:
        with self._open().begin() as txn:
            record = txn.get(sample_key(index))
        if record is None:
            raise DatasetFormatError(f"{self.path}: sample {index} is missing although the metadata counts {len(self)}")
        return decode_sample(record, keys=keys)

    def close(self) -> None:
        """Drop this reader's handle (the process-wide environment stays open for other readers)."""
        self._env = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_env"] = None
        state["_pid"] = None
        return state


# One read-only environment per file and process. py-lmdb (3.x) refuses to
# open a file twice in one process, and a forked DataLoader worker inherits
# the parent's environments, which it must not use: it closes the inherited
# one and opens its own.
_ENVIRONMENTS: dict[tuple[int, int], tuple[int, lmdb.Environment]] = {}


def _shared_environment(path: Path) -> lmdb.Environment:
    stat = path.stat()
    key = (stat.st_dev, stat.st_ino)
    pid = os.getpid()
    entry = _ENVIRONMENTS.get(key)
    if entry is not None:
        owner, environment = entry
        if owner == pid:
            return environment
        environment.close()
    try:
        environment = lmdb.open(str(path), subdir=False, readonly=True, lock=False,
                                readahead=False, meminit=False, max_readers=256)
    except lmdb.Error as exc:
        raise DatasetFormatError(f"{path}: not a readable LMDB file ({exc}); "
                                 f"convert your data with `matsciml data convert`") from exc
    _ENVIRONMENTS[key] = (pid, environment)
    return environment


def keys_in_every_sample(metadata: Mapping[str, Any]) -> set[str]:
    """Keys that every sample of a dataset carries, from its metadata."""
    return {key for key, info in metadata["keys"].items() if info["count"] == metadata["count"]}


def merge_metadata(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Metadata of several files read as one dataset (counts add, statistics combine)."""
    if len(parts) == 1:
        return parts[0]
    merged = dict(parts[0])
    merged["count"] = sum(p["count"] for p in parts)
    keys: dict[str, dict[str, Any]] = {}
    for part in parts:
        for key, info in part["keys"].items():
            if key in keys:
                keys[key] = {**keys[key], "count": keys[key]["count"] + info["count"]}
            else:
                keys[key] = dict(info)
    merged["keys"] = keys
    stat_keys = {k for p in parts for k in p["statistics"]}
    merged["statistics"] = {k: merge_statistics([p["statistics"][k] for p in parts if k in p["statistics"]])
                            for k in stat_keys}
    elements: dict[str, int] = {}
    for part in parts:
        for z, n in part["elements"].items():
            elements[z] = elements.get(z, 0) + n
    merged["elements"] = dict(sorted(elements.items(), key=lambda item: int(item[0])))
    total_atoms = sum(p["num_atoms"]["total"] for p in parts)
    merged["num_atoms"] = {"min": min(p["num_atoms"]["min"] for p in parts),
                           "max": max(p["num_atoms"]["max"] for p in parts),
                           "mean": total_atoms / merged["count"] if merged["count"] else 0.0,
                           "total": total_atoms}
    merged["name"] = "+".join(str(p.get("name")) for p in parts)
    merged["provenance"] = {"parts": [p.get("provenance") for p in parts]}
    merged["num_rejected"] = sum(p.get("num_rejected", 0) for p in parts)
    merged["rejected"] = [r for p in parts for r in p.get("rejected", [])]
    return merged


__all__ = [
    "DatasetFile", "DatasetWriter", "FORMAT_NAME", "KNOWN_KEYS", "METADATA_KEY", "decode_sample",
    "encode_sample", "merge_metadata", "write_dataset",
]
