"""The on-disk format: LMDB files of plain arrays, with a metadata record.

Why this format: LMDB gives random access with no parsing and is safe to
read from many DataLoader worker processes; storing plain bytes with a
dtype and shape (never pickle) means opening a file cannot run code from it.

Every record, samples and metadata alike, is framed as
``b"MSMC" + uint32 CRC32 + body`` (little-endian), the CRC32 covering the
whole body. A sample's body is ``uint32 header length + JSON header +
payload``; the header lists, per key, its dtype (a numpy dtype string, or
``"utf8"`` for text), shape and byte range in the payload. The metadata
record's body is JSON. Keys of samples are their index as 8 big-endian
bytes; the metadata record lives under ``b"__metadata__"``.

Why a checksum: a flipped bit in a stored float decodes to a plausible
number, which would be trained on without a word. CRC32 (zlib) is verified
on every read; it costs about a microsecond per record and detects
accidental damage (bad disks, cut or mangled copies). It is not a
signature: anyone who can write the file can forge it, so it does not
detect tampering. Files of the older layout (magic ``b"MSML"``, no
checksums) are refused at open and must be converted again.

Damage surfaces as one line, never as a crash: :class:`DatasetFile` checks
the LMDB meta pages against the file size before LMDB maps the file (a
truncated file would otherwise kill the process with SIGBUS), and every
failure to decode a record raises :class:`~matsciml.errors.DatasetFormatError`
naming the file, the sample index and the problem.

Writes are atomic: :class:`DatasetWriter` writes a hidden temporary file
``.NAME.partial-PID`` beside the target and renames it over the target only
when everything, metadata included, is on disk. A killed conversion leaves
no dataset, and the next writer in that folder removes temporary files of
processes that are gone; a failed write (full disk, read-only folder,
file-size limit) leaves nothing and raises one :class:`DatasetWriteError`.
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import math
import os
import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from matsciml import __version__
from matsciml.data.schema import KNOWN_KEYS, SCHEMA_VERSION, Sample, unit_of, validate_sample
from matsciml.errors import DatasetFormatError, DatasetWriteError, MatscimlError
from matsciml.fields import REGISTERED_FIELDS, FieldConflictError, FieldSpec, check_declaration

FORMAT_NAME = "matsciml-lmdb"
METADATA_KEY = b"__metadata__"
_MAGIC = b"MSMC"
_OLD_MAGIC = b"MSML"  # the layout before checksums; refused at open
_FRAME = struct.Struct("<4sI")  # magic, CRC32 of the body
_HEADER_LENGTH = struct.Struct("<I")
_BODY_START = _FRAME.size
_PAYLOAD_HEADER_START = _BODY_START + _HEADER_LENGTH.size
_ALLOWED_DTYPE_KINDS = "biuf"
_DEFAULT_MAP_SIZE = 1 << 36  # 64 GiB of address space; the file holds only what is written
_COMMIT_EVERY = 512
_MAX_REJECTED_RECORDED = 1000
_DAMAGED = "the record is damaged; restore the file or convert the source again"
_OLD_LAYOUT = ("it was written by an older matsciml, in a layout without checksums, and must be "
               "converted again with `matsciml data convert`")
_PARTIAL_NAME = re.compile(r"\.(?P<target>.+)\.partial-(?P<pid>\d+)")


def sample_key(index: int) -> bytes:
    """The LMDB key of sample ``index``: 8 big-endian bytes, so keys sort in index order."""
    return struct.pack(">Q", index)


# ---------------------------------------------------------------- record codec
def _frame(body: bytes) -> bytes:
    return _FRAME.pack(_MAGIC, zlib.crc32(body)) + body


def encode_sample(sample: Mapping[str, Any]) -> bytes:
    """Serialise a sample to one checksummed record (numeric arrays and UTF-8 strings only)."""
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
    head = _HEADER_LENGTH.pack(len(header)) + header
    checksum = zlib.crc32(head)
    for chunk in chunks:  # one pass over the payload, no joined copy just to checksum it
        checksum = zlib.crc32(chunk, checksum)
    return b"".join([_FRAME.pack(_MAGIC, checksum), head, *chunks])


class _RecordError(Exception):
    """Why a record cannot be decoded, and what to do about it (internal; becomes DatasetFormatError)."""

    def __init__(self, problem: str, fix: str = _DAMAGED) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


def _check_frame(record: bytes) -> None:
    """Magic bytes and checksum of a record; raises _RecordError."""
    if len(record) < _BODY_START:
        raise _RecordError(f"the record is {len(record)} bytes long, too short for a matsciml record header")
    magic, stored = _FRAME.unpack_from(record)
    if magic != _MAGIC:
        if magic == _OLD_MAGIC:
            raise _RecordError(f"no checksum (magic {_OLD_MAGIC!r})", fix=_OLD_LAYOUT)
        raise _RecordError(f"bad magic bytes {magic!r} (a matsciml record starts with {_MAGIC!r})")
    computed = zlib.crc32(memoryview(record)[_BODY_START:])
    if computed != stored:
        raise _RecordError(f"checksum mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})")


# A record's layout: per key, (key, numpy dtype or None for UTF-8 text, shape, start, end) in the payload.
_Layout = tuple[tuple[str, "np.dtype | None", tuple[int, ...], int, int], ...]

# Headers seen, parsed and checked once per process. Records of one dataset
# share few distinct headers (the slab-emt-s2ef devset: 18 for 300 samples,
# one per atom count and text length), and parsing and checking a header
# costs more than decoding the arrays. Bounded (the first 1024 headers up to
# 8 KiB each, a few MB): when every header differs, each record pays the
# parse, as it did before the cache.
_LAYOUTS: dict[bytes, tuple[_Layout, int]] = {}
_MAX_LAYOUTS = 1024
_MAX_CACHED_HEADER = 8192


def _parse_layout(header_bytes: bytes) -> tuple[_Layout, int]:
    """Parse and check a record header; return its layout and the payload size it needs.

    Malformed entries that slip past these checks (wrong types inside a
    shape, for instance) make numpy raise when the record is decoded, which
    :func:`decode_sample` reports as an undecodable record; the checks here
    are the cheap ones that give the clearest messages.
    """
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise _RecordError(f"the record header is not valid JSON ({exc})") from exc
    entries = header.get("k") if isinstance(header, dict) else None
    if not isinstance(entries, list):
        raise _RecordError("the record header has no list of keys")
    layout = []
    needed_size = 0
    for entry in entries:
        if type(entry) is not list or len(entry) != 5:
            raise _RecordError(f"a header entry is not [key, dtype, shape, offset, length]: {str(entry)[:80]}")
        key, dtype, shape, offset, nbytes = entry
        if type(key) is not str:
            raise _RecordError(f"a header entry names key {str(key)[:40]}, which is not a string")
        if type(offset) is not int or type(nbytes) is not int or offset < 0 or nbytes < 0:
            raise _RecordError(f"key {key!r}: its byte range ({offset!r}, length {nbytes!r}) is not a pair of "
                               f"non-negative integers")
        end = offset + nbytes
        if dtype == "utf8":
            layout.append((key, None, (), offset, end))
        else:
            numpy_dtype = _DTYPES.get(dtype) if type(dtype) is str else None
            if numpy_dtype is None:  # not `or`: a plain np.dtype is falsy (it has no fields)
                numpy_dtype = _parse_dtype(key, dtype)
            if type(shape) is not list:
                raise _RecordError(f"key {key!r}: shape {str(shape)[:40]} is not a list of sizes")
            if numpy_dtype.itemsize * math.prod(shape) != nbytes or (shape and min(shape) < 0):
                problem = ("has a negative size" if shape and min(shape) < 0 else
                           f"of {numpy_dtype} needs {numpy_dtype.itemsize * math.prod(shape)} bytes, "
                           f"but the record holds {nbytes}")
                raise _RecordError(f"key {key!r}: shape {str(shape)[:40]} {problem}")
            layout.append((key, numpy_dtype, tuple(shape), offset, end))
        if end > needed_size:
            needed_size = end
    return tuple(layout), needed_size


# dtype strings seen in headers, parsed once (numpy's parser is slower than a lookup)
_DTYPES: dict[str, np.dtype] = {}


def _parse_dtype(key: str, dtype: Any) -> np.dtype:
    if not isinstance(dtype, str):
        raise _RecordError(f"key {key!r}: dtype {str(dtype)[:40]} is not a numpy dtype string")
    try:
        numpy_dtype = np.dtype(dtype)
    except TypeError as exc:
        raise _RecordError(f"key {key!r}: dtype {dtype[:40]!r} is not a numpy dtype") from exc
    if numpy_dtype.kind not in _ALLOWED_DTYPE_KINDS:
        raise _RecordError(f"key {key!r} has dtype {numpy_dtype}, which matsciml never writes")
    if len(_DTYPES) < 64:  # a handful in practice; the bound keeps forged headers from growing it
        _DTYPES[dtype] = numpy_dtype
    return numpy_dtype


def _decode_record(record: bytes, keys: Iterable[str] | None) -> Sample:
    _check_frame(record)
    if len(record) < _PAYLOAD_HEADER_START:
        raise _RecordError(f"the record is {len(record)} bytes long, too short for a header length")
    (header_length,) = _HEADER_LENGTH.unpack_from(record, _BODY_START)
    start = _PAYLOAD_HEADER_START + header_length
    if start > len(record):
        raise _RecordError(f"the header length {header_length} reaches past the end of the record "
                           f"({len(record)} bytes)")
    header_bytes = record[_PAYLOAD_HEADER_START:start]
    cached = _LAYOUTS.get(header_bytes)
    if cached is None:
        cached = _parse_layout(header_bytes)
        if len(_LAYOUTS) < _MAX_LAYOUTS and header_length <= _MAX_CACHED_HEADER:
            _LAYOUTS[header_bytes] = cached
    layout, needed_size = cached
    payload = memoryview(record)[start:]
    if needed_size > len(payload):
        key, _, _, offset, end = next(entry for entry in layout if entry[4] > len(payload))
        raise _RecordError(f"key {key!r}: its byte range ({offset}, length {end - offset}) lies outside "
                           f"the payload of {len(payload)} bytes")
    wanted = None if keys is None else set(keys)
    sample: Sample = {}
    for key, dtype, shape, offset, end in layout:
        if wanted is not None and key not in wanted:
            continue
        if dtype is None:
            try:
                sample[key] = str(payload[offset:end], "utf-8")
            except UnicodeDecodeError as exc:
                raise _RecordError(f"key {key!r}: its text is not valid UTF-8 "
                                   f"({exc.reason} at byte {exc.start})") from exc
        else:
            sample[key] = np.frombuffer(payload[offset:end], dtype=dtype).reshape(shape).copy()
    return sample


def decode_sample(record: bytes, *, keys: Iterable[str] | None = None, source: str = "record") -> Sample:
    """Inverse of :func:`encode_sample`, verifying the checksum; ``keys`` restricts what is decoded.

    Nothing in the record is ever unpickled or evaluated: the header is JSON,
    values are bytes given a numeric dtype and shape.

    Raises:
        DatasetFormatError: ``"{source}: {problem}: {fix}"`` for any record that
            cannot be decoded (checksum mismatch, bad magic, damaged header,
            byte ranges outside the record, bad dtype or shape, invalid UTF-8).
    """
    try:
        return _decode_record(record, keys)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged record triggers, name it as damage
        raise _format_error(source, exc) from (None if isinstance(exc, _RecordError) else exc)


def _format_error(source: str, exc: Exception) -> DatasetFormatError:
    """The one-line error for a record that failed to decode (built only when one does)."""
    if isinstance(exc, _RecordError):
        return DatasetFormatError(f"{source}: {exc.problem}: {exc.fix}")
    return DatasetFormatError(f"{source}: undecodable record ({type(exc).__name__}: {exc}): {_DAMAGED}")


def encode_metadata(metadata: Mapping[str, Any]) -> bytes:
    """The checksummed metadata record (JSON body)."""
    return _frame(json.dumps(metadata, indent=1).encode("utf-8"))


def decode_metadata(record: bytes, *, source: str = "file") -> dict[str, Any]:
    """Inverse of :func:`encode_metadata`, verifying the checksum.

    Raises:
        DatasetFormatError: naming ``source`` for a damaged record, or for
            plain-JSON metadata of the older layout without checksums.
    """
    if record[:1] == b"{":
        try:
            old = json.loads(record)
        except ValueError:
            old = None
        if isinstance(old, dict) and old.get("format") == FORMAT_NAME:
            raise DatasetFormatError(f"{source}: {_OLD_LAYOUT}")
        raise DatasetFormatError(f"{source}: the metadata record is not a matsciml metadata record; "
                                 f"convert your data with `matsciml data convert`")
    try:
        _check_frame(record)
        metadata = json.loads(memoryview(record)[_BODY_START:].tobytes())
    except _RecordError as exc:
        raise DatasetFormatError(f"{source}: the metadata record is damaged ({exc.problem}); "
                                 f"restore the file or convert the source again") from None
    except ValueError as exc:
        raise DatasetFormatError(f"{source}: the metadata record is not valid JSON ({exc}); "
                                 f"restore the file or convert the source again") from exc
    if not isinstance(metadata, dict):
        raise DatasetFormatError(f"{source}: the metadata record holds a {type(metadata).__name__}, not a mapping; "
                                 f"restore the file or convert the source again")
    return metadata


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
    """Collects what the metadata record says about the samples written.

    Every key gets a record in ``keys``: dtype, shape (``"N"`` for the atom
    dimension), unit, count, and its role and arity (``"role"``,
    ``"arity"``), so that readers never decide from shapes what a key is.
    Role and arity come from the field registry (:mod:`matsciml.fields`),
    else from ``fields`` (declared at conversion); a key declared nowhere is
    a target, per atom when its first dimension equals the number of atoms
    in every structure that has it, else per structure. ``"arity_from"``
    says which (``"registry"``, ``"declared"``, ``"shapes"``, ``"text"``);
    ``"per_atom"`` repeats the arity for readers of the older metadata.
    A per-structure key the registry or ``fields`` (``"extent"``) says is
    extensive or intensive records ``"extensive"``: true or false.
    """

    def __init__(self, units: Mapping[str, str] | None,
                 fields: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.units = dict(units or {})
        self.fields = {name: check_declaration(name, declaration) for name, declaration in (fields or {}).items()}
        # keys declared with an arity, checked by validate_sample like registered ones (N rows per atom)
        self.declared = {name: FieldSpec(name, declaration.get("role", "target"), declaration["arity"], None, None,
                                         self.units.get(name))
                         for name, declaration in self.fields.items()
                         if "arity" in declaration and name not in REGISTERED_FIELDS}
        self.count = 0
        self.keys: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, _RunningStats] = {}
        self.element_counts: dict[int, int] = {}
        self.atoms = _RunningStats()
        self.total_atoms = 0
        # per key: one row per atom in every structure so far; shape seen as [N, ...] and as is
        self._rows_per_atom: dict[str, bool] = {}
        self._atom_shape: dict[str, Any] = {}
        self._shape: dict[str, Any] = {}

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
                info = self.keys.setdefault(key, {"dtype": "str", "count": 0})
                info["count"] += 1
                self._rows_per_atom[key] = False
                self._shape[key] = self._atom_shape[key] = []
                continue
            info = self.keys.setdefault(key, {"dtype": value.dtype.name, "count": 0})
            info["count"] += 1
            rows = value.ndim >= 1 and value.shape[0] == natoms
            self._rows_per_atom[key] = self._rows_per_atom.get(key, True) and rows
            self._atom_shape[key] = _same_or_varies(self._atom_shape.get(key), ["N", *value.shape[1:]])
            self._shape[key] = _same_or_varies(self._shape.get(key), list(value.shape))
            if value.dtype.kind in "iuf" and key not in ("atomic_numbers",):
                self.stats.setdefault(key, _RunningStats()).add(value)

    def _role_and_arity(self, key: str) -> tuple[str, str, str]:
        """(role, arity, where the arity comes from) of a key written."""
        spec = REGISTERED_FIELDS.get(key)
        if spec is not None:
            return spec.role, spec.arity, "registry"
        declaration = self.fields.get(key, {})
        role = declaration.get("role", "target")
        if "arity" in declaration:
            return role, declaration["arity"], "declared"
        if self.keys[key]["dtype"] == "str":
            return role, "structure", "text"
        return role, "atom" if self._rows_per_atom[key] else "structure", "shapes"

    def _extensive(self, key: str) -> bool | None:
        """Whether a key is extensive (True) or intensive (False): the registry's word, else ``--field``'s."""
        spec = REGISTERED_FIELDS.get(key)
        if spec is not None:
            return spec.extensive
        extent = self.fields.get(key, {}).get("extent")
        return None if extent is None else extent == "extensive"

    def build(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        for key, info in self.keys.items():
            role, arity, source = self._role_and_arity(key)
            info.update({
                "shape": self._atom_shape[key] if arity == "atom" else self._shape[key],
                "role": role,
                "arity": arity,
                "arity_from": source,
                "per_atom": arity == "atom",
                "unit": unit_of(key, self.units),
            })
            extensive = self._extensive(key)
            if extensive is not None:  # per-structure keys declared extensive (true) or intensive (false)
                info["extensive"] = extensive
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


def _same_or_varies(seen: Any, shape: list[Any]) -> Any:
    """The shape recorded for a key: the one seen so far, or ``"varies"`` once two differ."""
    return shape if seen is None or seen == shape else "varies"


# ---------------------------------------------------------------- writing
class DatasetWriter:
    """Write samples to a new LMDB dataset file, atomically.

    Use as a context manager; leaving the block with an exception, or the
    process dying, leaves nothing at ``path``::

        with DatasetWriter("out.lmdb", name="my-data", provenance={...}) as writer:
            for sample in samples:
                writer.append(sample)

    A failure of the file system (read-only folder, full disk, file-size
    limit) raises :class:`DatasetWriteError` naming ``path``, the problem and
    the fix, after removing the temporary file and any folder the writer made.

    Args:
        path: the dataset file to create.
        name, description: shown by ``matsciml data inspect``.
        units: units of properties the schema does not know.
        fields: role, arity and/or extent of keys the field registry does not know,
            e.g. ``{"total_charge_2": {"role": "input"}, "q": {"arity": "atom"}, "gap": {"extent": "intensive"}}``
            (``matsciml data convert --field``); see :mod:`matsciml.fields`.
        provenance: where the data came from (files, command, generator).
        overwrite: replace an existing dataset at ``path``.
        group_key: a per-structure key, in every sample, whose values name the
            group (system, trajectory) of each sample; recorded in the metadata
            as ``group_key`` so that splits keep a group together.
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None, description: str = "",
                 units: Mapping[str, str] | None = None, provenance: Mapping[str, Any] | None = None,
                 overwrite: bool = False, fields: Mapping[str, Mapping[str, str]] | None = None,
                 group_key: str | None = None) -> None:
        self.path = Path(path)
        self.group_key = group_key
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} already exists; choose another output path or pass overwrite=True (--overwrite)")
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a directory; give a file name such as {self.path / 'data.lmdb'}")
        self.name = name or self.path.stem
        self.description = description
        self.provenance = dict(provenance or {})
        self.rejected: list[dict[str, Any]] = []
        self.num_rejected = 0
        self._metadata = _MetadataBuilder(units, fields)
        self._temporary = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self._created_folders: list[Path] = []
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None
        self._pending = 0

    @property
    def count(self) -> int:
        return self._metadata.count

    @property
    def declared_fields(self) -> dict[str, FieldSpec]:
        """The keys declared with an arity in ``fields`` (not registered ones), as ``validate_sample`` takes them."""
        return self._metadata.declared

    def __enter__(self) -> "DatasetWriter":
        try:
            self._make_folder()
            remove_stale_partials(self.path.parent)
            # meminit=True: LMDB zeroes the unused part of each page it writes. Without
            # it, whatever was in that memory before (earlier records, anything else the
            # process held) lands in the file: not deterministic, and a leak.
            self._env = lmdb.open(str(self._temporary), subdir=False, map_size=_DEFAULT_MAP_SIZE,
                                  lock=False, readahead=False, meminit=True, sync=False)
            self._txn = self._env.begin(write=True)
        except (OSError, lmdb.Error) as exc:
            raise self._fail(exc) from exc
        return self

    def _make_folder(self) -> None:
        missing = []
        folder = self.path.parent
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            folder.mkdir()
            self._created_folders.append(folder)

    def append(self, sample: Mapping[str, Any], *, validate: bool = True, index: int | None = None,
               source: str | None = None) -> None:
        """Add one sample (validated against the schema unless ``validate=False``)."""
        if self._txn is None:
            raise RuntimeError("DatasetWriter.append called outside its `with` block, or after a write failed")
        if validate:
            sample = validate_sample(sample, index=index, source=source, declared=self._metadata.declared)
        record = encode_sample(sample)
        try:  # pages reach the disk in put (when LMDB spills) and commit: full disk, file-size limit
            # append=True: keys come in increasing order (the metadata key sorts after every sample key),
            # so LMDB fills pages left to right and never splits one, which would leave stale copies of
            # records in the unused part of the old page: a leak, and a file that depends on record sizes
            self._txn.put(sample_key(self._metadata.count), record, append=True)
            self._metadata.add(sample)
            self._pending += 1
            if self._pending >= _COMMIT_EVERY:
                txn, self._txn = self._txn, None  # a failed commit ends the transaction: never abort it again
                txn.commit()
                self._txn = self._env.begin(write=True)
                self._pending = 0
        except (OSError, lmdb.Error) as exc:
            raise self._fail(exc) from exc

    def reject(self, *, index: int | None, source: str | None, reason: str) -> None:
        """Record a structure that was left out, with where it came from and why."""
        self.num_rejected += 1
        if len(self.rejected) < _MAX_REJECTED_RECORDED:
            self.rejected.append({"index": index, "source": source, "reason": reason})

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._abort()
            return
        if self._txn is None:  # append already failed and cleaned up; its error was caught by the caller
            self._abort()
            raise DatasetWriteError(f"cannot write {self.path}: an earlier write failed, so the dataset is "
                                    f"incomplete and was not written; fix that failure and convert again")
        if self.group_key is not None:
            self._check_group_key()
        try:
            metadata = self._metadata.build({
                "name": self.name,
                "description": self.description,
                "provenance": self.provenance,
                "rejected": self.rejected,
                "num_rejected": self.num_rejected,
                **({"group_key": self.group_key} if self.group_key is not None else {}),
            })
            self._txn.put(METADATA_KEY, encode_metadata(metadata), append=True)
            txn, self._txn = self._txn, None
            txn.commit()
            self._env.sync(True)
            self._env.close()
            self._env = None
            os.replace(self._temporary, self.path)
            self._created_folders = []  # they hold the dataset now
            fsync_directory(self.path.parent)
        except (OSError, lmdb.Error) as exc:
            raise self._fail(exc) from exc
        except BaseException:
            self._abort()
            raise

    def _check_group_key(self) -> None:
        """The group key is per structure and in every sample written; else nothing is written."""
        key, info = self.group_key, self._metadata.keys.get(self.group_key)
        problem = None
        if info is None or info["count"] != self.count:
            problem = f"{0 if info is None else info['count']} of the {self.count} samples have it"
        elif self._metadata._role_and_arity(key)[1] == "atom":
            problem = "it has one value per atom, not one per structure"
        if problem is not None:
            self._abort()
            raise MatscimlError(f"{self.path}: group key {key!r} cannot group the samples: {problem}; give a "
                                f"per-structure key that every sample carries (nothing written)")

    def _fail(self, exc: BaseException) -> DatasetWriteError:
        """Clean up after a failed write and say why it failed, in one line."""
        code = _errno_of(exc)
        if code == errno.EIO:  # LMDB reports a short write as EIO; find what cut it short
            code = _cause_of_short_write(self.path.parent, self._temporary) or code
        self._abort()
        return _write_error(self.path, exc, code)

    def _abort(self) -> None:
        """Drop everything written so far: transaction, temporary file, folders this writer made."""
        if self._txn is not None:
            try:
                self._txn.abort()
            except lmdb.Error:
                pass
            self._txn = None
        if self._env is not None:
            try:
                self._env.close()
            except lmdb.Error:
                pass
            self._env = None
        try:
            self._temporary.unlink(missing_ok=True)
        except OSError:
            pass
        for folder in reversed(self._created_folders):
            try:
                folder.rmdir()  # only if still empty
            except OSError:
                break
        self._created_folders = []


# What to do about a failed write, by the OS error behind it.
_WRITE_FIXES = {
    errno.ENOSPC: "free space or choose another output folder (-o)",
    errno.EDQUOT: "free space within your disk quota or choose another output folder (-o)",
    errno.EFBIG: "the file system or a file-size limit (ulimit -f) caps the file size; raise the limit "
                 "or choose another output folder (-o)",
    errno.EROFS: "choose an output folder on a writable file system (-o)",
    errno.EACCES: "choose an output folder you can write to (-o), or change its permissions",
    errno.EPERM: "choose an output folder you can write to (-o), or change its permissions",
    errno.ENOTDIR: "a part of the output path is a file, not a folder; choose another output path (-o)",
    errno.EEXIST: "a part of the output path is a file, not a folder; choose another output path (-o)",
    errno.EIO: "the disk reported an I/O error or a write was cut short; check the disk and its free space, "
               "or choose another output folder (-o)",
}


def _errno_of(exc: BaseException) -> int | None:
    """The OS error number behind ``exc``; py-lmdb gives it only as text ("mdb_txn_commit: File too large")."""
    if isinstance(exc, OSError):
        return exc.errno
    message = str(exc)
    for code in _WRITE_FIXES:
        if os.strerror(code) in message:
            return code
    return None


def _cause_of_short_write(folder: Path, temporary: Path) -> int | None:
    """Why a write came up short: a file-size limit or a full disk (checked without writing more).

    Writing again to ask the OS would be simpler, but past a file-size limit
    the OS kills the process with SIGXFSZ unless that signal is ignored.
    """
    try:
        import resource

        limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if limit != resource.RLIM_INFINITY and temporary.stat().st_size + (1 << 16) >= limit:
            return errno.EFBIG
    except (ImportError, OSError):
        pass
    try:
        space = os.statvfs(folder)
        if space.f_bavail * space.f_frsize < (1 << 20):
            return errno.ENOSPC
    except (AttributeError, OSError):
        pass
    return None


def _write_error(path: Path, exc: BaseException, code: int | None) -> DatasetWriteError:
    """One line for a failed write: the path, the OS problem, the fix."""
    if code in _WRITE_FIXES:
        reason = os.strerror(code)
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:
        reason = str(exc)
    fix = _WRITE_FIXES.get(code, "check the output folder, or choose another (-o)")
    error = DatasetWriteError(f"cannot write {path}: {reason}; {fix}")
    error.errno = code
    return error


def remove_stale_partials(folder: Path) -> None:
    """Delete every temporary file in ``folder`` whose writer process is gone, whatever its target.

    Temporary files are named ``.TARGET.partial-PID`` by every atomic writer of matsciml (dataset files
    here, checkpoints in :mod:`matsciml.training.resume`).
    """
    for partial in folder.glob(".*.partial-*"):
        match = _PARTIAL_NAME.fullmatch(partial.name)
        if match and not _process_alive(int(match["pid"])):
            try:
                partial.unlink(missing_ok=True)
            except OSError:  # e.g. a read-only folder: the write itself will say so
                pass


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:  # not a PID at all
        return False
    return True


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform has directory descriptors)."""
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
    """Read access to one dataset file. Opened lazily, reopened after fork.

    Opening checks the file before LMDB maps it (see :func:`check_lmdb_file`)
    and verifies the metadata record; :meth:`read` verifies each sample's
    checksum. Every problem is a :class:`~matsciml.errors.DatasetFormatError`
    naming the file (and the sample index).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such dataset file")
        partial = _PARTIAL_NAME.fullmatch(self.path.name)
        if partial:
            raise DatasetFormatError(
                f"{self.path}: this is the temporary file of a conversion to {partial['target']} that did not "
                f"finish (process {partial['pid']}), not a dataset; run the conversion again"
            )
        # Checked here too, not only when a process first maps the file: an
        # environment cached in this process would otherwise skip the check
        # for a file cut short since it was mapped.
        check_lmdb_file(self.path)
        self._env: lmdb.Environment | None = None
        self._pid: int | None = None
        self.metadata = self._read_metadata()

    def _open(self) -> lmdb.Environment:
        if self._env is None or self._pid != os.getpid():
            self._env = _shared_environment(self.path)
            self._pid = os.getpid()
        return self._env

    def _read_metadata(self) -> dict[str, Any]:
        try:
            with self._open().begin() as txn:
                raw = txn.get(METADATA_KEY)
        except lmdb.Error as exc:
            raise DatasetFormatError(f"{self.path}: LMDB cannot read the metadata record ({exc}); the file is "
                                     f"damaged: restore it or convert the source again") from exc
        if raw is None:
            raise DatasetFormatError(
                f"{self.path}: no matsciml metadata record; it was not written by matsciml. "
                f"Convert your data with `matsciml data convert`"
            )
        metadata = decode_metadata(raw, source=str(self.path))
        if metadata.get("format") != FORMAT_NAME:
            raise DatasetFormatError(f"{self.path}: format {metadata.get('format')!r} is not {FORMAT_NAME!r}; "
                                     f"convert your data with `matsciml data convert`")
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
        """Sample ``index`` of this file (0-based), its checksum verified.

        Raises:
            IndexError: ``index`` is outside ``0 .. len(self) - 1``.
            DatasetFormatError: the record is missing, damaged or undecodable;
                the message names the file and ``index``.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: sample index {index} is out of range for a file of {len(self)} samples")
        try:
            with self._open().begin() as txn:
                record = txn.get(sample_key(index))
        except lmdb.Error as exc:
            raise DatasetFormatError(f"sample {index} of {self.path}: LMDB cannot read the record ({exc}): the file "
                                     f"is damaged; restore it or convert the source again") from exc
        if record is None:
            raise DatasetFormatError(f"sample {index} of {self.path}: the record is missing although the metadata "
                                     f"counts {len(self)} samples; restore the file or convert the source again")
        try:
            return _decode_record(record, keys)
        except Exception as exc:  # noqa: BLE001 - every failure to decode is damage to report
            raise _format_error(f"sample {index} of {self.path}", exc) from (
                None if isinstance(exc, _RecordError) else exc)

    def close(self) -> None:
        """Drop this reader's handle (the process-wide environment stays open for other readers)."""
        self._env = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_env"] = None
        state["_pid"] = None
        return state


# The two LMDB meta pages (pages 0 and 1) hold, after a 16-byte page header,
# an MDB_meta: magic at 16, the page size in the free database's md_pad at
# 40, the last page used (mm_last_pg) at 136 and the transaction id at 144
# (LMDB 0.9, 64-bit build; the file is in the machine's byte order).
_LMDB_MAGIC = 0xBEEFC0DE
_META_MAGIC = struct.Struct("=I")
_META_PAGE_SIZE = struct.Struct("=I")
_META_LAST_PAGE_AND_TXNID = struct.Struct("=QQ")
_META_END = 152
_NOT_LMDB = "not an LMDB dataset file ({}); convert your data with `matsciml data convert`"


def check_lmdb_file(path: str | os.PathLike[str]) -> None:
    """Refuse a file that is not LMDB, or that is shorter than its own LMDB index says.

    Why: LMDB maps the file into memory and trusts its index. A file cut
    short (an interrupted copy or download) makes the first read past its end
    kill the process with SIGBUS, with no message. Reading the two meta pages
    first costs two small reads.

    Raises:
        DatasetFormatError: one line naming the file, the problem and the fix.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            first = handle.read(_META_END)
            if len(first) < _META_END:
                raise DatasetFormatError(f"{path}: " + _NOT_LMDB.format(
                    f"{size} bytes, too small for the LMDB meta pages"))
            if _META_MAGIC.unpack_from(first, 16)[0] != _LMDB_MAGIC:
                raise DatasetFormatError(f"{path}: " + _NOT_LMDB.format("no LMDB magic number at its start"))
            (page_size,) = _META_PAGE_SIZE.unpack_from(first, 40)
            if not 256 <= page_size <= 1 << 16 or page_size & (page_size - 1):
                raise DatasetFormatError(f"{path}: the LMDB header is damaged (page size {page_size}); "
                                         f"restore the file or convert the source again")
            handle.seek(page_size)
            second = handle.read(_META_END)
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from exc
    metas = [first]
    if len(second) == _META_END:
        if _META_MAGIC.unpack_from(second, 16)[0] != _LMDB_MAGIC:
            raise DatasetFormatError(f"{path}: the LMDB header is damaged (the second meta page has no LMDB "
                                     f"magic number); restore the file or convert the source again")
        metas.append(second)
    last_page, _ = max((_META_LAST_PAGE_AND_TXNID.unpack_from(meta, 136) for meta in metas),
                       key=lambda pair: pair[1])  # the meta page with the larger transaction id is current
    needed = max(last_page + 1, 2) * page_size
    if size < needed:
        raise DatasetFormatError(
            f"{path}: the file is truncated ({size} bytes, but its LMDB index reaches {needed} bytes): it was cut "
            f"short in a copy or download; copy it again or convert the source again"
        )


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
    check_lmdb_file(path)  # before LMDB maps it, in every process that maps it
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
    first_part: dict[str, Any] = {}
    for part in parts:
        for key, info in part["keys"].items():
            if key not in keys:
                keys[key] = dict(info)
                first_part[key] = part
                continue
            known = keys[key]
            for aspect, plural in (("role", "roles"), ("arity", "arities"),
                                   ("extensive", "extensive (true) or intensive (false) declarations")):
                if aspect in info and aspect in known and info[aspect] != known[aspect]:
                    raise FieldConflictError(
                        f"datasets {first_part[key].get('name')!r} and {part.get('name')!r} record key {key!r} "
                        f"with different {plural} ({known[aspect]} and {info[aspect]}), so they cannot be read "
                        f"as one dataset; convert them again declaring it the same way (--field {key}=...)")
                if aspect not in known and aspect in info:
                    known[aspect] = info[aspect]
            known["count"] += info["count"]
            if known.get("shape") != info.get("shape"):
                known["shape"] = "varies"
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
    if len({p.get("group_key") for p in parts}) > 1:
        merged.pop("group_key", None)  # files grouped by different keys (or some not at all): no common group
    return merged


__all__ = [
    "DatasetFile", "DatasetWriteError", "DatasetWriter", "FORMAT_NAME", "KNOWN_KEYS", "METADATA_KEY",
    "check_lmdb_file", "decode_metadata", "decode_sample", "encode_metadata", "encode_sample",
    "merge_metadata", "write_dataset",
]
