"""``matsciml plugins | models | datasets | representations | tasks | info``."""
from __future__ import annotations

import argparse
from typing import Any

from matsciml.cli.output import print_json, print_table
from matsciml.errors import MatscimlError
from matsciml.registry import Registry, get_registry, normalize_name
from matsciml.specs import KINDS, ComponentSpec, ModelSpec, as_yaml

_PLURAL = {"model": "models", "dataset": "datasets", "representation": "representations", "task": "tasks"}


def add_commands(commands: Any) -> None:
    plugins = commands.add_parser("plugins", help="installed plugin distributions, what they provide, load errors")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(handler=run_plugins)

    for kind, plural in _PLURAL.items():
        listing = commands.add_parser(plural, help=f"installed {plural}")
        listing.add_argument("--json", action="store_true", help="print JSON")
        listing.set_defaults(handler=run_listing, kind=kind)

    info = commands.add_parser("info", help="details of one component: summary, provider, hyper-parameters, needs")
    info.add_argument("name", help="component name (case-insensitive)")
    info.add_argument("--kind", choices=KINDS, help="only look among components of this kind")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(handler=run_info)


def run_plugins(args: argparse.Namespace) -> int:
    registry = get_registry()
    records = registry.plugins()
    conflicts = {kind: sorted(registry.conflicts(kind)) for kind in KINDS}
    conflicts = {kind: names for kind, names in conflicts.items() if names}
    if args.json:
        print_json({"plugins": [record.as_dict() for record in records], "conflicts": conflicts})
        return 0
    rows = []
    for record in records:
        provides = "; ".join(f"{_PLURAL[kind]}: {', '.join(names)}" for kind, names in record.provides.items())
        status = "ok" if record.ok else f"ERROR {record.error}"
        rows.append([record.distribution, record.version, record.entry_point, status if not record.ok else "ok",
                     provides or ("-" if record.ok else "")])
    print_table(["DISTRIBUTION", "VERSION", "ENTRY POINT", "STATUS", "PROVIDES"], rows,
                empty="no plugins installed (not even matsciml's built-ins: reinstall matsciml)")
    for kind, names in conflicts.items():
        for name in names:
            owners = ", ".join(spec.distribution or "?" for spec in registry.conflicts(kind)[name])
            print(f"conflict: {kind} {name!r} is provided by {owners}; requests for it fail until one is uninstalled")
    return 0


def run_listing(args: argparse.Namespace) -> int:
    registry = get_registry()
    specs = registry.list(args.kind)
    conflicting = set(registry.conflicts(args.kind))
    if args.json:
        print_json([{**spec.describe(), "conflict": normalize_name(spec.name) in conflicting,
                     "unavailable": unavailable_reason(spec, registry)} for spec in specs])
        return 0
    headers, extra = _listing_columns(args.kind)
    rows = []
    unavailable = []
    for spec in specs:
        name = spec.name + (" (conflict)" if normalize_name(spec.name) in conflicting else "")
        reason = unavailable_reason(spec, registry)
        if reason:
            unavailable.append(f"{spec.name}: {reason}")
        rows.append([name, *extra(spec), "unavailable" if reason else "ok", spec.distribution, spec.summary])
    print_table(["NAME", *headers, "STATUS", "PROVIDED BY", "SUMMARY"], rows,
                empty=f"no {_PLURAL[args.kind]} installed; `matsciml plugins` shows what is installed")
    if unavailable:
        print("\nunavailable here:")
        for line in unavailable:
            print(f"  {line}")
    broken = registry.broken_plugins()
    if broken:
        print(f"\n{len(broken)} plugin(s) failed to load; `matsciml plugins` shows why")
    return 0


def unavailable_reason(spec: ComponentSpec, registry: Registry) -> str | None:
    """Why ``spec`` cannot be used in this environment, or None.

    A component is unavailable when a module it requires does not import
    (:meth:`ComponentSpec.unavailable_reason`); a model also when the
    representation it consumes is not installed or is itself unavailable.
    """
    reason = spec.unavailable_reason()
    if reason or not isinstance(spec, ModelSpec):
        return reason
    matches = [r for r in registry.list("representation")
               if normalize_name(r.name) == normalize_name(spec.representation)]
    if not matches:
        hint = f": pip install {spec.representation_distribution}" if spec.representation_distribution else ""
        return f"its representation {spec.representation!r} is not installed{hint}"
    inner = matches[0].unavailable_reason()
    if inner:
        return f"its representation {spec.representation!r} (from {matches[0].distribution}) {inner}"
    return None


def _listing_columns(kind: str) -> tuple[list[str], Any]:
    if kind == "model":
        return ["REPRESENTATION"], lambda spec: [spec.representation]
    if kind == "dataset":
        return ["TARGETS"], lambda spec: [", ".join(spec.targets) or "-"]
    if kind == "task":
        return ["NEEDS"], lambda spec: [", ".join(spec.required_targets) or "-"]
    return [], lambda spec: []


def run_info(args: argparse.Namespace) -> int:
    registry = get_registry()
    kinds = [args.kind] if args.kind else list(KINDS)
    found = [spec for spec in registry.find(args.name) if spec.kind in kinds]
    if not found:
        raise registry.lookup_error(args.name, args.kind)
    descriptions = [_describe(spec, registry) for spec in found]
    if args.json:
        print_json(descriptions if len(descriptions) > 1 else descriptions[0])
        return 0
    for number, description in enumerate(descriptions):
        if number:
            print()
        _print_description(description)
    return 0


def _describe(spec: ComponentSpec, registry: Registry) -> dict[str, Any]:
    description = spec.describe()
    description["distribution_version"] = next(
        (r.version for r in registry.plugins() if r.distribution == spec.distribution), None)
    if len([s for s in registry.list(spec.kind) if normalize_name(s.name) == normalize_name(spec.name)]) > 1:
        description["conflict"] = True
    description["unavailable"] = unavailable_reason(spec, registry)
    if isinstance(spec, ModelSpec):
        description["representation_installed"] = any(
            normalize_name(r.name) == normalize_name(spec.representation) for r in registry.list("representation"))
        description["parameter_count"], description["build_error"] = _parameter_count(spec)
        description["preset_parameter_counts"] = {
            name: _parameter_count(spec, name)[0] for name in spec.presets} if description["parameter_count"] else {}
    if spec.kind == "dataset":
        description["contents"], description["build_error"] = _dataset_contents(spec)
    return description


def _parameter_count(spec: ComponentSpec, preset: str | None = None) -> tuple[int | None, str | None]:
    try:
        model = spec.build(preset=preset)
        return sum(p.numel() for p in model.parameters()), None
    except Exception as exc:  # noqa: BLE001 - info should still show the rest
        return None, _cause(exc)


def _dataset_contents(spec: ComponentSpec) -> tuple[dict[str, Any] | None, str | None]:
    try:
        dataset = spec.build()
    except Exception as exc:  # noqa: BLE001
        return None, _cause(exc)
    metadata = getattr(dataset, "metadata", None)
    if not metadata:
        return {"num_samples": len(dataset)}, None
    from matsciml.data.inspect import summarize

    return summarize(metadata), None


def _cause(exc: Exception) -> str:
    """Why a component cannot be built here: matsciml's own message, or the error's type and text."""
    return str(exc) if isinstance(exc, MatscimlError) else f"{type(exc).__name__}: {exc}"


def _print_description(d: dict[str, Any]) -> None:
    version = f" {d['distribution_version']}" if d.get("distribution_version") else ""
    print(f"{d['kind']} {d['name']}  (from {d['distribution']}{version})")
    print(f"  {d['summary']}")
    if d.get("conflict"):
        print("  CONFLICT: another distribution provides the same name; requests for it fail")
    print(f"  factory: {d['factory']}")
    if d.get("unavailable"):
        print(f"  UNAVAILABLE here: {d['unavailable']}")
    if d["kind"] == "model":
        hint = d.get("representation_distribution")
        state = "installed" if d["representation_installed"] else (
            "NOT installed" + (f": pip install {hint}" if hint else ""))
        print(f"  needs representation: {d['representation']} ({state})")
        if d.get("parameter_count") is not None:
            print(f"  parameters: {d['parameter_count']:,} (with default hyper-parameters)")
        elif d.get("build_error"):
            print(f"  parameters: unknown (cannot build it here: {d['build_error']})")
    for name, values in (d.get("presets") or {}).items():
        count = (d.get("preset_parameter_counts") or {}).get(name)
        size = f", {count:,} parameters" if count is not None else ""
        settings = " ".join(f"{key}={as_yaml(value)}" for key, value in values.items())
        print(f"  preset {name} ({d['kind']}.preset={name}{size}): {settings}")
    if d["kind"] == "task":
        print(f"  needs targets: {', '.join(d['required_targets']) or 'chosen by the user'}")
    if d["kind"] == "dataset":
        print(f"  targets: {', '.join(d['targets']) or '-'}")
        contents = d.get("contents")
        if contents and "count" in contents:
            print(f"  samples: {contents['count']}, atoms per structure {contents['atoms']}, "
                  f"elements {contents['elements']}")
        elif contents:
            print(f"  samples: {contents['num_samples']}")
        elif d.get("build_error"):
            print(f"  cannot open it here: {d['build_error']}")
    if d["hyperparameters"]:
        print("  hyper-parameters:")
        print_table(["NAME", "DEFAULT", "ALLOWED", "MEANING"],
                    [[p["name"], repr(p["default"]), _allowed(p), p["help"]] for p in d["hyperparameters"]],
                    indent=4)
    else:
        print("  hyper-parameters: none")


def _allowed(parameter: dict[str, Any]) -> str:
    """The declared range or choices of a hyper-parameter, as the spec wrote them (``>=1``, ``silu|relu``)."""
    if parameter.get("choices"):
        return "|".join(str(choice) for choice in parameter["choices"])
    return parameter.get("range") or ""
