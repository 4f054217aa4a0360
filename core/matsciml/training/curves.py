"""Learning curves of finished runs, drawn to PNG (``matsciml plot``).

Why here: every run directory holds the CSV log Lightning's ``CSVLogger``
wrote (``logs/metrics.csv``: one row per logging event, columns ``epoch``,
``step`` and ``train/NAME`` / ``val/NAME``); reading it back and drawing each
metric against epoch or step is the same for every model and task.
matplotlib is an optional dependency (``pip install 'matsciml[plot]'``),
imported only when a plot is drawn, with the non-interactive Agg backend so
that it works on a cluster node without a display.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matsciml.errors import MatscimlError

X_AXES = ("epoch", "step")


@dataclass
class RunLog:
    """The logged curves of one run: ``curves[metric][part]`` is a list of ``(epoch, step, value)``."""

    run_dir: Path
    curves: dict[str, dict[str, list[tuple[int, int, float]]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def metrics(self) -> list[str]:
        """Metric names in the order of the log's columns, ``loss`` first."""
        return [name for name in self.curves if name == "loss"] + [name for name in self.curves if name != "loss"]


def read_run_log(run_dir: str | Path) -> RunLog:
    """The curves of ``run_dir/logs/metrics.csv``.

    Raises:
        MatscimlError: the directory or its log is missing, or the log has
            no ``epoch``/``step`` columns or no metric, naming the path.
    """
    run_dir = Path(run_dir)
    path = run_dir / "logs" / "metrics.csv"
    if not run_dir.is_dir():
        raise MatscimlError(f"{run_dir}: no such run directory; give the folder `matsciml train` printed "
                            f"(runs/NAME)")
    if not path.is_file():
        raise MatscimlError(f"{run_dir}: no training log at {path}; is this a run directory of `matsciml train` "
                            f"(it writes logs/metrics.csv), and did the run log at least one step?")
    log = RunLog(run_dir)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "epoch" not in columns or "step" not in columns:
            raise MatscimlError(f"{path}: not a matsciml training log (no epoch and step columns; has "
                                f"{', '.join(columns) or 'none'})")
        metric_columns = [c for c in columns if c.partition("/")[0] in ("train", "val") and "/" in c]
        for column in metric_columns:
            part, _, name = column.partition("/")
            log.curves.setdefault(name, {}).setdefault(part, [])
        for row in reader:
            for column in metric_columns:
                text = row.get(column) or ""
                if not text:
                    continue
                value = float(text)
                if not math.isfinite(value):
                    continue
                part, _, name = column.partition("/")
                log.curves[name][part].append((int(float(row["epoch"])), int(float(row["step"])), value))
    log.curves = {name: parts for name, parts in log.curves.items() if any(parts.values())}
    if not log.curves:
        raise MatscimlError(f"{path}: no metric was logged yet (the run stopped before its first logged step)")
    return log


def plot_learning_curves(run_dirs: Sequence[str | Path], output: str | Path, x: str = "epoch",
                         metrics: Sequence[str] | None = None) -> Path:
    """Draw each metric of each run against ``x`` (one panel per metric) to the PNG ``output``.

    Training values are drawn as a thin line (their per-epoch mean when
    ``x="epoch"``), validation values as a thick line with markers; several
    runs share each panel, one colour per run, so they read side by side.

    Returns:
        the path of the written PNG.

    Raises:
        MatscimlError: matplotlib is missing, ``x`` is not ``epoch`` or
            ``step``, a run has no log, or ``metrics`` names a metric no run
            logged.
    """
    figure = learning_curves_figure([read_run_log(run_dir) for run_dir in run_dirs], x, metrics)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    load_pyplot().close(figure)
    return output


def learning_curves_figure(logs: Sequence[RunLog], x: str = "epoch", metrics: Sequence[str] | None = None):
    """The matplotlib figure of :func:`plot_learning_curves`: one titled panel per metric, one line per run
    and part (train, val) that logged it."""
    if x not in X_AXES:
        raise MatscimlError(f"--x {x!r} is not valid: expected one of {', '.join(X_AXES)}")
    logged = list(dict.fromkeys(name for log in logs for name in log.metrics))
    chosen = list(metrics) if metrics else logged
    unknown = [name for name in chosen if name not in logged]
    if unknown:
        raise MatscimlError(f"--metrics names {', '.join(unknown)}, which no run logged; logged: {', '.join(logged)}")
    pyplot = load_pyplot()
    columns = min(3, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(5.0 * columns, 3.6 * rows), squeeze=False)
    colours = pyplot.rcParams["axes.prop_cycle"].by_key()["color"]
    for panel, name in zip(axes.flat, chosen):
        for index, log in enumerate(logs):
            colour = colours[index % len(colours)]
            label = log.name if len(logs) > 1 else None
            for part in ("train", "val"):
                points = log.curves.get(name, {}).get(part)
                if not points:
                    continue
                xs, ys = _series(points, x)
                style = {"linewidth": 1.0, "alpha": 0.6} if part == "train" else {"linewidth": 2.0, "marker": "o",
                                                                                 "markersize": 3}
                panel.plot(xs, ys, color=colour, label=f"{label + ' ' if label else ''}{part}", **style)
        panel.set_title(name)
        panel.set_xlabel(x)
        if _positive(logs, name):
            panel.set_yscale("log")
        panel.grid(True, alpha=0.3)
        panel.legend(fontsize=7)
    for panel in list(axes.flat)[len(chosen):]:
        panel.remove()
    figure.tight_layout()
    return figure


def _series(points: list[tuple[int, int, float]], x: str) -> tuple[list[float], list[float]]:
    """``(xs, ys)``: against steps as logged; against epochs, one mean value per epoch."""
    if x == "step":
        return [float(step) for _, step, _ in points], [value for _, _, value in points]
    by_epoch: dict[int, list[float]] = {}
    for epoch, _, value in points:
        by_epoch.setdefault(epoch, []).append(value)
    epochs = sorted(by_epoch)
    return [float(epoch) for epoch in epochs], [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]


def _positive(logs: Sequence[RunLog], name: str) -> bool:
    """Whether every value of ``name`` is > 0 and they span more than a decade (then a log scale reads best)."""
    values = [value for log in logs for points in log.curves.get(name, {}).values() for _, _, value in points]
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def load_pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed), or an error naming the extra to install."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MatscimlError(f"plots need matplotlib, which is not installed ({exc}); "
                            f"pip install 'matsciml[plot]'") from exc
    matplotlib.use("Agg")  # no display needed
    from matplotlib import pyplot

    return pyplot
