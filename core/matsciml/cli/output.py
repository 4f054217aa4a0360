"""Printing for people (aligned tables) and for scripts (JSON).

With ``--json`` standard output carries the JSON document and nothing else,
so ``matsciml train --json | jq`` works: :func:`json_stdout` sends whatever
else is written to ``sys.stdout`` (Lightning's progress bar, prints of a
plugin) to standard error while a command runs, and :func:`print_json`
writes the document to the real standard output.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import IO, Any

_document: IO[str] | None = None  # the real stdout while json_stdout() is active


@contextlib.contextmanager
def json_stdout(active: bool = True) -> Iterator[None]:
    """While active, ``sys.stdout`` is standard error and :func:`print_json` writes to the real stdout."""
    global _document
    if not active:
        yield
        return
    real, previous = sys.stdout, _document
    _document = real
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = real
        _document = previous


def print_json(value: Any) -> None:
    """Write ``value`` as an indented JSON document to standard output (the real one under ``--json``).

    Non-finite numbers (a diverged metric) are written as ``null``: ``NaN``
    is not JSON, and ``jq`` refuses it.
    """
    stream = _document or sys.stdout
    json.dump(_strict(value), stream, indent=2, default=str, ensure_ascii=False, allow_nan=False)
    stream.write("\n")
    stream.flush()


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    return value


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: int = 0) -> str:
    """Columns aligned to their widest cell, the whole table shifted right by
    ``indent`` spaces; the last column wraps at the terminal width."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    terminal = shutil.get_terminal_size((120, 24)).columns
    margin = " " * indent
    last_column = indent + sum(widths[:-1]) + 2 * (len(widths) - 1)
    last_width = max(terminal - last_column - 1, 30)
    lines = []
    for row in cells:
        pieces = textwrap.wrap(row[-1], last_width, break_on_hyphens=False) or [""]
        parts = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1])] + [pieces[0]]
        lines.append(margin + "  ".join(parts).rstrip())
        lines.extend(" " * last_column + piece for piece in pieces[1:])
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "(none)",
                indent: int = 0) -> None:
    """Print :func:`format_table`, or ``empty`` when there are no rows."""
    if not rows:
        print(" " * indent + empty)
        return
    print(format_table(headers, rows, indent))
