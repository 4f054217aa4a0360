"""Install the test distributions of ``tests/plugins/`` with pip, as a user would.

Shared by the tests that need plugins discovered through real entry points
(test_plugin_contract.py installs all five; the tests that train the toy
plugin install it alone, since matsciml-dupplugin claims its model's name).
A test module uses the fixtures below by importing them.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from matsciml.registry import Registry

PLUGIN_SOURCES = Path(__file__).resolve().parent / "plugins"


def install_plugins(projects: Sequence[str], root: Path) -> Path:
    """``pip install --target ROOT/site`` the named projects of ``tests/plugins/``; returns the site folder.

    The projects are copied first so that building them leaves no
    ``build/`` or ``*.egg-info`` in the repository. Offline: no index, no
    dependencies (matsciml, torch and numpy are in the environment already).
    """
    sources = []
    for project in projects:
        copy = root / "src" / project
        shutil.copytree(PLUGIN_SOURCES / project, copy,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        sources.append(str(copy))
    site = root / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
               "--no-index", "--disable-pip-version-check", "--target", str(site), *sources]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"pip could not install the test plugins {', '.join(projects)} (exit {done.returncode}):"
                           f"\n{done.stdout}\n{done.stderr}")
    installed = sorted(p.name for p in site.glob("*.dist-info"))
    if len(installed) != len(projects):
        raise RuntimeError(f"expected {len(projects)} installed distributions in {site}, found {installed}")
    return site


def environment(site: Path | None) -> dict[str, str]:
    """This process's environment with ``site`` first on ``PYTHONPATH`` (wide, UTF-8 output)."""
    env = dict(os.environ)
    env["COLUMNS"] = "1000"  # tables are cut to the terminal width
    env["PYTHONIOENCODING"] = "utf-8"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(([str(site)] if site else []) + paths)
    return env


@pytest.fixture(scope="session")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """matsciml-toyplugin alone, installed with pip (no DGL: it trains on current torch too)."""
    try:
        return install_plugins(["matsciml_toyplugin"], tmp_path_factory.mktemp("toy-plugin"))
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def toy_registry(toy_site: Path) -> Iterator[Registry]:
    """A registry of this process that discovers the installed toy plugin through its entry point."""
    sys.path.insert(0, str(toy_site))
    try:
        yield Registry().load()
    finally:
        sys.path.remove(str(toy_site))
