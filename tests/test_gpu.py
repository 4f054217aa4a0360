"""One code path on CPU and GPU: a pure-torch backbone trained on a GPU matches the same run on the CPU.

GALA (no DGL) trains with ``trainer.devices=1`` on both, from the same seed,
through real ``matsciml train`` processes; the validation loss of every epoch
and the final metrics agree within float32 round-off grown over a few epochs
of training. Energies with forces (a double backward through the positions
on CUDA) and bf16 mixed precision are checked too, and a checkpoint written
on the GPU evaluates on the CPU to the GPU's numbers.

The GPU tests run wherever CUDA is visible (CI has none; a session lent a GPU
runs this file there); the message a CPU-only machine gives for a GPU request
is checked everywhere else.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (run this file on a GPU machine)")

COMMON = ["model.name=gala", "model.preset=small", "representation.cutoff_radius=3.0",
          "representation.max_neighbors=16", "data.batch_size=4", "trainer.enable_progress_bar=false",
          "trainer.enable_model_summary=false", "early_stopping=null"]
IS2RE = [*COMMON, "dataset.name=slab-emt-is2re", "task.name=is2re", "dataset.split=[0.3,0.1,0.6]",
         "trainer.max_epochs=3"]
S2EF = [*COMMON, "dataset.name=slab-emt-s2ef", "task.name=s2ef", "dataset.split=[0.3,0.1,0.6]",
        "trainer.max_epochs=2"]
# float32 on two devices sums in different orders; a few epochs of Adam grow that round-off (measured on an
# H200 against its own CPU: at most 8e-7 relative on every MAE and loss after 2-3 epochs)
TRAINED_REL = 1e-4
# metrics compared on an absolute scale: shares of samples within a threshold move in steps of one sample
# when round-off crosses the threshold, and a cosine of a nearly zero force (an untrained model predicts
# small forces) turns with round-off; measured on an H200: 1.5e-2 relative on force_cosine after 2 epochs
# while every MAE agreed to 1e-6
ABSOLUTE_METRICS = {"ewt": 0.05, "efwt": 0.05, "force_cosine": 0.01, "force_cosine_all": 0.01}


def _train(where: Path, name: str, *overrides: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "matsciml", "train", *overrides, f"run.dir={where}",
                           f"run.name={name}", "--json"], cwd=where, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((where / name / "metrics.json").read_text())
    assert summary["status"] == "completed"
    return summary


def _val_losses(run_dir: Path) -> list[float]:
    with (run_dir / "logs/metrics.csv").open() as handle:
        return [float(row["val/loss"]) for row in csv.DictReader(handle) if row.get("val/loss")]


def _report(label: str, cpu: dict[str, float], gpu: dict[str, float]) -> None:
    """Print the comparison (pytest -s shows it) so a GPU session can quote the numbers."""
    for key in sorted(cpu):
        difference = abs(gpu[key] - cpu[key]) / max(abs(cpu[key]), 1e-12)
        print(f"[gpu-vs-cpu] {label} {key}: cpu {cpu[key]:.7g} gpu {gpu[key]:.7g} relative {difference:.2e}")


def _assert_same(cpu: dict[str, float], gpu: dict[str, float], rel: float) -> None:
    assert set(cpu) == set(gpu)
    for key, value in cpu.items():
        if key in ABSOLUTE_METRICS:
            assert abs(gpu[key] - value) <= ABSOLUTE_METRICS[key], key
        else:
            assert gpu[key] == pytest.approx(value, rel=rel, abs=1e-6), key


@needs_cuda
def test_gala_trains_on_the_gpu_to_the_cpu_metrics(tmp_path: Path) -> None:
    cpu = _train(tmp_path, "cpu", *IS2RE, "trainer.accelerator=cpu")
    gpu = _train(tmp_path, "gpu", *IS2RE, "trainer.accelerator=gpu", "trainer.devices=1")
    cpu_losses, gpu_losses = _val_losses(tmp_path / "cpu"), _val_losses(tmp_path / "gpu")
    _report("is2re val/loss by epoch", dict(enumerate(cpu_losses)), dict(enumerate(gpu_losses)))
    _report("is2re final", cpu["metrics"], gpu["metrics"])
    assert len(cpu_losses) == len(gpu_losses) == 3
    assert gpu_losses == pytest.approx(cpu_losses, rel=TRAINED_REL)
    _assert_same(cpu["metrics"], gpu["metrics"], TRAINED_REL)
    assert cpu["baselines"] == gpu["baselines"]  # statistics and baselines do not depend on the device

    # the GPU's best checkpoint evaluates on the CPU to the GPU's own final numbers (validation split)
    assert gpu["split"] == "val"
    checkpoint = next((tmp_path / "gpu/checkpoints").glob("best-*.ckpt"))
    done = subprocess.run([sys.executable, "-m", "matsciml", "evaluate", str(checkpoint), "--split", "val",
                           "--accelerator", "cpu", "--json"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    on_cpu = json.loads(done.stdout)["metrics"]
    _report("is2re gpu checkpoint evaluated on cpu", gpu["metrics"], on_cpu)
    _assert_same(gpu["metrics"], on_cpu, 1e-4)


@needs_cuda
def test_forces_train_on_the_gpu_to_the_cpu_metrics(tmp_path: Path) -> None:
    """S2EF: forces are -dE/dx, so each step differentiates twice through the positions on the GPU."""
    cpu = _train(tmp_path, "cpu", *S2EF, "trainer.accelerator=cpu")
    gpu = _train(tmp_path, "gpu", *S2EF, "trainer.accelerator=gpu", "trainer.devices=1")
    _report("s2ef final", cpu["metrics"], gpu["metrics"])
    _assert_same(cpu["metrics"], gpu["metrics"], TRAINED_REL)


@needs_cuda
def test_bf16_mixed_precision_trains_on_the_gpu(tmp_path: Path) -> None:
    """The recipes' mixed-precision knob: it runs, stays finite, and lands near the float32 run."""
    full = _train(tmp_path, "fp32", *S2EF, "trainer.accelerator=gpu")
    mixed = _train(tmp_path, "bf16", *S2EF, "trainer.accelerator=gpu", "trainer.precision=bf16-mixed")
    _report("s2ef bf16-mixed against float32", full["metrics"], mixed["metrics"])
    assert all(torch.isfinite(torch.tensor(value)) for value in mixed["metrics"].values())
    for key in ("energy_mae", "force_mae"):
        assert mixed["metrics"][key] == pytest.approx(full["metrics"][key], rel=0.25), key


@pytest.mark.skipif(HAS_CUDA, reason="checks the message of a machine without a GPU")
def test_asking_for_a_gpu_without_one_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "matsciml", "train", *IS2RE, "trainer.accelerator=gpu",
                           f"run.dir={tmp_path}", "run.name=nogpu"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("matsciml: error: trainer.accelerator=gpu: no CUDA GPU is visible to this process")
    assert "use trainer.accelerator=auto" in last
    assert not (tmp_path / "nogpu").exists()  # refused before the run directory is written

    # evaluate runs where --accelerator says, whatever the run trained on; a bad one is one line too
    done = subprocess.run([sys.executable, "-m", "matsciml", "train", *IS2RE, "trainer.max_epochs=1",
                           f"run.dir={tmp_path}", "run.name=cpu"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = tmp_path / "cpu/checkpoints/last.ckpt"
    for accelerator, words in (("gpu", "No supported gpu backend found"), ("gpux", "invalid accelerator name")):
        done = subprocess.run([sys.executable, "-m", "matsciml", "evaluate", str(checkpoint), "--accelerator",
                               accelerator], capture_output=True, text=True, timeout=900)
        assert done.returncode == 1
        last = done.stderr.strip().splitlines()[-1]
        assert f"refused the trainer settings (accelerator={accelerator}" in last and words in last, last
        assert last.endswith("give --accelerator auto (what this machine has), cpu or gpu"), last
