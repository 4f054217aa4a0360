"""``matsciml plot``: learning curves of one or several runs, to a PNG."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from matsciml.cli.output import print_json


def add_commands(commands: Any) -> None:
    plot = commands.add_parser(
        "plot", help="draw learning curves (train and val loss and metrics) of runs to a PNG",
        description="Read RUN_DIR/logs/metrics.csv of each run and draw every metric against epoch or step, "
                    "one panel per metric, runs side by side (one colour each). Needs matplotlib "
                    "(pip install 'matsciml[plot]').")
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by `matsciml train`")
    plot.add_argument("-o", "--output", metavar="FILE.png",
                      help="where to write the PNG (default: RUN_DIR/learning_curves.png for one run, "
                           "learning_curves.png here for several)")
    plot.add_argument("--x", default="epoch", choices=["epoch", "step"], help="the horizontal axis (default epoch)")
    plot.add_argument("--metrics", metavar="A,B", help="only these metrics (comma-separated; default all)")
    plot.add_argument("--json", action="store_true", help="print the written path as JSON")
    plot.set_defaults(handler=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from matsciml.training.curves import plot_learning_curves

    output = Path(args.output) if args.output else (
        Path(args.runs[0]) / "learning_curves.png" if len(args.runs) == 1 else Path("learning_curves.png"))
    metrics = [name.strip() for name in args.metrics.split(",") if name.strip()] if args.metrics else None
    written = plot_learning_curves(args.runs, output, x=args.x, metrics=metrics)
    if args.json:
        print_json({"output": str(written)})
    else:
        print(f"learning curves of {len(args.runs)} run(s) written to {written}")
    return 0
