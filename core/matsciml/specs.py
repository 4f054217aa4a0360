"""Spec objects: how a plugin describes a component to the registry.

A spec is a small frozen dataclass: a name, a one-line summary, the factory
that builds the component, its default hyper-parameters (with one help line
each), and what it needs. The factory may be given as ``"module:attribute"``
so that listing components never imports a heavy dependency (DGL, a model);
it is imported only when the component is built.

These classes are part of the public contract (see :mod:`matsciml.hookspecs`).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from matsciml.errors import MatscimlError



def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


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
    """

    kind: ClassVar[str] = "component"

    name: str
    summary: str
    factory: Any
    defaults: Mapping[str, Any] = field(default_factory=dict)
    param_help: Mapping[str, str] = field(default_factory=dict)
    distribution: str | None = None

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

    def load_factory(self) -> Callable[..., Any]:
        """Return the factory, importing it if it was given as a string."""
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

    def resolve_params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``overrides``; unknown names are an error.

        A spec with no declared defaults accepts any keyword.
        """
        overrides = dict(overrides or {})
        if self.defaults:
            unknown = sorted(set(overrides) - set(self.defaults))
            if unknown:
                raise MatscimlError(
                    f"{self.kind} {self.name!r} has no hyper-parameter(s) {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(self.defaults))}"
                )
        return {**self.defaults, **overrides}

    def build(self, *args: Any, **overrides: Any) -> Any:
        """Build the component with its defaults updated by ``overrides``.

        Positional ``args`` go to the factory as they are (a task's backbone).
        """
        return self.load_factory()(*args, **self.resolve_params(overrides))

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
                {"name": key, "default": _jsonable(value), "help": self.param_help.get(key, "")}
                for key, value in self.defaults.items()
            ],
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
    """A backbone: its factory returns a ``torch.nn.Module``.

    Attributes:
        representation: name of the representation whose batches it consumes.
        representation_distribution: the pip distribution that provides that
            representation, named in the error when it is not installed.
    """

    kind: ClassVar[str] = "model"
    representation: str = ""
    representation_distribution: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.representation:
            raise ValueError(f"model {self.name!r} must name the representation it consumes")

    def _requirements(self) -> dict[str, Any]:
        return {
            "representation": self.representation,
            "representation_distribution": self.representation_distribution,
        }


@dataclass(frozen=True)
class TaskSpec(ComponentSpec):
    """A task: its factory returns a LightningModule that wraps a backbone.

    Attributes:
        required_targets: sample keys every training sample must carry
            (e.g. ``("energy", "forces")`` for S2EF). Tasks whose targets are
            chosen by the user (property regression) leave this empty and
            check their configured targets themselves.
    """

    kind: ClassVar[str] = "task"
    required_targets: tuple[str, ...] = ()

    def _requirements(self) -> dict[str, Any]:
        return {"required_targets": list(self.required_targets)}


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
