"""The ``matsciml`` command line.

Exit codes: 0 success, 2 usage error (argparse), 1 failure, printed as one
line ``matsciml: error: CAUSE`` on stderr (``--debug`` shows the traceback).
Every listing command takes ``--json`` for scripts.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from matsciml import __version__
from matsciml.errors import MatscimlError


def build_parser() -> argparse.ArgumentParser:
    from matsciml.cli import data, lookup, train

    parser = argparse.ArgumentParser(
        prog="matsciml",
        description="Deep learning on materials-science data: plugins, datasets, training.",
    )
    parser.add_argument("--version", action="version", version=f"matsciml {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    lookup.add_commands(commands)
    data.add_commands(commands)
    train.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (MatscimlError, FileNotFoundError, FileExistsError, IsADirectoryError) as exc:
        if args.debug:
            raise
        print(f"matsciml: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("matsciml: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
