"""Printing for people (aligned tables) and for scripts (JSON)."""
from __future__ import annotations

import json
import shutil
import sys
import textwrap
from collections.abc import Sequence
from typing import Any


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


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
    if not rows:
        print(" " * indent + empty)
        return
    print(format_table(headers, rows, indent))
