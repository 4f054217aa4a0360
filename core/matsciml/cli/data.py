"""``matsciml data convert`` and ``matsciml data inspect``."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from matsciml.cli.output import print_json, print_table
from matsciml.errors import MatscimlError


def add_commands(commands: Any) -> None:
    data = commands.add_parser("data", help="import and inspect datasets")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    convert = actions.add_parser(
        "convert", help="convert structure files (any format ASE reads) into a matsciml dataset",
        description="Read structures with ASE frame by frame, validate each one, and write a matsciml LMDB "
                    "dataset. Every calculator result (energy, forces, stress, charges, magmoms, dipole...) "
                    "and every other info/arrays entry becomes a property. The metadata records each key's "
                    "role (target or model input) and arity (one value per atom or per structure): from "
                    "matsciml's field registry for known keys (charges: per-atom target; total_charge: "
                    "per-structure input), from --field, or else target, per atom when it has one row per "
                    "atom in every structure. A frame that cannot be parsed or breaks the schema is "
                    "reported with its file and index and left out; the other frames are kept.")
    convert.add_argument("inputs", nargs="+", metavar="INPUT", help="structure files (extxyz, VASP, CIF, ASE db, ...)")
    convert.add_argument("-o", "--output", required=True,
                         help="dataset file to write, e.g. data/lips.lmdb (never one of the inputs)")
    convert.add_argument("--name", help="dataset name recorded in the metadata (default: output file stem)")
    convert.add_argument("--description", default="", help="free text recorded in the metadata")
    convert.add_argument("--unit", action="append", default=[], metavar="KEY=UNIT",
                         help="unit of a property the schema does not know (repeatable), e.g. --unit band_gap=eV")
    convert.add_argument("--field", action="append", default=[], metavar="KEY=WORD[,WORD]",
                         help="declare a key the field registry does not know (repeatable): its role, target "
                              "(the default) or input (given to the model, never learnt), and/or its arity, "
                              "atom or structure (instead of reading it from the shapes), and/or, for a "
                              "per-structure value, extensive (a total over the atoms: regression sums) or "
                              "intensive (regression averages), e.g. --field solvent_charge=input "
                              "--field hirshfeld=target,atom --field gap=intensive")
    convert.add_argument("--group-by", metavar="KEY",
                         help="an atoms.info key every structure has (a system or trajectory id): recorded per "
                              "structure (not a target) and as the dataset's group key, so that train/val/test "
                              "splits keep each group in one part; 'file' groups the structures of each input "
                              "file (key source_file)")
    convert.add_argument("--index", default=":",
                         help="ASE index of the frames to read from each file, e.g. '10:20' or '::2' (default ':', all); "
                              "reports give each frame's index in its file")
    convert.add_argument("--format", dest="file_format", help="ASE format name when the extension does not tell it")
    convert.add_argument("--overwrite", action="store_true",
                         help="replace an existing dataset at the output path (an input file is never replaced)")
    convert.add_argument("--strict", action="store_true",
                         help="fail (exit 1, nothing written, an existing output kept) at the first frame "
                              "that is invalid or cannot be parsed")
    convert.add_argument("--quiet", action="store_true", help="no progress bar")
    convert.add_argument("--json", action="store_true", help="print the report as JSON")
    convert.set_defaults(handler=run_convert)

    inspect = actions.add_parser(
        "inspect", help="summarise a dataset: count, elements, atom counts, properties",
        description="Summarise a dataset from its metadata, and flag suspicious values without rejecting them "
                    "(exit 0): positive total energies, negative band gaps, force components above --max-force, "
                    "keys of unknown unit, from the recorded ranges and units; with --validate, also atoms "
                    "closer than --min-distance, and how many structures have each flag, with their indices.")
    inspect.add_argument("paths", nargs="+", metavar="PATH", help="dataset file(s) or directory, or a registered dataset name")
    inspect.add_argument("--validate", action="store_true",
                         help="also read every sample, verify its checksum and check it against the schema; "
                              "lists every bad sample with its file, index and reason (exit 1 if any). The same "
                              "pass checks each structure for the flags (counts, sample indices, short "
                              "distances), so the samples are read once")
    inspect.add_argument("--max-force", type=_positive_float, default=None, metavar="F",
                         help="flag force components above F eV/Å in magnitude (default 50)")
    inspect.add_argument("--min-distance", type=_positive_float, default=None, metavar="D",
                         help="with --validate: flag atoms, or an atom and a periodic image, closer than D Å "
                              "(default 0.5; the schema rejects below 0.1)")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=run_inspect)


def _parse_units(pairs: list[str]) -> dict[str, str]:
    units = {}
    for pair in pairs:
        key, sep, unit = pair.partition("=")
        if not sep or not key:
            raise MatscimlError(f"--unit {pair!r}: expected KEY=UNIT, e.g. --unit band_gap=eV")
        units[key] = unit
    return units


def _parse_fields(options: list[str]) -> dict[str, dict[str, str]]:
    """``--field KEY=WORD[,WORD]`` options as declarations; repeated keys combine (a contradiction fails)."""
    from matsciml.fields import check_declaration, parse_field_option

    declarations: dict[str, dict[str, str]] = {}
    for option in options:
        key, declaration = parse_field_option(option)
        combined = declarations.setdefault(key, {})
        for aspect, value in declaration.items():
            if combined.get(aspect, value) != value:
                what = {"extent": "of extensive or intensive"}.get(aspect, aspect)
                raise MatscimlError(f"--field {option!r}: {key} was declared {combined[aspect]} by an earlier "
                                    f"--field; give one {what}")
            combined[aspect] = value
    for key, declaration in declarations.items():
        check_declaration(key, declaration)
    return declarations


def run_convert(args: argparse.Namespace) -> int:
    from matsciml.data.ase_import import convert

    units = _parse_units(args.unit)
    fields = _parse_fields(args.field)
    report = convert(args.inputs, args.output, name=args.name, description=args.description, units=units,
                     index=args.index, file_format=args.file_format, overwrite=args.overwrite,
                     strict=args.strict, progress=not args.quiet and not args.json, fields=fields,
                     group_by=args.group_by)
    if args.json:
        print_json({"output": str(report.output), "written": report.written,
                    "num_rejected": report.num_rejected, "rejected": report.rejected})
        return 0
    print(f"wrote {report.written} structures to {report.output}"
          + (f"; left out {report.num_rejected} invalid structure(s) (unreadable or breaking the schema):"
             if report.num_rejected else ""))
    for rejected in report.rejected[:20]:  # one line each, naming file and frame
        print(f"  {rejected['reason']}")
    if report.num_rejected > 20:
        print(f"  ... and {report.num_rejected - 20} more (all recorded in the dataset's metadata)")
    return 0


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a usage error, exit 2, otherwise)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a positive number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is not a positive finite number; give a positive number")
    return value


def _open(paths: list[str]) -> Any:
    from pathlib import Path

    from matsciml.data.dataset import LMDBDataset

    if len(paths) == 1 and not Path(paths[0]).exists():
        from matsciml.registry import get_registry

        return get_registry().dataset(paths[0]).build()
    return LMDBDataset(paths)


def run_inspect(args: argparse.Namespace) -> int:
    from matsciml.data import plausibility
    from matsciml.data.inspect import summarize, validate_all

    if args.min_distance is not None and not args.validate:
        raise MatscimlError("--min-distance needs --validate: distances are checked in its pass over every sample "
                            "(the metadata records none)")
    max_force = plausibility.MAX_FORCE if args.max_force is None else args.max_force
    min_distance = plausibility.MIN_DISTANCE if args.min_distance is None else args.min_distance
    dataset = _open(args.paths)
    metadata = getattr(dataset, "metadata", None)
    if not metadata:
        raise MatscimlError(f"{' '.join(args.paths)}: this dataset carries no matsciml metadata, so there is "
                            f"nothing to summarise; it is read from {type(dataset).__name__}, not from LMDB files")
    summary = summarize(metadata, max_force=max_force)
    summary["files"] = [str(f.path) for f in getattr(dataset, "files", [])]
    invalid = None
    if args.validate:  # one pass: the schema, and the per-structure flags of every valid sample
        checks = plausibility.SampleChecks(max_force=max_force, min_distance=min_distance, metadata=metadata)
        invalid = list(validate_all(dataset, on_valid=checks.add))
        flags = plausibility.merge_flags(plausibility.flags_from_metadata(metadata, max_force=max_force),
                                         checks.flags())
        summary["flags"] = [flag.as_dict() for flag in flags]
    if args.json:
        if invalid is not None:
            summary["invalid"] = [bad._asdict() for bad in invalid]
        print_json(summary)
    else:
        _print_summary(summary, invalid)
    return 1 if invalid else 0  # flags warn; they never fail the command


def _print_summary(summary: dict[str, Any], invalid: list[Any] | None) -> None:
    print(f"dataset     {summary['name']}  ({', '.join(summary['files'])})")
    if summary["description"]:
        print(f"about       {summary['description']}")
    print(f"samples     {summary['count']}")
    print(f"atoms       {summary['atoms']} per structure (mean {summary['atoms_mean']:.1f})")
    elements = ", ".join(f"{symbol} ({count})" for symbol, count in summary["element_counts"].items())
    print(f"elements    {len(summary['element_counts'])}: {elements}")
    print(f"schema      version {summary['schema_version']}, created {summary['created']}")
    print("properties")
    rows = []
    for p in summary["properties"]:
        stats = [f"{p[k]:.4g}" for k in ("mean", "std", "min", "max")] if "mean" in p else ["", "", "", ""]
        arity = p["arity"] + ("*" if p["arity_from"] == "shapes" else "")
        rows.append([p["key"], p["role"], arity, p["shape"], p["dtype"], p["unit"] if p["unit"] is not None else "?",
                     p["present_in"], *stats])
    print_table(["KEY", "ROLE", "PER", "SHAPE", "DTYPE", "UNIT", "IN", "MEAN", "STD", "MIN", "MAX"], rows, indent=2)
    if any(p["unit"] is None for p in summary["properties"]):
        print("  (? = unit unknown; see flags)")
    if any(p["arity_from"] == "shapes" for p in summary["properties"]):
        print("  (* = per atom or per structure read from the shapes at conversion; declare it with "
              "--field KEY=atom or --field KEY=structure)")
    if summary["num_rejected"]:
        print(f"rejected at conversion: {summary['num_rejected']}")
        for rejected in summary["rejected"][:5]:
            print(f"  {rejected['reason']}")
    if invalid is not None:
        if invalid:
            print(f"INVALID samples: {len(invalid)}", file=sys.stderr)
            for bad in invalid:  # every one: this list is what to repair or drop
                print(f"  {bad.reason}", file=sys.stderr)
        else:
            print(f"validated   all {summary['count']} samples: checksums intact, schema version "
                  f"{summary['schema_version']} followed")
    _print_flags(summary["flags"], counted=invalid is not None)


def _print_flags(flags: list[dict[str, Any]], counted: bool) -> None:
    """The ``flags`` section: one line per flag, key then message."""
    if not flags:
        print("flags       none" + (" (every structure checked)" if counted else
                                     " (from the recorded ranges and units; --validate checks every structure)"))
        return
    source = "every structure checked" if counted else ("from the recorded ranges and units; --validate counts "
                                                        "structures and checks distances")
    print(f"flags       {len(flags)} warning(s), not errors ({source})")
    width = max(len(flag["key"]) for flag in flags)
    for flag in flags:
        print(f"  {flag['key']:<{width}}  {flag['message']}")
