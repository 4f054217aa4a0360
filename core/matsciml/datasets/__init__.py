"""Datasets shipped with the core: small OC20-style devsets made with EMT.

OC20 itself cannot be shipped, so ``scripts/make_emt_devsets.py`` builds
metal slabs with H/C/N/O adsorbates, relaxes them with ASE's EMT calculator
and stores the frames in the project's LMDB format. They are EMT, not DFT:
good for running the whole pipeline on a laptop, not for science.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

DEVSET_DIR = Path(__file__).resolve().parent / "devsets"

DEVSETS: dict[str, dict[str, Any]] = {
    "slab-emt-s2ef": {
        "summary": "OC20-style S2EF devset: relaxation frames of fcc metal slabs with H/C/N/O adsorbates, "
                   "EMT energies and forces (not DFT)",
        "targets": ("energy", "forces"),
    },
    "slab-emt-is2re": {
        "summary": "OC20-style IS2RE devset: initial slab+adsorbate structures with their EMT relaxed "
                   "energy (not DFT)",
        "targets": ("relaxed_energy",),
    },
}


def devset_path(name: str) -> Path:
    """Path of a shipped devset file."""
    return DEVSET_DIR / f"{name}.lmdb"


def open_devset(name: str, keys: Any = None) -> Any:
    """Open a shipped devset as an :class:`~matsciml.data.dataset.LMDBDataset`."""
    from matsciml.data.dataset import LMDBDataset

    path = devset_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped devset {name!r} is missing at {path}; reinstall matsciml or regenerate it "
            f"with `python scripts/make_emt_devsets.py`"
        )
    return LMDBDataset(path, keys=keys)
