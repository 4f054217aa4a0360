"""Discovery of installed components, with failures kept apart.

The registry is the only place that knows how plugins are found. On first
use it loads every entry point of the group ``matsciml`` from every installed
distribution, registers each module with a pluggy ``PluginManager`` and asks
each plugin, one by one, for the specs it provides.

Why not ``PluginManager.load_setuptools_entrypoints`` alone: it stops at the
first entry point whose import raises, and it silently skips a second
distribution that reuses an entry-point name. DESIGN.md rule 5 asks the
opposite (a broken plugin never breaks the others, a clash is reported), so
the registry walks the entry points itself, catches and records each
failure, and calls each plugin's hooks separately; pluggy still owns the
hook specifications and the validation of every implementation.
"""
from __future__ import annotations

import difflib
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import importlib_metadata
import pluggy

from matsciml import hookspecs
from matsciml.errors import ComponentConflictError, ComponentNotFoundError, PluginLoadError
from matsciml.specs import KINDS, SPEC_CLASSES, ComponentSpec


def normalize_name(name: str) -> str:
    """Names match case-insensitively, and '-' and '_' are the same letter."""
    return name.strip().casefold().replace("_", "-")


@dataclass
class PluginRecord:
    """One entry point of group ``matsciml`` and what came of loading it."""

    distribution: str
    version: str
    entry_point: str
    module: str
    error: str | None = None
    error_traceback: str | None = None
    provides: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "module": self.module,
            "status": "ok" if self.ok else "error",
            "error": self.error,
            "provides": self.provides,
        }


class Registry:
    """Every component of every installed plugin, by kind and name.

    Args:
        group: the entry-point group to load (``matsciml``).
    """

    def __init__(self, group: str = hookspecs.PROJECT_NAME) -> None:
        self.group = group
        self._loaded = False
        self._plugins: list[PluginRecord] = []
        self._specs: dict[str, list[ComponentSpec]] = {kind: [] for kind in KINDS}
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)

    # ----------------------------------------------------------------- loading
    def load(self) -> "Registry":
        """Load all plugins now (otherwise done at first use)."""
        if self._loaded:
            return self
        self._loaded = True
        for distribution, entry_point in self._entry_points():
            self._load_plugin(distribution, entry_point)
        for specs in self._specs.values():
            specs.sort(key=lambda spec: (normalize_name(spec.name), spec.distribution or ""))
        return self

    def _entry_points(self) -> Iterable[tuple[Any, Any]]:
        seen: set[tuple[str, str, str]] = set()
        for distribution in importlib_metadata.distributions():
            dist_name = distribution.metadata["Name"] or "?"
            for entry_point in distribution.entry_points:
                if entry_point.group != self.group:
                    continue
                key = (normalize_name(dist_name), entry_point.name, entry_point.value)
                if key in seen:  # the same distribution seen twice on sys.path
                    continue
                seen.add(key)
                yield distribution, entry_point

    def _load_plugin(self, distribution: Any, entry_point: Any) -> None:
        record = PluginRecord(
            distribution=distribution.metadata["Name"] or "?",
            version=distribution.version or "?",
            entry_point=entry_point.name,
            module=entry_point.value,
        )
        self._plugins.append(record)
        plugin_name = f"{record.distribution}:{entry_point.name}"
        try:
            module = entry_point.load()
            self.plugin_manager.register(module, name=plugin_name)
            try:
                self.plugin_manager.check_pending()
            except pluggy.PluginValidationError:
                self.plugin_manager.unregister(name=plugin_name)
                raise
            collected = self._collect_specs(plugin_name, record.distribution)
        except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            record.error = f"{type(exc).__name__}: {exc}"
            record.error_traceback = traceback.format_exc()
            return
        for spec in collected:
            self._specs[spec.kind].append(spec)
            record.provides.setdefault(spec.kind, []).append(spec.name)

    def _collect_specs(self, plugin_name: str, distribution: str) -> list[ComponentSpec]:
        """Call each hook of one plugin; all or nothing, so a half-loaded plugin never shows."""
        plugin = self.plugin_manager.get_plugin(plugin_name)
        collected: list[ComponentSpec] = []
        for kind, hook_name in hookspecs.HOOK_FOR_KIND.items():
            implementation = getattr(plugin, hook_name, None)
            if implementation is None:
                continue
            expected = SPEC_CLASSES[kind]
            for spec in _as_list(implementation(), hook_name, expected):
                if not isinstance(spec, expected):
                    raise TypeError(
                        f"hook {hook_name} returned {type(spec).__name__} ({spec!r:.80}); "
                        f"it must return {expected.__name__} objects"
                    )
                collected.append(spec.with_distribution(distribution))
        return collected

    # ----------------------------------------------------------------- queries
    def plugins(self) -> list[PluginRecord]:
        """Every entry point found, in load order, with its status."""
        self.load()
        return list(self._plugins)

    def broken_plugins(self) -> list[PluginRecord]:
        return [record for record in self.plugins() if not record.ok]

    def list(self, kind: str) -> list[ComponentSpec]:
        """All specs of one kind, sorted by name; a name given twice is listed twice."""
        self._check_kind(kind)
        self.load()
        return list(self._specs[kind])

    def names(self, kind: str) -> list[str]:
        return sorted({spec.name for spec in self.list(kind)}, key=normalize_name)

    def conflicts(self, kind: str) -> dict[str, list[ComponentSpec]]:
        """Names provided more than once, with every spec that claims them."""
        by_name: dict[str, list[ComponentSpec]] = {}
        for spec in self.list(kind):
            by_name.setdefault(normalize_name(spec.name), []).append(spec)
        return {name: specs for name, specs in by_name.items() if len(specs) > 1}

    def get(self, kind: str, name: str) -> ComponentSpec:
        """The spec of kind ``kind`` called ``name``.

        Raises:
            ComponentConflictError: two distributions provide that name.
            PluginLoadError: not found, and a plugin that failed to load
                looks like its provider (its entry point or distribution is
                named after it).
            ComponentNotFoundError: not found; the message suggests close names.
        """
        self._check_kind(kind)
        wanted = normalize_name(name)
        matches = [spec for spec in self.list(kind) if normalize_name(spec.name) == wanted]
        if len(matches) == 1:
            return matches[0]
        if matches:
            providers = ", ".join(f"{spec.distribution}" for spec in matches)
            raise ComponentConflictError(
                f"{kind} {name!r} is provided by more than one installed distribution "
                f"({providers}); uninstall all but one of them "
                f"(pip uninstall {matches[-1].distribution})"
            )
        raise self.lookup_error(name, kind)

    def find(self, name: str) -> list[ComponentSpec]:
        """Specs of any kind with that name (``matsciml info NAME``)."""
        wanted = normalize_name(name)
        return [spec for kind in KINDS for spec in self.list(kind) if normalize_name(spec.name) == wanted]

    def model(self, name: str) -> ComponentSpec:
        return self.get("model", name)

    def dataset(self, name: str) -> ComponentSpec:
        return self.get("dataset", name)

    def representation(self, name: str) -> ComponentSpec:
        return self.get("representation", name)

    def task(self, name: str) -> ComponentSpec:
        return self.get("task", name)

    # ----------------------------------------------------------------- errors
    def lookup_error(self, name: str, kind: str | None = None) -> Exception:
        """The error for a name that matched nothing (of ``kind``, or of any kind).

        A :class:`PluginLoadError` when a plugin that failed to load looks like
        its provider (its entry point or distribution is named after it), else
        a :class:`ComponentNotFoundError` with close names suggested.
        """
        what = kind or "component"
        wanted = normalize_name(name)
        for record in self.broken_plugins():
            if wanted in _plugin_aliases(record):
                return PluginLoadError(
                    f"{what} {name!r} comes from plugin {record.entry_point!r} of distribution "
                    f"{record.distribution} {record.version}, which failed to load: {record.error}. "
                    f"Fix or reinstall it (pip install --force-reinstall {record.distribution}); "
                    f"`matsciml plugins` shows the error"
                )
        known = self.names(kind) if kind else sorted({n for k in KINDS for n in self.names(k)}, key=normalize_name)
        message = f"no {what} named {name!r} is installed"
        suggestions = difflib.get_close_matches(wanted, [normalize_name(n) for n in known], n=3, cutoff=0.5)
        if suggestions:
            spelled = [n for n in known if normalize_name(n) in suggestions]
            message += f"; did you mean {' or '.join(repr(s) for s in spelled)}?"
        elif known:
            message += f"; installed {what}s: {', '.join(known)}"
        else:
            message += f"; no {what}s are installed at all"
        broken = self.broken_plugins()
        if broken:
            message += (
                f" (note: {len(broken)} plugin(s) failed to load and may provide it: "
                + ", ".join(f"{r.distribution} ({r.error})" for r in broken)
                + ")"
            )
        return ComponentNotFoundError(message)

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")


def _as_list(result: Any, hook_name: str, expected: type) -> list[Any]:
    """A hook's result as a list, or a ``TypeError`` that says what came back instead.

    ``None`` is refused too: a hook that returns nothing has almost always
    lost its ``return``, and a plugin that silently provides nothing is
    harder to diagnose than one listed with this error.
    """
    if isinstance(result, expected):
        raise TypeError(f"hook {hook_name} returned one {expected.__name__}, not a list of them; "
                        f"return [spec]")
    if result is None or isinstance(result, (str, bytes, dict)) or not isinstance(result, Iterable):
        raise TypeError(f"hook {hook_name} returned {type(result).__name__} ({result!r:.80}); "
                        f"it must return a list of {expected.__name__} objects")
    return list(result)


def _plugin_aliases(record: PluginRecord) -> set[str]:
    """Names a user might type for what a broken plugin provides."""
    names = {normalize_name(record.entry_point), normalize_name(record.distribution)}
    for prefix in ("matsciml-",):
        names |= {n[len(prefix):] for n in names if n.startswith(prefix)}
    return names


_default_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _default_registry
    if _default_registry is None:
        _default_registry = Registry()
    return _default_registry.load()


def reset_registry() -> None:
    """Forget the process-wide registry (after installing a plugin at run time)."""
    global _default_registry
    _default_registry = None
