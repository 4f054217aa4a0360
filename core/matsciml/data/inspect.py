"""Summaries of a dataset for people: counts, elements, properties (role, arity, unit), ranges."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from matsciml.data.plausibility import MAX_FORCE, flags_from_metadata
from matsciml.data.schema import ELEMENT_SYMBOLS, Sample, validate_sample
from matsciml.errors import MatscimlError
from matsciml.fields import REGISTERED_FIELDS, field_spec


def element_symbol(atomic_number: int) -> str:
    return ELEMENT_SYMBOLS[atomic_number] if 0 < atomic_number < len(ELEMENT_SYMBOLS) else f"Z{atomic_number}"


def summarize(metadata: dict[str, Any], *, max_force: float = MAX_FORCE) -> dict[str, Any]:
    """The headline facts of a dataset from its metadata (no sample is read).

    ``"flags"`` lists what the recorded ranges and units show to be
    suspicious (:func:`matsciml.data.plausibility.flags_from_metadata`, with
    force components above ``max_force`` eV/Å), as dictionaries.
    """
    atoms = metadata["num_atoms"]
    elements = {element_symbol(int(z)): n for z, n in metadata["elements"].items()}
    properties = []
    for key, info in sorted(metadata["keys"].items()):
        stats = metadata["statistics"].get(key)
        shape = info.get("shape")
        role, arity, arity_from = _role_and_arity(key, metadata)
        properties.append({
            "key": key,
            "role": role,
            "arity": arity,
            "arity_from": arity_from,
            "dtype": info["dtype"],
            "shape": "text" if info["dtype"] == "str" else "scalar" if shape == [] else ("varies" if shape == "varies" else "[" + ",".join(map(str, shape)) + "]"),
            "unit": "-" if info["dtype"] in ("str", "bool") else info.get("unit"),
            "present_in": info["count"],
            **({k: stats[k] for k in ("mean", "std", "min", "max")} if stats else {}),
        })
    return {
        "name": metadata.get("name"),
        "description": metadata.get("description", ""),
        "count": metadata["count"],
        "atoms": f"{atoms['min']}-{atoms['max']}" if atoms["min"] != atoms["max"] else str(atoms["min"]),
        "atoms_mean": atoms["mean"],
        "elements": ", ".join(elements),
        "element_counts": elements,
        "properties": properties,
        "schema_version": metadata["schema_version"],
        "created": metadata.get("created"),
        "provenance": metadata.get("provenance", {}),
        "num_rejected": metadata.get("num_rejected", 0),
        "rejected": metadata.get("rejected", [])[:20],
        "flags": [flag.as_dict() for flag in flags_from_metadata(metadata, max_force=max_force)],
    }


def _role_and_arity(key: str, metadata: dict[str, Any]) -> tuple[str, str, str]:
    """(role, arity, where the arity comes from) of a dataset's key, as :mod:`matsciml.fields` resolves it.

    Metadata written before roles and arities were recorded gives ``"?"``
    for keys the registry does not know and that carry no per-atom flag;
    ``matsciml data convert`` records both for every key.
    """
    try:
        spec = field_spec(key, metadata)
    except MatscimlError:
        return "?", "?", "unknown"
    info = metadata["keys"].get(key, {})
    if info.get("arity_from"):
        return spec.role, spec.arity, info["arity_from"]
    return spec.role, spec.arity, ("registry" if key in REGISTERED_FIELDS else
                                   "text" if info.get("dtype") == "str" else "shapes")


class InvalidSample(NamedTuple):
    """A sample that cannot be used, where it is and why."""

    file: str | None  # the dataset file it is stored in (None for datasets not read from files)
    index: int  # its index in that file (in the dataset when there is no file)
    dataset_index: int  # its index in the dataset as a whole, as in ``dataset[i]``
    reason: str  # one line naming the file, the sample and the problem


def validate_all(dataset: Any, *, on_valid: Callable[[int, Sample], Any] | None = None) -> Iterator[InvalidSample]:
    """Read every sample and yield each one that is unreadable or breaks the schema.

    Every sample is tried, whatever happened to the ones before: damaged
    records (checksum mismatch, undecodable header), missing records and
    schema violations are all reported, so one pass lists everything wrong.
    Datasets read from files (``dataset.files``, e.g.
    :class:`~matsciml.data.dataset.LMDBDataset`) are read file by file
    through :meth:`~matsciml.data.storage.DatasetFile.read`, with all keys,
    so each reason names the file and the sample's index in it.

    ``on_valid(dataset_index, sample)`` is called with each valid sample
    (checked, canonical dtypes), so other checks share this one pass (e.g.
    :meth:`matsciml.data.plausibility.SampleChecks.add`).
    """
    files = getattr(dataset, "files", None)
    if not files:
        for index in range(len(dataset)):
            try:
                sample = validate_sample(dataset[index], index=index)
            except Exception as exc:  # noqa: BLE001 - report every kind of unreadable sample and go on
                yield InvalidSample(None, index, index, str(exc))
                continue
            if on_valid is not None:
                on_valid(index, sample)
        return
    start = 0
    for file in files:
        source = str(file.path)
        for index in range(len(file)):
            try:
                sample = validate_sample(file.read(index), index=index, source=source)
            except Exception as exc:  # noqa: BLE001 - report every kind of unreadable sample and go on
                reason = str(exc)
                if source not in reason:  # an unexpected error: say where it happened
                    reason = f"sample {index} of {source}: {type(exc).__name__}: {reason}"
                yield InvalidSample(source, index, start + index, reason)
                continue
            if on_valid is not None:
                on_valid(start + index, sample)
        start += len(file)
