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
                              "atom or structure (instead of reading it from the shapes), e.g. "
                              "--field solvent_charge=input --field hirshfeld=target,atom")
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

    inspect = actions.add_parser("inspect", help="summarise a dataset: count, elements, atom counts, properties")
    inspect.add_argument("paths", nargs="+", metavar="PATH", help="dataset file(s) or directory, or a registered dataset name")
    inspect.add_argument("--validate", action="store_true",
                         help="also read every sample, verify its checksum and check it against the schema; "
                              "lists every bad sample with its file, index and reason (exit 1 if any)")
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
                raise MatscimlError(f"--field {option!r}: {key} was declared {combined[aspect]} by an earlier "
                                    f"--field; give one {aspect}")
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
                     strict=args.strict, progress=not args.quiet and not args.json, fields=fields)
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


def _open(paths: list[str]) -> Any:
    from pathlib import Path

    from matsciml.data.dataset import LMDBDataset

    if len(paths) == 1 and not Path(paths[0]).exists():
        from matsciml.registry import get_registry

        return get_registry().dataset(paths[0]).build()
    return LMDBDataset(paths)


def run_inspect(args: argparse.Namespace) -> int:
    from matsciml.data.inspect import summarize, validate_all

    dataset = _open(args.paths)
    metadata = getattr(dataset, "metadata", None)
    if not metadata:
        raise MatscimlError(f"{' '.join(args.paths)}: this dataset carries no matsciml metadata, so there is "
                            f"nothing to summarise; it is read from {type(dataset).__name__}, not from LMDB files")
    summary = summarize(metadata)
    summary["files"] = [str(f.path) for f in getattr(dataset, "files", [])]
    invalid = list(validate_all(dataset)) if args.validate else None
    if args.json:
        if invalid is not None:
            summary["invalid"] = [bad._asdict() for bad in invalid]
        print_json(summary)
    else:
        _print_summary(summary, invalid)
    return 1 if invalid else 0


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
        print("  (? = unit unknown; give it at conversion with --unit KEY=UNIT)")
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
