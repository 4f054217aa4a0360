"""Spec objects: how a plugin describes a component to the registry.

A spec is a small frozen dataclass: a name, a one-line summary, the factory
that builds the component, its default hyper-parameters (with one help line
each), and what it needs. The factory may be given as ``"module:attribute"``
so that listing components never imports a heavy dependency (DGL, a model);
it is imported only when the component is built.

Hyper-parameters are checked before anything is built, so a wrong value is
one line naming it instead of a traceback from deep inside a model:

* the type of each default decides the accepted type: an ``int`` default
  accepts integers only (not ``True``, not ``"8"``), a ``float`` default
  integers and floats, a ``bool`` default only ``true``/``false``, a ``str``
  default only strings, a list default a list (or one string), and a
  ``None`` default anything;
* ``param_ranges`` bounds numbers, in one of the forms ``">0"``, ``">=0"``,
  ``"<1"``, ``"<=1"`` or an interval ``"[0,1]"``, ``"(0,1]"``, ``"[0,1)"``,
  ``"(0,1)"`` (square bracket: bound included);
* ``param_choices`` lists the accepted values (matched exactly).

A ``None`` value is always accepted where the default is ``None``.

These classes are part of the public contract (see :mod:`matsciml.hookspecs`).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from matsciml.errors import MatscimlError


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


def _one_line(text: str) -> str:
    """Collapse a message onto one line (the CLI prints one line per failure)."""
    return " ".join(str(text).split())


# ------------------------------------------------------------ value checks
def is_integer(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an ``int`` to Python, never to a config)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An integer or a float, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


_RANGE_FORM = re.compile(
    r"^\s*(?:(?P<op>>=|<=|>|<)\s*(?P<bound>[^\s,()\[\]]+)"
    r"|(?P<open>[\[(])\s*(?P<low>[^\s,]+)\s*,\s*(?P<high>[^\s\])]+)\s*(?P<close>[\])]))\s*$"
)


@dataclass(frozen=True)
class ParamRange:
    """The numbers a hyper-parameter accepts, parsed from a spec's ``param_ranges``.

    Forms: ``">0"``, ``">=0"``, ``"<1"``, ``"<=1"``, ``"[0,1]"``, ``"(0,1]"``,
    ``"[0,1)"``, ``"(0,1)"``; a square bracket includes its bound.
    """

    low: float | None
    high: float | None
    low_included: bool = True
    high_included: bool = True

    @classmethod
    def parse(cls, text: str) -> "ParamRange":
        """The range written as ``text``; ``ValueError`` naming the accepted forms otherwise."""
        match = _RANGE_FORM.match(text) if isinstance(text, str) else None
        try:
            if match and match["op"]:
                bound = float(match["bound"])
                if match["op"].startswith(">"):
                    return cls(low=bound, high=None, low_included=match["op"] == ">=")
                return cls(low=None, high=bound, high_included=match["op"] == "<=")
            if match:
                low, high = float(match["low"]), float(match["high"])
                if low > high:
                    raise ValueError("the lower bound is above the upper one")
                return cls(low=low, high=high, low_included=match["open"] == "[",
                           high_included=match["close"] == "]")
        except ValueError as exc:
            raise ValueError(f"range {text!r} is not valid ({exc}); write it as >0, >=0, <1, <=1, "
                             f"[0,1], (0,1], [0,1) or (0,1)") from None
        raise ValueError(f"range {text!r} is not valid; write it as >0, >=0, <1, <=1, [0,1], (0,1], "
                         f"[0,1) or (0,1)")

    def __contains__(self, value: object) -> bool:
        if not is_number(value) or math.isnan(float(value)):  # type: ignore[arg-type]
            return False
        number = float(value)  # type: ignore[arg-type]
        if self.low is not None and (number < self.low or (number == self.low and not self.low_included)):
            return False
        if self.high is not None and (number > self.high or (number == self.high and not self.high_included)):
            return False
        return True

    def describe(self) -> str:
        """``"> 0"``, ``">= 1"``, ``"in [0, 1]"``: how the range reads in a message."""
        if self.high is None:
            return f"{'>=' if self.low_included else '>'} {_number(self.low)}"
        if self.low is None:
            return f"{'<=' if self.high_included else '<'} {_number(self.high)}"
        return (f"in {'[' if self.low_included else '('}{_number(self.low)}, {_number(self.high)}"
                f"{']' if self.high_included else ')'}")


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and value.is_integer() else str(value)


def _type_rule(default: Any) -> tuple[str, Callable[[Any], bool]] | None:
    """What a default's type accepts: (words for messages, test); ``None``: anything."""
    if default is None:
        return None
    if isinstance(default, bool):
        return "true or false", lambda value: isinstance(value, bool)
    if is_integer(default):
        return "an integer", is_integer
    if is_number(default):
        return "a number", is_number
    if isinstance(default, str):
        return "a string", lambda value: isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return "a list", lambda value: isinstance(value, (list, tuple, str))
    if isinstance(default, Mapping):
        return "a mapping", lambda value: isinstance(value, Mapping)
    return None


def _same_choice(value: Any, choice: Any) -> bool:
    # exact: 1 is not True, and 'L1' is not 'l1' (the factory may not know it)
    return type(value) is type(choice) and value == choice


def as_yaml(value: Any) -> str:
    """A value as it would be typed in a ``key=value`` override (``null``, ``true``, ``silu``, ``6.0``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", value) else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(as_yaml(item) for item in value) + "]"
    return str(value)


@functools.lru_cache(maxsize=None)
def _import_problem(module: str) -> str | None:
    """None when ``module`` imports; else its error as ``Type: message`` on one line."""
    try:
        importlib.import_module(module)
    except BaseException as exc:  # noqa: BLE001 - a broken binary may raise anything, even SystemExit
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _one_line(f"{type(exc).__name__}: {exc}")
    return None


DEFAULT_PRESET = "default"
"""The preset name every component has: its declared defaults, unchanged."""

RESERVED_KEYS = ("name", "preset")
"""Keys of a config section that are not hyper-parameters: the component's name and its preset."""


def invalid_value_message(key: str, value: Any, expected: str, fix: str) -> str:
    """The one line for a value of the wrong type or range: key, value, what is expected, the fix."""
    return _one_line(f"{key}={value!r} is not valid: expected {expected}; {fix}")


@dataclass(frozen=True)
class ComponentSpec:
    """What every component declares.

    Attributes:
        name: the name users type (``matsciml train --model NAME``); matched
            case-insensitively.
        summary: one line saying what the component is.
        factory: a callable, or ``"package.module:attribute"`` naming one,
            that builds the component from keyword hyper-parameters.
        defaults: default hyper-parameters, passed to the factory as keywords.
        param_help: one help line per hyper-parameter, shown by ``matsciml info``.
        distribution: the installed distribution that provided the spec; the
            registry fills it in, plugins leave it ``None``.
        param_ranges: the numbers a hyper-parameter accepts, e.g.
            ``{"hidden_dim": ">=1", "dropout": "[0,1)"}`` (forms: ``>0``,
            ``>=0``, ``<1``, ``<=1``, ``[a,b]``, ``(a,b]``, ``[a,b)``, ``(a,b)``).
            Shown by ``matsciml info`` and enforced before the factory runs.
        param_choices: the values a hyper-parameter accepts, e.g.
            ``{"activation": ("silu", "relu")}`` (matched exactly).
        presets: named sets of hyper-parameters over ``defaults``, e.g.
            ``{"small": {"hidden_dim": 16}}`` for CPU tests; chosen with
            ``model.preset=small``, with the user's own values on top. The
            name ``default`` is reserved: it means ``defaults`` as they are.
        requires: modules the factory imports that may be missing or broken
            where the plugin is installed, as ``{module: what to do}``, e.g.
            ``{"dgl": "DGL 2.1 loads only with torch 2.0-2.2.1; ..."}``.
            ``matsciml models`` lists a component whose module does not
            import as unavailable, with that advice, instead of failing
            when it is built.
    """

    kind: ClassVar[str] = "component"

    name: str
    summary: str
    factory: Any
    defaults: Mapping[str, Any] = field(default_factory=dict)
    param_help: Mapping[str, str] = field(default_factory=dict)
    distribution: str | None = None
    param_ranges: Mapping[str, str] = field(default_factory=dict)
    param_choices: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    requires: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a {self.kind} spec needs a non-empty name, got {self.name!r}")
        if not (callable(self.factory) or (isinstance(self.factory, str) and ":" in self.factory)):
            raise ValueError(
                f"{self.kind} {self.name!r}: factory must be a callable or a "
                f"'module:attribute' string, got {self.factory!r}"
            )
        object.__setattr__(self, "defaults", _frozen_mapping(self.defaults))
        object.__setattr__(self, "param_help", _frozen_mapping(self.param_help))
        object.__setattr__(self, "param_ranges", _frozen_mapping(self.param_ranges))
        choices = _frozen_mapping(self.param_choices)
        object.__setattr__(self, "param_choices", {
            key: tuple(values) if isinstance(values, (list, tuple, set, frozenset)) else values
            for key, values in choices.items()})
        object.__setattr__(self, "requires", _frozen_mapping(self.requires))
        object.__setattr__(self, "presets", _frozen_mapping(
            {name: _frozen_mapping(values) for name, values in _frozen_mapping(self.presets).items()}))
        self._check_declarations()

    def _check_declarations(self) -> None:
        """Ranges and choices name declared hyper-parameters and are well formed (a plugin author's error)."""
        where = f"{self.kind} {self.name!r}"
        reserved = sorted(set(RESERVED_KEYS) & set(self.defaults))
        if reserved:
            raise ValueError(f"{where}: {', '.join(reserved)} cannot be hyper-parameters (config sections use "
                             f"them for the component's name and preset); rename them")
        for table in ("param_ranges", "param_choices"):
            undeclared = sorted(set(getattr(self, table)) - set(self.defaults)) if self.defaults else []
            if undeclared:
                raise ValueError(f"{where}: {table} names {', '.join(undeclared)}, which are not in its "
                                 f"defaults ({', '.join(self.defaults) or 'none'}); declare a default for each")
        for key, text in self.param_ranges.items():
            try:
                ParamRange.parse(text)
            except ValueError as exc:
                raise ValueError(f"{where}: param_ranges[{key!r}]: {exc}") from None
            default = self.defaults.get(key)
            if default is not None and not is_number(default):
                raise ValueError(f"{where}: param_ranges[{key!r}] bounds a number, but the default "
                                 f"{default!r} is not one; give a numeric default or drop the range")
        for key, values in self.param_choices.items():
            if not isinstance(values, tuple) or not values:
                raise ValueError(f"{where}: param_choices[{key!r}] must be a non-empty list of values, "
                                 f"got {values!r}")
        for preset, values in self.presets.items():
            if not isinstance(preset, str) or not preset.strip() or preset == DEFAULT_PRESET:
                raise ValueError(f"{where}: presets must be named by non-empty strings other than "
                                 f"{DEFAULT_PRESET!r} (which means the defaults), got {preset!r}")
            try:
                self.check_params(values)
            except MatscimlError as exc:
                raise ValueError(f"{where}: preset {preset!r}: {exc}") from None

    def unavailable_reason(self) -> str | None:
        """Why this component cannot be built here (a module of :attr:`requires` does not import), or None.

        Imports each required module once per process (a broken install may
        raise anything on import; that text is the reason).
        """
        for module, advice in self.requires.items():
            problem = _import_problem(module)
            if problem is not None:
                return f"needs {module}, which does not import here ({problem}); {advice}"
        return None

    def load_factory(self) -> Callable[..., Any]:
        """Return the factory, importing it if it was given as a string."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise MatscimlError(f"{self.kind} {self.name!r} from {self.distribution or 'an unknown distribution'} "
                                f"is unavailable: {reason}")
        if callable(self.factory):
            return self.factory
        module_name, _, attribute = self.factory.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
        except ImportError as exc:
            raise MatscimlError(
                f"{self.kind} {self.name!r} from {self.distribution or 'an unknown distribution'}: "
                f"cannot import its factory {self.factory!r} ({type(exc).__name__}: {exc}); "
                f"reinstall that distribution or install what it depends on"
            ) from exc
        except AttributeError as exc:
            raise MatscimlError(
                f"{self.kind} {self.name!r}: factory {self.factory!r} does not exist ({exc})"
            ) from exc
        return target

    def expected(self, name: str) -> str | None:
        """In words, what hyper-parameter ``name`` accepts (``"an integer >= 1"``); ``None``: anything."""
        default = self.defaults.get(name)
        rule = _type_rule(default)
        words = rule[0] if rule else ""
        if name in self.param_ranges:
            words = f"{words or 'a number'} {ParamRange.parse(self.param_ranges[name]).describe()}"
        if name in self.param_choices:
            words = "one of " + ", ".join(repr(choice) for choice in self.param_choices[name])
        if not words:
            return None
        return f"{words} or null" if default is None else words

    def accepts(self, name: str, value: Any) -> bool:
        """Whether ``value`` fits hyper-parameter ``name``'s type, range and choices."""
        default = self.defaults.get(name)
        if value is None and default is None:
            return True
        rule = _type_rule(default)
        if rule and not rule[1](value):
            return False
        if name in self.param_ranges and value not in ParamRange.parse(self.param_ranges[name]):
            return False
        if name in self.param_choices and not any(_same_choice(value, c) for c in self.param_choices[name]):
            return False
        return True

    def check_params(self, params: Mapping[str, Any], section: str | None = None) -> None:
        """Raise :class:`MatscimlError` for an unknown name or a value of the wrong type or range.

        ``section`` is the config section the values come from (``"model"``),
        so that the message names the key as the user wrote it
        (``model.hidden_dim``). A spec with no declared defaults accepts any
        keyword.
        """
        if self.defaults:
            unknown = sorted(set(params) - set(self.defaults))
            if unknown:
                keys = ", ".join(f"{section}.{name}" if section else name for name in unknown)
                raise MatscimlError(
                    f"{self.kind} {self.name!r} has no hyper-parameter(s) {keys}; "
                    f"known: {', '.join(sorted(self.defaults))}"
                )
        source = f" from {self.distribution}" if self.distribution else ""
        for name, value in params.items():
            if self.accepts(name, value):
                continue
            key = f"{section}.{name}" if section else name
            expected = f"{self.expected(name)} for {self.kind} {self.name!r}{source}"
            fix = f"set {key} to such a value, e.g. {key}={as_yaml(self.defaults.get(name))} (the default)"
            raise MatscimlError(invalid_value_message(key, value, expected, fix))

    def preset_params(self, preset: str | None, section: str | None = None) -> dict[str, Any]:
        """The hyper-parameters preset ``preset`` sets (none for ``None`` or ``"default"``).

        An unknown name raises :class:`MatscimlError` naming the key
        (``model.preset``) and the presets there are.
        """
        if preset is None or preset == DEFAULT_PRESET:
            return {}
        key = f"{section}.preset" if section else "preset"
        known = [DEFAULT_PRESET, *self.presets]
        if not isinstance(preset, str) or preset not in self.presets:
            expected = f"one of {', '.join(repr(name) for name in known)} for {self.kind} {self.name!r}"
            raise MatscimlError(invalid_value_message(
                key, preset, expected, f"`matsciml info {self.name}` shows what each preset sets"))
        return dict(self.presets[preset])

    def resolve_params(self, overrides: Mapping[str, Any] | None = None,
                       preset: str | None = None) -> dict[str, Any]:
        """Defaults updated with preset ``preset``, then with ``overrides``, after :meth:`check_params`.

        A spec with no declared defaults accepts any keyword.
        """
        overrides = dict(overrides or {})
        self.check_params(overrides)
        return {**self.defaults, **self.preset_params(preset), **overrides}

    def build(self, *args: Any, factory_kwargs: Mapping[str, Any] | None = None, preset: str | None = None,
              **overrides: Any) -> Any:
        """Build the component with its defaults updated by ``overrides``.

        Positional ``args`` go to the factory as they are (a task's backbone);
        so do ``factory_kwargs``, keywords that are not hyper-parameters (a
        task's ``optimizer`` and ``scheduler`` sections). A factory that raises
        is reported naming this component, its kind and its distribution, so
        the user knows whose code failed; errors matsciml raises on purpose
        pass through unchanged. ``preset`` names one of :attr:`presets`.
        """
        params = self.resolve_params(overrides, preset=preset)
        factory = self.load_factory()
        try:
            return factory(*args, **params, **dict(factory_kwargs or {}))
        except MatscimlError:
            raise
        except (Exception, SystemExit) as exc:  # a plugin may raise anything; KeyboardInterrupt stays
            source = self.distribution or "an unknown distribution"
            authors = "matsciml's authors" if self.distribution == "matsciml" else "that plugin's authors"
            raise MatscimlError(_one_line(
                f"{self.kind} {self.name!r} from {source} failed to build with {params}: "
                f"{type(exc).__name__}: {exc}; check the hyper-parameters or report it to {authors}"
            )) from exc

    def with_distribution(self, distribution: str) -> "ComponentSpec":
        return dataclasses.replace(self, distribution=distribution)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (used by ``matsciml info --json``)."""
        factory = self.factory if isinstance(self.factory, str) else _qualified_name(self.factory)
        out: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "summary": self.summary,
            "distribution": self.distribution,
            "factory": factory,
            "hyperparameters": [
                {"name": key, "default": _jsonable(value), "help": self.param_help.get(key, ""),
                 "range": self.param_ranges.get(key),
                 "choices": _jsonable(self.param_choices[key]) if key in self.param_choices else None}
                for key, value in self.defaults.items()
            ],
            "presets": {name: _jsonable(dict(values)) for name, values in self.presets.items()},
            "requires": dict(self.requires),
        }
        out.update(self._requirements())
        return out

    def _requirements(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class DatasetSpec(ComponentSpec):
    """A dataset: its factory returns a ``torch.utils.data.Dataset`` of samples.

    Attributes:
        targets: the labels its samples carry (``energy``, ``forces``,
            ``relaxed_energy``, ``band_gap``...), so tasks can be matched
            to datasets without opening them.
        num_samples: how many samples it holds, when known in advance.
    """

    kind: ClassVar[str] = "dataset"
    targets: tuple[str, ...] = ()
    num_samples: int | None = None

    def _requirements(self) -> dict[str, Any]:
        return {"targets": list(self.targets), "num_samples": self.num_samples}


@dataclass(frozen=True)
class RepresentationSpec(ComponentSpec):
    """A representation: its factory returns an object that turns one sample
    into model input (``__call__``) and a list of those into a batch
    (``collate``). See :class:`matsciml.interfaces.Representation`."""

    kind: ClassVar[str] = "representation"


@dataclass(frozen=True)
class ModelSpec(ComponentSpec):
    """A backbone: its factory returns a ``torch.nn.Module`` (see :class:`matsciml.interfaces.Backbone`).

    Attributes:
        representation: name of the representation whose batches it consumes.
        representation_distribution: the pip distribution that provides that
            representation, named in the error when it is not installed.
        tied_params: hyper-parameters that must equal a hyper-parameter of the
            representation, as ``{model parameter: representation parameter}``,
            e.g. ``{"cutoff_radius": "cutoff_radius"}``: a smooth envelope
            that ends where the neighbour graph ends. The pipeline keeps each
            pair equal: setting either one sets both, and setting both to
            different values is an error naming the two keys.
    """

    kind: ClassVar[str] = "model"
    representation: str = ""
    representation_distribution: str | None = None
    tied_params: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.representation:
            raise ValueError(f"model {self.name!r} must name the representation it consumes")
        tied = _frozen_mapping(self.tied_params)
        object.__setattr__(self, "tied_params", tied)
        for model_param, representation_param in tied.items():
            if not isinstance(representation_param, str) or not representation_param:
                raise ValueError(f"model {self.name!r}: tied_params[{model_param!r}] must name a hyper-parameter "
                                 f"of representation {self.representation!r}, got {representation_param!r}")
        undeclared = sorted(set(tied) - set(self.defaults)) if self.defaults else []
        if undeclared:
            raise ValueError(f"model {self.name!r}: tied_params names {', '.join(undeclared)}, which are not in "
                             f"its defaults ({', '.join(self.defaults)}); declare a default for each")

    def _requirements(self) -> dict[str, Any]:
        return {
            "representation": self.representation,
            "representation_distribution": self.representation_distribution,
            "tied_params": dict(self.tied_params),
        }


@dataclass(frozen=True)
class TaskSpec(ComponentSpec):
    """A task: its factory returns a LightningModule that wraps a backbone.

    Attributes:
        required_targets: sample keys every sample must carry whatever the
            hyper-parameters (e.g. ``("energy", "forces")`` for S2EF).
        targets_param: the hyper-parameter that names further targets chosen
            by the user (property regression: ``"targets"``); every sample
            must carry those too. None when the task has none.
        complete_params: a callable taking the task's hyper-parameters
            (defaults merged with the user's values) and returning them with
            the values that follow from others filled in, e.g. one readout
            per regression target. It runs when a config is resolved, so
            ``--print-config`` shows what the task will do; it must be cheap
            (no torch), and raises :class:`~matsciml.errors.MatscimlError`
            naming the key for values that do not fit together.
    """

    kind: ClassVar[str] = "task"
    required_targets: tuple[str, ...] = ()
    targets_param: str | None = None
    complete_params: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.targets_param is not None and self.defaults and self.targets_param not in self.defaults:
            raise ValueError(f"task {self.name!r}: targets_param {self.targets_param!r} is not one of its "
                             f"hyper-parameters ({', '.join(self.defaults)}); declare a default for it")
        if self.complete_params is not None and not callable(self.complete_params):
            raise ValueError(f"task {self.name!r}: complete_params must be callable, got {self.complete_params!r}")

    def resolve_params(self, overrides: Mapping[str, Any] | None = None,
                       preset: str | None = None) -> dict[str, Any]:
        """Defaults updated with ``overrides`` (checked), completed by :attr:`complete_params`."""
        params = super().resolve_params(overrides, preset=preset)
        if self.complete_params is not None:
            params = dict(self.complete_params(params))
        return params

    def targets_for(self, params: Mapping[str, Any]) -> list[str]:
        """Sample keys every sample must carry for a task with hyper-parameters ``params``."""
        targets = list(self.required_targets)
        if self.targets_param is not None:
            chosen = params.get(self.targets_param)
            if isinstance(chosen, str):
                targets.append(chosen)
            elif chosen:
                targets += [str(target) for target in chosen]
        return list(dict.fromkeys(targets))

    def _requirements(self) -> dict[str, Any]:
        return {"required_targets": list(self.required_targets), "targets_param": self.targets_param}


SPEC_CLASSES: dict[str, type[ComponentSpec]] = {
    cls.kind: cls for cls in (DatasetSpec, RepresentationSpec, ModelSpec, TaskSpec)
}
KINDS: tuple[str, ...] = tuple(SPEC_CLASSES)


def _qualified_name(obj: Any) -> str:
    if isinstance(obj, functools.partial):
        arguments = [repr(a) for a in obj.args] + [f"{k}={v!r}" for k, v in obj.keywords.items()]
        return f"{_qualified_name(obj.func)}({', '.join(arguments)})"
    module = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or type(obj).__name__
    return f"{module}:{name}"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)
