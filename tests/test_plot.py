"""``matsciml plot``: learning curves of runs to PNG, read from the CSV log every run writes.

The logs here are written in the layout Lightning's CSVLogger gives a
matsciml run (``logs/metrics.csv``: epoch, step, ``train/NAME``,
``val/NAME``; empty cells where a row logged nothing).
"""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="matplotlib is the optional 'plot' extra")

from matsciml.cli import main  # noqa: E402
from matsciml.errors import MatscimlError  # noqa: E402
from matsciml.training.curves import learning_curves_figure, read_run_log  # noqa: E402

METRICS = ["loss", "energy_mae", "force_mae"]


def _run(root: Path, name: str, epochs: int = 4, scale: float = 1.0) -> Path:
    run_dir = root / name
    (run_dir / "logs").mkdir(parents=True)
    header = ["epoch", "step", *[f"train/{m}" for m in ("energy_mae", "force_mae", "loss")],
              *[f"val/{m}" for m in ("energy_mae", "force_mae", "loss")]]
    lines = [",".join(header)]
    step = 0
    for epoch in range(epochs):
        for _ in range(2):  # two logged training steps per epoch
            step += 5
            value = scale / (1 + step)
            lines.append(",".join([str(epoch), str(step), f"{value}", f"{value / 2}", f"{value * 3}", "", "", ""]))
        lines.append(",".join([str(epoch), str(step), "", "", "", f"{scale / (2 + epoch)}", "nan",
                               f"{scale / (1 + epoch)}"]))
    (run_dir / "logs" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run_dir


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_reading_a_run_log_keeps_each_metric_and_part_and_skips_empty_and_nan_cells(tmp_path: Path) -> None:
    log = read_run_log(_run(tmp_path, "a"))
    assert log.metrics == METRICS  # loss first
    assert len(log.curves["energy_mae"]["train"]) == 8 and len(log.curves["energy_mae"]["val"]) == 4
    assert "val" not in log.curves["force_mae"] or not log.curves["force_mae"]["val"]  # all nan


def test_one_run_gives_a_png_beside_it_with_one_panel_and_one_line_per_part_for_each_metric(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _run(tmp_path, "a")
    assert main(["plot", str(run_dir)]) == 0
    output = run_dir / "learning_curves.png"
    assert f"written to {output}" in capsys.readouterr().out
    width, height = _png_size(output)
    assert width >= 800 and height >= 300 and output.stat().st_size > 10_000
    figure = learning_curves_figure([read_run_log(run_dir)])
    panels = {axes.get_title(): [line.get_label() for line in axes.get_lines()] for axes in figure.axes}
    assert panels == {"loss": ["train", "val"], "energy_mae": ["train", "val"], "force_mae": ["train"]}


def test_several_runs_share_each_panel_one_colour_per_run(tmp_path: Path) -> None:
    runs = [_run(tmp_path, "first"), _run(tmp_path, "second", scale=2.0)]
    output = tmp_path / "out" / "both.png"
    assert main(["plot", *map(str, runs), "-o", str(output), "--x", "step", "--metrics", "loss,energy_mae"]) == 0
    assert output.is_file()
    figure = learning_curves_figure([read_run_log(run) for run in runs], "step", ["loss", "energy_mae"])
    assert [axes.get_title() for axes in figure.axes] == ["loss", "energy_mae"]
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["first train", "first val", "second train", "second val"]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert list(lines[0].get_xdata()) == [5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0]  # against steps


def test_problems_are_one_line_naming_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(tmp_path / "nowhere")]) == 1
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 1
    assert "no training log at" in capsys.readouterr().err
    assert main(["plot", str(_run(tmp_path, "a")), "--metrics", "force_cosine"]) == 1
    err = capsys.readouterr().err
    assert "--metrics names force_cosine, which no run logged; logged: loss, energy_mae, force_mae" in err
    with pytest.raises(MatscimlError, match="--x 'time' is not valid"):
        learning_curves_figure([read_run_log(tmp_path / "a")], "time")


def test_evaluate_plot_draws_parities_whose_errors_are_the_reported_metrics(tmp_path: Path) -> None:
    """A short S2EF run of GALA's small preset (no DGL needed), then ``evaluate --plot``: one panel per
    target, and the MAE of the plotted points is the metric evaluate reports (energy; forces on free atoms)."""
    import json

    from matsciml.training.config import build_config
    from matsciml.training.parity import collect_predictions, parity_figure
    from matsciml.training.run import load_checkpoint, train

    result = train(build_config(overrides=[
        "model.name=gala", "model.preset=small", "representation.cutoff_radius=3.0", "representation.max_neighbors=12",
        "dataset.name=slab-emt-s2ef", "dataset.split=[0.9,0.05,0.05]", "task.name=s2ef",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", f"run.dir={tmp_path}"]))
    output = tmp_path / "parity.png"
    done = _cli_json(["evaluate", str(result.best_checkpoint), "--plot", str(output), "--json"])
    assert done["plot"] == str(output) and _png_size(output)[0] >= 600
    loaded = load_checkpoint(result.best_checkpoint)
    values = collect_predictions(loaded.task, loaded.run.datamodule, "val")
    assert set(values) == {"energy", "forces"}
    for key, metric in (("energy", "energy_mae"), ("forces", "force_mae")):
        predicted, reference = values[key]
        assert abs(float(abs(predicted - reference).mean()) - done["metrics"][metric]) <= 1e-4 * (
            1 + done["metrics"][metric]), (key, done["metrics"])
    figure = parity_figure(values)
    assert [axes.get_title() for axes in figure.axes] == ["energy", "forces"]
    assert all(axes.get_legend().get_texts()[0].get_text().startswith("MAE ") for axes in figure.axes)
    json.dumps(done)


def _cli_json(arguments: list[str]) -> dict:
    import contextlib
    import io
    import json

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(arguments) == 0
    return json.loads(buffer.getvalue())
