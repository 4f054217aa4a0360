"""Parity plots: a trained model's predictions against the reference values of a split (``evaluate --plot``).

Why: a mean error hides where a model fails (large energies, one element,
large forces); a predicted-against-reference scatter shows it at a glance.
Every task's ``predict`` returns its targets under their own keys, so the
same code serves S2EF (energy per structure, force components of free
atoms, the atoms ``force_mae`` is taken over), IS2RE and property regression.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matsciml.tasks.metrics import free_atoms

UNITS = {"energy": "eV", "relaxed_energy": "eV", "forces": "eV/Å", "free_energy": "eV"}


def collect_predictions(task: Any, datamodule: Any, part: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{target: (predicted, reference)}`` over split ``part``, flattened to 1-D float64 arrays.

    Forces are the components of free atoms (not ``fixed``; tags 1 and 2 when
    a dataset has tags and no ``fixed``), as in ``force_mae``.
    """
    task.eval()
    collected: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    device = next(task.parameters()).device
    for batch in datamodule.loader(part):
        batch = batch.to(device)
        with torch.enable_grad():  # forces are -dE/dpos
            prediction = task.predict(batch)
        for key, value in prediction.items():
            if key not in batch.targets:
                continue
            predicted, reference = value.detach(), batch.targets[key]
            if key == "forces":
                free = free_atoms(batch)
                predicted, reference = predicted[free], reference[free]
            lists = collected.setdefault(key, ([], []))
            lists[0].append(predicted.reshape(-1).double().cpu().numpy())
            lists[1].append(reference.reshape(-1).double().cpu().numpy())
    return {key: (np.concatenate(p), np.concatenate(r)) for key, (p, r) in collected.items()}


def parity_figure(values: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = ""):
    """One panel per target: predicted against reference, the diagonal, MAE and count in the legend."""
    from matsciml.training.curves import load_pyplot

    pyplot = load_pyplot()
    keys = list(values)
    figure, axes = pyplot.subplots(1, max(1, len(keys)), figsize=(4.6 * max(1, len(keys)), 4.4), squeeze=False)
    for panel, key in zip(axes.flat, keys):
        predicted, reference = values[key]
        unit = UNITS.get(key, "")
        mae = float(np.abs(predicted - reference).mean()) if len(reference) else float("nan")
        what = "force components (free atoms)" if key == "forces" else key
        panel.scatter(reference, predicted, s=20 if len(reference) < 500 else 5, alpha=0.6, linewidths=0,
                      label=f"MAE {mae:.4g} {unit}, n = {len(reference)}".replace("  ", " "))
        if len(reference):
            low = float(min(reference.min(), predicted.min()))
            high = float(max(reference.max(), predicted.max()))
            panel.plot([low, high], [low, high], color="black", linewidth=0.8, label="predicted = reference")
        panel.set_xlabel(f"reference {what}" + (f" ({unit})" if unit else ""))
        panel.set_ylabel(f"predicted {what}" + (f" ({unit})" if unit else ""))
        panel.set_title(key)
        panel.legend(fontsize=8, loc="upper left")
        panel.grid(True, alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def write_parity_plot(values: Mapping[str, tuple[np.ndarray, np.ndarray]], output: str | Path,
                      title: str = "") -> Path:
    """Draw :func:`parity_figure` to the PNG ``output`` and return its path."""
    from matsciml.training.curves import load_pyplot

    figure = parity_figure(values, title)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    load_pyplot().close(figure)
    return output
