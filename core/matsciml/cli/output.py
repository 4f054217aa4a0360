"""Printing for people (aligned tables) and for scripts (JSON)."""
from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from typing import Any


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned to their widest cell; the last column is cut to the terminal width."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    terminal = shutil.get_terminal_size((120, 24)).columns
    used = sum(widths[:-1]) + 2 * (len(widths) - 1)
    last_width = max(terminal - used, 30)
    lines = []
    for row in cells:
        last = row[-1] if len(row[-1]) <= last_width else row[-1][: last_width - 1] + "…"
        parts = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1])] + [last]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "(none)") -> None:
    if not rows:
        print(empty)
        return
    print(format_table(headers, rows))
