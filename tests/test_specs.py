"""Unit tests of the spec classes (matsciml.specs), the public plugin contract.

Fast and in-process: no plugin is installed, specs are built by hand.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import sys
import textwrap
from pathlib import Path

import pytest

from matsciml.errors import MatscimlError
from matsciml.hookspecs import HOOK_FOR_KIND
from matsciml.specs import (
    KINDS,
    SPEC_CLASSES,
    ComponentSpec,
    DatasetSpec,
    ModelSpec,
    RepresentationSpec,
    TaskSpec,
)


def _echo(**kwargs):
    """A factory that returns the keywords it was called with."""
    return kwargs


def _model(**overrides) -> ModelSpec:
    fields = dict(
        name="tiny",
        summary="a tiny model",
        factory=_echo,
        defaults={"hidden_dim": 16, "num_layers": 2},
        param_help={"hidden_dim": "width", "num_layers": "depth"},
        representation="toy-points",
        representation_distribution="matsciml-toyplugin",
    )
    fields.update(overrides)
    return ModelSpec(**fields)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_spec_needs_a_non_empty_string_name(name) -> None:
    """A spec without a usable name is rejected at construction, naming the kind."""
    with pytest.raises(ValueError, match="dataset spec needs a non-empty name"):
        DatasetSpec(name=name, summary="s", factory=_echo)


@pytest.mark.parametrize("factory", ["no_colon_here", "", 42, None])
def test_factory_must_be_callable_or_module_attribute_string(factory) -> None:
    """A factory that is neither callable nor 'module:attribute' is rejected with the expected form."""
    with pytest.raises(ValueError, match=r"'module:attribute' string") as info:
        RepresentationSpec(name="rep", summary="s", factory=factory)
    assert "'rep'" in str(info.value)


def test_model_spec_must_name_its_representation() -> None:
    """A model that does not say which representation it consumes is refused (DESIGN rule 2)."""
    with pytest.raises(ValueError, match="must name the representation"):
        _model(representation="")
    with pytest.raises(ValueError, match="must name the representation"):
        ModelSpec(name="m", summary="s", factory=_echo)


def test_specs_are_frozen_and_copy_their_defaults() -> None:
    """Specs cannot be reassigned, and later edits of the caller's dict do not leak in."""
    defaults = {"hidden_dim": 16}
    spec = _model(defaults=defaults)
    defaults["hidden_dim"] = 999
    defaults["sneaky"] = 1
    assert dict(spec.defaults) == {"hidden_dim": 16}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]


def test_with_distribution_returns_a_new_spec() -> None:
    """The registry stamps the distribution on a copy; the plugin's own spec stays unset."""
    spec = _model()
    stamped = spec.with_distribution("matsciml-toyplugin")
    assert stamped.distribution == "matsciml-toyplugin"
    assert spec.distribution is None
    assert isinstance(stamped, ModelSpec) and stamped.representation == spec.representation


def test_every_kind_has_a_spec_class_and_a_hook() -> None:
    """The four kinds, their spec classes and their hooks line up one to one."""
    assert set(KINDS) == {"dataset", "representation", "model", "task"}
    assert set(SPEC_CLASSES) == set(KINDS) == set(HOOK_FOR_KIND)
    for kind, cls in SPEC_CLASSES.items():
        assert cls.kind == kind and issubclass(cls, ComponentSpec)


# ------------------------------------------------------------ hyper-parameters
def test_resolve_params_rejects_unknown_names_listing_the_known_ones() -> None:
    """A misspelt hyper-parameter fails with the wrong name and every valid one."""
    spec = _model()
    with pytest.raises(MatscimlError) as info:
        spec.resolve_params({"hiden_dim": 8, "dropout": 0.1})
    message = str(info.value)
    assert "'tiny'" in message
    assert "dropout, hiden_dim" in message
    assert "known: hidden_dim, num_layers" in message


def test_resolve_params_merges_overrides_into_defaults() -> None:
    """Overrides replace defaults key by key; the spec's defaults are not modified."""
    spec = _model()
    assert spec.resolve_params({"num_layers": 5}) == {"hidden_dim": 16, "num_layers": 5}
    assert spec.resolve_params(None) == {"hidden_dim": 16, "num_layers": 2}
    assert dict(spec.defaults) == {"hidden_dim": 16, "num_layers": 2}


def test_spec_without_defaults_accepts_any_keyword() -> None:
    """With no declared hyper-parameters there is nothing to check against."""
    spec = RepresentationSpec(name="rep", summary="s", factory=_echo)
    assert spec.resolve_params({"anything": 1}) == {"anything": 1}


def test_build_calls_the_factory_with_merged_defaults() -> None:
    """build() passes defaults updated by the keywords given."""
    spec = _model()
    assert spec.build() == {"hidden_dim": 16, "num_layers": 2}
    assert spec.build(hidden_dim=4) == {"hidden_dim": 4, "num_layers": 2}
    with pytest.raises(MatscimlError, match="no hyper-parameter"):
        spec.build(width=4)


# ------------------------------------------------------------ lazy factories
@pytest.fixture
def lazy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A throw-away importable module that records when it is imported."""
    name = "matsciml_specs_lazy_probe"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        IMPORTED = True

        class Outer:
            @staticmethod
            def inner(**kwargs):
                return ("inner", kwargs)

        def make(**kwargs):
            return ("made", kwargs)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_string_factory_is_imported_only_when_built(lazy_module: str) -> None:
    """A 'module:attribute' factory is not imported by the spec, only by build()."""
    spec = DatasetSpec(name="lazy", summary="s", factory=f"{lazy_module}:make", defaults={"n": 1})
    spec.describe()
    spec.resolve_params({"n": 2})
    assert lazy_module not in sys.modules
    assert spec.build(n=3) == ("made", {"n": 3})
    assert lazy_module in sys.modules


def test_string_factory_may_name_a_nested_attribute(lazy_module: str) -> None:
    """'module:Outer.inner' walks attributes after importing the module."""
    spec = TaskSpec(name="nested", summary="s", factory=f"{lazy_module}:Outer.inner")
    assert spec.build(x=1) == ("inner", {"x": 1})


def test_missing_factory_module_is_a_clear_error() -> None:
    """An uninstalled factory module fails at build time naming the component, factory,
    distribution and a fix; constructing and describing the spec still work."""
    spec = _model(factory="matsciml_no_such_module_xyz.model:Net").with_distribution("matsciml-ghost")
    assert spec.describe()["factory"] == "matsciml_no_such_module_xyz.model:Net"
    with pytest.raises(MatscimlError) as info:
        spec.build()
    message = str(info.value)
    assert "'tiny'" in message and "matsciml-ghost" in message
    assert "matsciml_no_such_module_xyz.model:Net" in message
    assert "ModuleNotFoundError" in message and "install" in message


def test_missing_factory_attribute_is_a_clear_error(lazy_module: str) -> None:
    """A module that exists but lacks the attribute fails with 'does not exist'."""
    spec = _model(factory=f"{lazy_module}:NoSuchNet")
    with pytest.raises(MatscimlError, match=r"does not exist"):
        spec.load_factory()


# ------------------------------------------------------------------ describe
def test_describe_is_json_serialisable_for_every_kind() -> None:
    """describe() gives plain JSON, with each kind's requirements and the help of each hyper-parameter."""
    specs = [
        DatasetSpec(name="d", summary="s", factory=functools.partial(_echo, split="train"),
                    defaults={"root": Path("/data"), "keys": ("pos", "energy"), "limit": None},
                    targets=("energy",), num_samples=4),
        RepresentationSpec(name="r", summary="s", factory="pkg.mod:Rep", defaults={"cutoff": 6.0}),
        _model(),
        TaskSpec(name="t", summary="s", factory=_echo, defaults={"weights": {"energy": 1.0}},
                 required_targets=("energy", "forces")),
    ]
    described = json.loads(json.dumps([spec.describe() for spec in specs]))
    dataset, representation, model, task = described
    assert [d["kind"] for d in described] == ["dataset", "representation", "model", "task"]
    assert dataset["targets"] == ["energy"] and dataset["num_samples"] == 4
    assert dataset["factory"].endswith(":_echo(split='train')")
    assert {p["name"]: p["default"] for p in dataset["hyperparameters"]} == {
        "root": repr(Path("/data")), "keys": ["pos", "energy"], "limit": None}
    assert representation["factory"] == "pkg.mod:Rep"
    assert model["representation"] == "toy-points"
    assert model["representation_distribution"] == "matsciml-toyplugin"
    assert model["hyperparameters"] == [
        {"name": "hidden_dim", "default": 16, "help": "width"},
        {"name": "num_layers", "default": 2, "help": "depth"},
    ]
    assert model["factory"] == f"{__name__}:_echo"
    assert task["required_targets"] == ["energy", "forces"]
    assert task["hyperparameters"][0]["default"] == {"energy": 1.0}
