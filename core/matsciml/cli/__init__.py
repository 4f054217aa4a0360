"""The ``matsciml`` command line.

Exit codes: 0 success, 2 usage error (argparse), 1 failure, printed as one
line ``matsciml: error: CAUSE`` on stderr that names the input, the problem
and the fix (``--debug`` shows the traceback instead). A bug is one line
too, marked ``unexpected``, so that no failure ends in a traceback.
Every command that prints something takes ``--json`` for scripts; with it,
standard output holds only the JSON document and everything else (progress
bars, logs) goes to standard error.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from matsciml import __version__
from matsciml.errors import MatscimlError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (each module adds its own)."""
    from matsciml.cli import data, lookup, plot, train

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
    plot.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (argparse exits with 2 on usage errors)."""
    from matsciml.cli.output import json_stdout

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse takes one run of positionals: KEY=VALUE overrides written after a later option
        # (`train --model gala trainer.max_epochs=5 --task s2ef model.preset=small`) come back unparsed
        if hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with json_stdout(bool(getattr(args, "json", False))):
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("matsciml: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (`matsciml models | head`): not a failure to report
        _silence_stdout()
        return 141
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line, bugs included
        if args.debug:
            raise
        print(f"matsciml: error: {error_line(exc)}", file=sys.stderr)
        return 1


def error_line(exc: BaseException) -> str:
    """The one-line cause printed for a failure: input, problem and fix."""
    if isinstance(exc, MatscimlError):
        message = _one_line(str(exc)) or type(exc).__name__
    elif isinstance(exc, OSError):
        message = _os_error(exc)
    elif any(cls.__name__ == "MisconfigurationException" for cls in type(exc).__mro__):
        message = (f"PyTorch Lightning refused the trainer settings: {_one_line(str(exc))}; "
                   f"fix the trainer section of the config")
    else:
        message = (f"unexpected {type(exc).__name__}: {_one_line(str(exc))}; "
                   f"rerun with --debug for the traceback and report it")
    return message


_OS_FIXES = {
    errno.ENOENT: "check the path",
    errno.EISDIR: "give a file, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory; check the path",
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.ENOSPC: "free some disk space or write somewhere else",
    errno.EDQUOT: "free some space in your quota or write somewhere else",
    errno.EEXIST: "remove it or choose another name",
    errno.ENAMETOOLONG: "choose a shorter name",
}


def _os_error(exc: OSError) -> str:
    """An operating-system failure, naming the file it concerns."""
    reason = exc.strerror or _one_line(str(exc)) or type(exc).__name__
    fix = _OS_FIXES.get(exc.errno or -1, "check the path and the disk, then try again")
    if exc.filename is not None:
        where = os.fsdecode(exc.filename)
        if exc.filename2 is not None:
            where += f" -> {os.fsdecode(exc.filename2)}"
        return _one_line(f"{where}: {reason}; {fix}")
    return _one_line(f"{type(exc).__name__}: {reason} (no file named by the system); {fix}")


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
