"""Unit tests of the spec classes (matsciml.specs), the public plugin contract.

Fast and in-process: no plugin is installed, specs are built by hand.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
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
    ParamRange,
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


def test_tied_params_name_declared_hyper_parameters() -> None:
    """A model ties its own declared hyper-parameters to named representation ones; describe() shows them."""
    spec = _model(defaults={"hidden_dim": 16, "cutoff_radius": 5.0}, param_help={},
                  tied_params={"cutoff_radius": "cutoff_radius"})
    assert dict(spec.tied_params) == {"cutoff_radius": "cutoff_radius"}
    assert spec.describe()["tied_params"] == {"cutoff_radius": "cutoff_radius"}
    assert _model().describe()["tied_params"] == {}
    with pytest.raises(ValueError, match=r"model 'tiny': tied_params names radius, which are not in its defaults"):
        _model(tied_params={"radius": "cutoff_radius"})
    with pytest.raises(ValueError, match=r"tied_params\['hidden_dim'\] must name a hyper-parameter of "
                                         r"representation 'toy-points'"):
        _model(tied_params={"hidden_dim": ""})


def test_task_targets_come_from_declarations() -> None:
    """required_targets plus the keys named by targets_param; complete_params fills in derived values."""
    spec = TaskSpec(name="t", summary="s", factory=_echo, defaults={"targets": None, "weight": 1.0},
                    required_targets=("energy",), targets_param="targets",
                    complete_params=lambda params: {**params, "weight": 2.0 * params["weight"]})
    assert spec.targets_for({"targets": ["charges", "energy"]}) == ["energy", "charges"]
    assert spec.targets_for({"targets": "band_gap"}) == ["energy", "band_gap"]
    assert spec.targets_for({"targets": None}) == ["energy"]
    assert spec.resolve_params({"weight": 3.0}) == {"targets": None, "weight": 6.0}
    assert spec.build(weight=1.5) == {"targets": None, "weight": 3.0}
    assert spec.describe()["targets_param"] == "targets"
    with pytest.raises(ValueError, match="targets_param 'labels' is not one of its hyper-parameters"):
        TaskSpec(name="t", summary="s", factory=_echo, defaults={"targets": None}, targets_param="labels")


def test_the_contract_version_counts_the_new_fields() -> None:
    """tied_params, targets_param and complete_params came with version 3 of the hook contract, presets with 4."""
    from matsciml import hookspecs

    assert hookspecs.HOOKSPEC_VERSION == 4
    documented = inspect.getsource(hookspecs)
    assert all(field in documented for field in ("tied_params", "targets_param", "complete_params", "presets"))


# ------------------------------------------------------------------ presets
def test_presets_set_hyper_parameters_under_the_users_own_values() -> None:
    spec = _model(presets={"small": {"hidden_dim": 4}})
    assert spec.resolve_params(preset="small") == {"hidden_dim": 4, "num_layers": 2}
    assert spec.resolve_params({"hidden_dim": 8}, preset="small") == {"hidden_dim": 8, "num_layers": 2}
    assert spec.resolve_params(preset="default") == spec.resolve_params() == {"hidden_dim": 16, "num_layers": 2}
    assert spec.build(preset="small", num_layers=5) == {"hidden_dim": 4, "num_layers": 5}
    assert spec.describe()["presets"] == {"small": {"hidden_dim": 4}}
    with pytest.raises(MatscimlError) as raised:
        spec.resolve_params(preset="tiny")
    assert str(raised.value) == ("preset='tiny' is not valid: expected one of 'default', 'small' for model 'tiny'; "
                                 "`matsciml info tiny` shows what each preset sets")
    with pytest.raises(MatscimlError, match=r"^model.preset='huge' is not valid"):
        spec.preset_params("huge", section="model")


@pytest.mark.parametrize("presets, words", [
    ({"small": {"depth": 1}}, "preset 'small': model 'tiny' has no hyper-parameter"),
    ({"small": {"hidden_dim": "wide"}}, "preset 'small': hidden_dim='wide' is not valid"),
    ({"default": {"hidden_dim": 4}}, "other than 'default'"),
    ({"": {"hidden_dim": 4}}, "non-empty strings"),
])
def test_a_preset_that_does_not_fit_the_defaults_is_refused_at_construction(presets, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        _model(presets=presets)


@pytest.mark.parametrize("reserved", ["name", "preset"])
def test_name_and_preset_cannot_be_hyper_parameters(reserved: str) -> None:
    with pytest.raises(ValueError, match=f"{reserved} cannot be hyper-parameters"):
        _model(defaults={reserved: "x", "hidden_dim": 16})


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
        {"name": "hidden_dim", "default": 16, "help": "width", "range": None, "choices": None},
        {"name": "num_layers", "default": 2, "help": "depth", "range": None, "choices": None},
    ]
    assert model["factory"] == f"{__name__}:_echo"
    assert task["required_targets"] == ["energy", "forces"]
    assert task["hyperparameters"][0]["default"] == {"energy": 1.0}


# ------------------------------------------------------------ types, ranges, choices
def _checked(**overrides) -> ModelSpec:
    fields = dict(
        defaults={"hidden_dim": 16, "dropout": 0.1, "attention": True, "activation": "silu",
                  "max_neighbors": None, "targets": ["energy"]},
        param_ranges={"hidden_dim": ">=1", "dropout": "[0,1)", "max_neighbors": ">=1"},
        param_choices={"activation": ["silu", "relu"]},
    )
    fields.update(overrides)
    return _model(param_help={}, **fields).with_distribution("matsciml-toyplugin")


@pytest.mark.parametrize("name, value", [
    ("hidden_dim", 8), ("hidden_dim", 1),
    ("dropout", 0), ("dropout", 0.0), ("dropout", 0.99),
    ("attention", False),
    ("activation", "relu"),
    ("max_neighbors", None), ("max_neighbors", 12), ("max_neighbors", 2.5),
    ("targets", ["band_gap", "energy"]), ("targets", ("energy",)), ("targets", "band_gap"),
])
def test_values_of_the_right_type_and_range_are_accepted(name: str, value) -> None:
    """An int default takes ints, a float default ints and floats, a None default anything in range."""
    assert _checked().resolve_params({name: value})[name] == value


@pytest.mark.parametrize("name, value, expected", [
    ("hidden_dim", "8", "an integer >= 1"),
    ("hidden_dim", 8.0, "an integer >= 1"),
    ("hidden_dim", True, "an integer >= 1"),
    ("hidden_dim", 0, "an integer >= 1"),
    ("hidden_dim", -5, "an integer >= 1"),
    ("hidden_dim", None, "an integer >= 1"),
    ("dropout", 1.0, "a number in [0, 1)"),
    ("dropout", -0.1, "a number in [0, 1)"),
    ("dropout", float("nan"), "a number in [0, 1)"),
    ("dropout", "0.1", "a number in [0, 1)"),
    ("dropout", False, "a number in [0, 1)"),
    ("attention", 1, "true or false"),
    ("attention", "yes", "true or false"),
    ("activation", "tanh", "one of 'silu', 'relu'"),
    ("activation", "SiLU", "one of 'silu', 'relu'"),
    ("activation", 3, "one of 'silu', 'relu'"),
    ("max_neighbors", 0, "a number >= 1 or null"),
    ("max_neighbors", "all", "a number >= 1 or null"),
    ("targets", 5, "a list"),
])
def test_wrong_type_or_range_is_one_line_naming_key_value_and_expectation(name: str, value, expected: str) -> None:
    """The message names the key as written in the config, the value, what is expected and the default."""
    spec = _checked()
    with pytest.raises(MatscimlError) as info:
        spec.check_params({name: value}, section="model")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"model.{name}={value!r} is not valid: expected {expected} for model 'tiny' "
                              f"from matsciml-toyplugin; set model.{name} to such a value, e.g. model.{name}=")
    with pytest.raises(MatscimlError, match=f"^{name}="):  # without a section: the bare name
        spec.resolve_params({name: value})


def test_build_checks_before_the_factory_runs() -> None:
    """A bad value never reaches the factory."""
    calls = []
    spec = _checked(factory=lambda **kwargs: calls.append(kwargs))
    with pytest.raises(MatscimlError, match="hidden_dim=0 is not valid"):
        spec.build(hidden_dim=0)
    assert calls == []
    spec.build(hidden_dim=3)
    assert calls[0]["hidden_dim"] == 3


@pytest.mark.parametrize("text, inside, outside", [
    (">0", [1e-9, 3, 7.5], [0, -1, float("nan")]),
    (">=0", [0, 0.0, 2], [-1e-9]),
    ("<1", [0.5, -3], [1, 2]),
    ("<= 1", [1, -3], [1.01]),
    ("[0,1]", [0, 0.5, 1], [-0.1, 1.1]),
    ("(0, 1]", [0.5, 1], [0, 1.1]),
    ("[0,1)", [0, 0.5], [1]),
    ("(0,1)", [0.5], [0, 1]),
    (">=-1", [-1, 0], [-2]),
])
def test_range_forms(text: str, inside: list, outside: list) -> None:
    """Each documented range form parses and bounds as its brackets say; bools are never numbers."""
    bounds = ParamRange.parse(text)
    assert all(value in bounds for value in inside), text
    assert not any(value in bounds for value in outside), text
    assert True not in bounds and "1" not in bounds


@pytest.mark.parametrize("text", ["0", "x", "=>0", ">", "[1,0]", "[0,1", "0..1", ">a", ""])
def test_malformed_range_is_refused_at_construction(text: str) -> None:
    """A plugin author's malformed range fails when the spec is made, naming the accepted forms."""
    with pytest.raises(ValueError, match=r"param_ranges\['hidden_dim'\].*write it as >0, >=0"):
        _model(param_ranges={"hidden_dim": text})


def test_ranges_and_choices_must_name_declared_hyper_parameters() -> None:
    """A range or choice for a name without a default (a typo) is refused; so is a range on a string."""
    with pytest.raises(ValueError, match="param_ranges names hiden_dim, which are not in its defaults"):
        _model(param_ranges={"hiden_dim": ">0"})
    with pytest.raises(ValueError, match="param_choices names colour"):
        _model(param_choices={"colour": ["red"]})
    with pytest.raises(ValueError, match="bounds a number, but the default 'silu' is not one"):
        _model(defaults={"activation": "silu"}, param_ranges={"activation": ">0"})
    with pytest.raises(ValueError, match="must be a non-empty list"):
        _model(param_choices={"hidden_dim": []})


def test_describe_shows_ranges_and_choices() -> None:
    """describe() (`matsciml info --json`) carries each declared range and list of choices."""
    described = {p["name"]: p for p in _checked().describe()["hyperparameters"]}
    assert described["hidden_dim"]["range"] == ">=1" and described["hidden_dim"]["choices"] is None
    assert described["activation"]["choices"] == ["silu", "relu"] and described["activation"]["range"] is None
    assert described["attention"]["range"] is None and described["attention"]["choices"] is None


# ------------------------------------------------------------ factories that raise
def _raise(exception: BaseException):
    def factory(**kwargs):
        raise exception
    return factory


@pytest.mark.parametrize("exception", [ValueError("bad width"), TypeError("unexpected keyword"),
                                       RuntimeError("CUDA out of memory"), ZeroDivisionError("division by zero"),
                                       SystemExit("a plugin called sys.exit")])
def test_raising_factory_names_component_kind_and_distribution(exception: BaseException) -> None:
    """Whatever a factory raises (but KeyboardInterrupt) becomes one MatscimlError line naming whose code failed."""
    spec = _model(factory=_raise(exception)).with_distribution("matsciml-raiseplugin")
    with pytest.raises(MatscimlError) as info:
        spec.build(hidden_dim=4)
    assert str(info.value) == (
        f"model 'tiny' from matsciml-raiseplugin failed to build with {{'hidden_dim': 4, 'num_layers': 2}}: "
        f"{type(exception).__name__}: {exception}; check the hyper-parameters or report it to that plugin's authors")
    assert info.value.__cause__ is exception


def test_factory_errors_are_kept_on_one_line_and_matsciml_errors_pass_through() -> None:
    """A multi-line message is joined onto one line; a MatscimlError of the factory is already an answer."""
    spec = _model(factory=_raise(ValueError("first line\nsecond line"))).with_distribution("x")
    with pytest.raises(MatscimlError, match="ValueError: first line second line;"):
        spec.build()
    own = MatscimlError("loss 'l3' is not known; use 'l1' or 'mse'")
    with pytest.raises(MatscimlError) as info:
        _model(factory=_raise(own)).build()
    assert info.value is own
    with pytest.raises(KeyboardInterrupt):
        _model(factory=_raise(KeyboardInterrupt())).build()


def test_factory_kwargs_reach_the_factory_unchecked() -> None:
    """Keywords that are not hyper-parameters (a task's optimizer section) pass through build()."""
    spec = TaskSpec(name="t", summary="s", factory=_echo, defaults={"loss": "l1"})
    assert spec.build(factory_kwargs={"optimizer": {"name": "adamw"}}) == {"loss": "l1", "optimizer": {"name": "adamw"}}


def test_builtin_task_choices_match_what_the_tasks_accept() -> None:
    """The activations the built-in task specs declare are those the task heads know."""
    pytest.importorskip("torch")
    from matsciml.builtins import matsciml_tasks
    from matsciml.tasks.heads import ACTIVATIONS

    for spec in matsciml_tasks():
        assert set(spec.param_choices["activation"]) == set(ACTIVATIONS), spec.name
        assert all(name in spec.defaults for name in (*spec.param_ranges, *spec.param_choices))


@pytest.mark.dgl
def test_first_party_plugin_choices_match_what_their_factories_accept() -> None:
    """egnn's declared activations and dgl-graph's dtypes are exactly those their code knows."""
    from matsciml_dgl.plugin import matsciml_representations
    from matsciml_dgl.representation import _DTYPES
    from matsciml_egnn.blocks import ACTIVATIONS
    from matsciml_egnn.plugin import matsciml_models

    (model,) = matsciml_models()
    assert set(model.param_choices["activation"]) == set(ACTIVATIONS)
    (representation,) = matsciml_representations()
    assert set(representation.param_choices["dtype"]) == set(_DTYPES)
