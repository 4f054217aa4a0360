"""The test environments themselves: what each is meant to hold.

``bash scripts/dev test`` runs the suite twice. In the pinned environment it
sets ``MATSCIML_EXPECT_DGL=1``; there DGL must import, so the DGL tests can
never be skipped by a broken install. In the current-torch environment the
core must work without DGL.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(os.environ.get("MATSCIML_EXPECT_DGL") != "1",
                    reason="only the pinned environment (MATSCIML_EXPECT_DGL=1) must load DGL")
def test_pinned_environment_loads_the_dgl_stack() -> None:
    """DGL, the DGL plugin and the E(n)-GNN plugin import in the pinned environment."""
    dgl = importlib.import_module("dgl")
    torch = importlib.import_module("torch")
    assert dgl.__version__.startswith("2.1"), dgl.__version__
    assert torch.__version__.startswith("2.2.1"), torch.__version__
    importlib.import_module("matsciml_dgl.representation")
    importlib.import_module("matsciml_egnn.model")


def test_core_imports_without_dgl_or_any_plugin() -> None:
    """Importing the core, its registry, data layer, tasks and CLI pulls in no DGL and no plugin."""
    code = (
        "import sys\n"
        "import matsciml.registry, matsciml.data.dataset, matsciml.tasks, matsciml.training.run, matsciml.cli\n"
        "bad = sorted(m for m in sys.modules if m == 'dgl' or m.startswith(('dgl.', 'matsciml_')))\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
