"""Shared fixtures of the test suite.

The real DFT devsets live outside the repository in ``../shared/devsets``
(or wherever ``MATSCIML_DEVSETS`` points). Tests that need them skip with a
clear reason when the folder is absent, except where
``MATSCIML_REQUIRE_DEVSETS=1`` is set (as in CI): then their absence fails.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# fixtures shared by several modules: the toy plugin installed once per session, and a registry seeing it
from installed_plugins import toy_registry, toy_site  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
DEVSET_FILES = ("lips.extxyz", "colabfit.extxyz", "materials_project.extxyz")


def _devsets_dir() -> Path:
    return Path(os.environ.get("MATSCIML_DEVSETS", REPO_ROOT.parent / "shared" / "devsets"))


@pytest.fixture(scope="session")
def devsets_dir() -> Path:
    """Folder of the real DFT devsets (extended XYZ)."""
    folder = _devsets_dir()
    missing = [name for name in DEVSET_FILES if not (folder / name).is_file()]
    if missing:
        reason = (f"real DFT devsets missing from {folder} ({', '.join(missing)}); "
                  f"put ../shared/devsets beside the repository or set MATSCIML_DEVSETS")
        if os.environ.get("MATSCIML_REQUIRE_DEVSETS") == "1":
            pytest.fail(reason + " (MATSCIML_REQUIRE_DEVSETS=1 makes this a failure)")
        pytest.skip(reason)
    return folder
