"""Import of structures from any format ASE reads (extxyz, VASP, CIF, ASE db...).

Why ASE: it is the field's common reader of atomic-structure files, so one
converter covers every format a user brings. It is an optional extra of the
core (``pip install matsciml[ase]``): training never needs it.

Energy, forces and stress come from the calculator results attached to each
structure; every other entry of ``atoms.info`` and ``atoms.arrays`` that is a
number, boolean, numeric array or string becomes a property of the sample.
Structures that break the schema are reported with their file, index and
reason, and the rest are still converted.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matsciml.data.schema import Sample, validate_sample
from matsciml.data.storage import DatasetWriter
from matsciml.errors import InvalidSampleError, MatscimlError

# atoms.arrays entries that are structure, not properties
_STRUCTURAL_ARRAYS = {"numbers", "positions", "tags"}
_CALCULATOR_KEYS = ("energy", "forces", "stress", "free_energy")


def _import_ase() -> Any:
    try:
        import ase.io  # noqa: F401
    except ImportError as exc:
        raise MatscimlError(
            "reading structure files needs ASE, which is not installed; "
            "install it with `pip install 'matsciml[ase]'` (or `pip install ase`)"
        ) from exc
    import ase

    return ase


def atoms_to_sample(atoms: Any) -> Sample:
    """One ``ase.Atoms`` as a sample (not yet validated)."""
    from ase.constraints import FixAtoms

    sample: Sample = {
        "atomic_numbers": np.asarray(atoms.numbers, dtype=np.int64),
        "pos": np.asarray(atoms.positions, dtype=np.float64),
        "pbc": np.asarray(atoms.pbc, dtype=bool),
    }
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    if atoms.pbc.any() or np.abs(cell).sum() > 0:
        sample["cell"] = cell
    if "tags" in atoms.arrays:
        sample["tags"] = np.asarray(atoms.arrays["tags"], dtype=np.int64)
    fixed_indices = [index for constraint in atoms.constraints if isinstance(constraint, FixAtoms)
                     for index in constraint.get_indices()]
    if fixed_indices:
        fixed = np.zeros(len(atoms), dtype=bool)
        fixed[np.asarray(fixed_indices, dtype=np.int64)] = True
        sample["fixed"] = fixed

    results = getattr(atoms.calc, "results", None) or {}
    for key in _CALCULATOR_KEYS:
        if key in results and results[key] is not None:
            value = np.asarray(results[key], dtype=np.float64)
            if key == "stress" and value.shape == (6,):
                value = _voigt_to_matrix(value)
            sample[key] = value

    for key, value in atoms.arrays.items():
        if key not in _STRUCTURAL_ARRAYS and key not in sample:
            converted = _property_value(value)
            if converted is not None:
                sample[key] = converted
    for key, value in atoms.info.items():
        if key not in sample:
            converted = _property_value(value)
            if converted is not None:
                sample[key] = converted
    return sample


def _voigt_to_matrix(voigt: np.ndarray) -> np.ndarray:
    xx, yy, zz, yz, xz, xy = voigt
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]], dtype=np.float64)


def _property_value(value: Any) -> Any:
    """A number, bool, numeric array or string as storable; anything else -> None."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return np.asarray(value, dtype=bool)
    if isinstance(value, (int, np.integer)):
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, (float, np.floating)):
        return np.asarray(value, dtype=np.float64)
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            array = np.asarray(value)
        except ValueError:
            return None
        if array.dtype.kind in "biuf":
            return array
    return None


@dataclass
class ConversionReport:
    """What a conversion did: samples written, structures rejected and why."""

    output: Path
    written: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    num_rejected: int = 0


def iter_structures(inputs: Sequence[str | os.PathLike[str]], index: str = ":",
                    file_format: str | None = None) -> Iterator[tuple[str, int, Any]]:
    """Yield (file, index in file, atoms) for every structure of every input file."""
    ase = _import_ase()
    for path in inputs:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such input file")
        try:
            reader = ase.io.iread(str(path), index=index, format=file_format)
            for number, atoms in enumerate(reader):
                yield str(path), number, atoms
        except (MatscimlError, FileNotFoundError):
            raise
        except Exception as exc:  # noqa: BLE001 - ASE raises many types for unreadable files
            raise MatscimlError(f"{path}: ASE cannot read it ({type(exc).__name__}: {exc}); "
                                f"name the format with --format if the file extension is unusual") from exc


def convert(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], *,
            name: str | None = None, description: str = "", units: Mapping[str, str] | None = None,
            index: str = ":", file_format: str | None = None, overwrite: bool = False,
            strict: bool = False, progress: bool = True) -> ConversionReport:
    """Convert structure files into one matsciml dataset file at ``output``.

    Args:
        inputs: files any ASE reader understands.
        output: the dataset file to write (atomically).
        name, description: recorded in the metadata.
        units: units of properties the schema does not know (``{"band_gap": "eV"}``).
        index: ASE index string selecting structures of each file (``":"`` = all).
        file_format: ASE format name when the extension does not tell it.
        overwrite: replace an existing dataset at ``output``.
        strict: fail on the first invalid structure, writing nothing (an
            existing dataset at ``output`` is left as it was).
        progress: show a progress bar on stderr.
    """
    from tqdm.auto import tqdm

    ase = _import_ase()
    provenance = {
        "sources": [str(Path(p).resolve()) for p in inputs],
        "reader": f"ase {ase.__version__}",
        "command": " ".join(sys.argv) if sys.argv else "",
        "index": index,
    }
    report = ConversionReport(output=Path(output))
    bar = tqdm(desc=f"converting to {Path(output).name}", unit=" structures", disable=not progress,
               file=sys.stderr)
    with DatasetWriter(output, name=name, description=description, units=units,
                       provenance=provenance, overwrite=overwrite) as writer:
        for source, number, atoms in iter_structures(inputs, index=index, file_format=file_format):
            bar.update(1)
            try:
                sample = validate_sample(atoms_to_sample(atoms), index=number, source=source)
            except InvalidSampleError as exc:
                if strict:
                    raise MatscimlError(f"{exc} (--strict: no dataset written)") from exc
                writer.reject(index=number, source=source, reason=str(exc))
                continue
            writer.append(sample, validate=False)
        bar.close()
        if writer.count == 0:
            raise MatscimlError(
                f"none of the {writer.num_rejected} structures in {', '.join(map(str, inputs))} is valid; "
                f"first reason: {writer.rejected[0]['reason'] if writer.rejected else 'no structures found'}"
            )
    report.written = writer.count
    report.rejected = writer.rejected
    report.num_rejected = writer.num_rejected
    return report
