"""Components whose modules do not import here are listed as unavailable, with the reason and the fix.

A spec's ``requires`` names the modules its factory imports that may be
missing or broken where the plugin is installed (DGL on current torch).
``matsciml models`` and ``matsciml info`` show such a component as
unavailable with that advice; building it fails with the same line instead
of an ImportError deep in a factory. Runs in both test environments: in the
current-torch one, E(n)-GNN and MEGNet are installed without DGL, as a
user's ``pip install`` on new torch would leave them.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from installed_plugins import environment

from matsciml.cli.lookup import unavailable_reason
from matsciml.errors import MatscimlError
from matsciml.specs import ModelSpec, RepresentationSpec

MISSING = "matsciml_module_that_does_not_exist"


def _echo(**kwargs):
    return kwargs


class _Lookup:
    """A registry of hand-made specs, as much of one as unavailable_reason reads."""

    def __init__(self, *specs):
        self.specs = specs

    def list(self, kind: str):
        return [spec for spec in self.specs if spec.kind == kind]


def test_a_missing_required_module_makes_the_component_unavailable_with_its_advice() -> None:
    spec = RepresentationSpec(name="needy", summary="s", factory=_echo, requires={MISSING: "install the thing"})
    reason = spec.unavailable_reason()
    assert reason == (f"needs {MISSING}, which does not import here (ModuleNotFoundError: No module named "
                      f"'{MISSING}'); install the thing")
    with pytest.raises(MatscimlError) as raised:
        spec.build()
    assert str(raised.value) == f"representation 'needy' from an unknown distribution is unavailable: {reason}"
    assert spec.describe()["requires"] == {MISSING: "install the thing"}
    assert RepresentationSpec(name="fine", summary="s", factory=_echo, requires={"json": "-"}).unavailable_reason() is None


def test_a_model_is_unavailable_when_its_representation_is_missing_or_unavailable() -> None:
    model = ModelSpec(name="m", summary="s", factory=_echo, representation="needy",
                      representation_distribution="needy-dist")
    assert unavailable_reason(model, _Lookup(model)) == "its representation 'needy' is not installed: pip install needy-dist"
    needy = RepresentationSpec(name="needy", summary="s", factory=_echo, requires={MISSING: "advice"},
                               distribution="needy-dist")
    reason = unavailable_reason(model, _Lookup(model, needy))
    assert reason.startswith(f"its representation 'needy' (from needy-dist) needs {MISSING}, which does not import")
    fine = RepresentationSpec(name="needy", summary="s", factory=_echo)
    assert unavailable_reason(model, _Lookup(model, fine)) is None


def _matsciml(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matsciml", *arguments], capture_output=True, text=True,
                          env=environment(None), timeout=300)


@pytest.mark.skipif(importlib.util.find_spec("dgl") is not None, reason="DGL is installed (the pinned stack)")
def test_without_dgl_the_dgl_models_are_listed_as_unavailable_with_the_reason() -> None:
    """The current-torch environment: egnn and megnet are installed but DGL is not."""
    done = _matsciml("models")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    for name in ("egnn", "megnet"):
        assert rows[name][1:3] == ["dgl-graph", "unavailable"], done.stdout
        assert f"  {name}: needs dgl, which does not import here (ModuleNotFoundError" in done.stdout
    assert "scripts/pins/dgl-stack.txt" in done.stdout
    listed = json.loads(_matsciml("models", "--json").stdout)
    assert {entry["name"]: bool(entry["unavailable"]) for entry in listed}["megnet"] is True
    done = _matsciml("train", "--model", "megnet", "dataset.name=slab-emt-s2ef", "task.name=s2ef")
    assert done.returncode == 1
    assert done.stderr.startswith("matsciml: error: model 'megnet' from matsciml-megnet is unavailable: needs dgl")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(importlib.util.find_spec("dgl") is None, reason="DGL is not installed (the current-torch run)")
def test_with_dgl_the_dgl_models_are_available() -> None:
    listed = json.loads(_matsciml("models", "--json").stdout)
    status = {entry["name"]: entry["unavailable"] for entry in listed}
    assert status["egnn"] is None and status["megnet"] is None
