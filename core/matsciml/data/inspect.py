"""Summaries of a dataset for people: counts, elements, properties, ranges."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from matsciml.data.schema import ELEMENT_SYMBOLS, validate_sample


def element_symbol(atomic_number: int) -> str:
    return ELEMENT_SYMBOLS[atomic_number] if 0 < atomic_number < len(ELEMENT_SYMBOLS) else f"Z{atomic_number}"


def summarize(metadata: dict[str, Any]) -> dict[str, Any]:
    """The headline facts of a dataset from its metadata (no sample is read)."""
    atoms = metadata["num_atoms"]
    elements = {element_symbol(int(z)): n for z, n in metadata["elements"].items()}
    properties = []
    for key, info in sorted(metadata["keys"].items()):
        stats = metadata["statistics"].get(key)
        shape = info["shape"]
        properties.append({
            "key": key,
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
    }


def validate_all(dataset: Any) -> Iterator[tuple[int, str]]:
    """Read every sample and yield (index, problem) for those breaking the schema."""
    source = ", ".join(str(f.path) for f in getattr(dataset, "files", [])) or None
    for index in range(len(dataset)):
        try:
            validate_sample(dataset[index], index=index, source=source)
        except Exception as exc:  # noqa: BLE001 - report every kind of unreadable sample
            yield index, str(exc)
