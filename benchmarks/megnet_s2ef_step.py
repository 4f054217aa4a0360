"""Benchmark: one MEGNet S2EF training step on LiPS, beside E(n)-GNN in the same run.

Why: MEGNet (issue 16) is the seed paper's strongest S2EF model, and the
platform must say what a step of it costs next to the reference backbone.
For batches of 8 LiPS frames (83 atoms each; each model's own default
cutoff, so its own graph) this script reports, per model, with the default
preset unless ``--preset`` says otherwise:

* the step time: forward, forces by autograd with ``create_graph``, the S2EF
  loss, backward and the optimiser step; median of ``--steps`` steps after
  a warm-up;
* the FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matrix products only, not element-wise work) and the achieved FLOP/s;
* peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the
  peak resident set of a fresh process that runs only that model (so one
  model's memory does not hide in the other's).

Each model runs in its own subprocess for that reason. It reports; it
asserts nothing. Run from the repository root:
``.venv/bin/python benchmarks/megnet_s2ef_step.py [--device cuda]``.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = ("megnet", "egnn")


def measure(model_name: str, preset: str | None, devsets: Path, batch_size: int, steps: int,
            device: str) -> dict[str, object]:
    """Time, FLOPs and peak memory of one model's S2EF training step (runs in its own process)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from matsciml.data.ase_import import convert
    from matsciml.registry import get_registry
    from matsciml.tasks.s2ef import S2EFTask
    from matsciml.training.datamodule import MatSciDataModule

    registry = get_registry()
    spec = registry.model(model_name)
    params = spec.resolve_params(preset=preset)
    representation_spec = registry.representation(spec.representation)
    representation_params = {representation: params[model]
                             for model, representation in spec.tied_params.items()}
    torch.manual_seed(0)
    backbone = spec.build(**params)
    task = S2EFTask(backbone)
    with tempfile.TemporaryDirectory() as folder:
        dataset = Path(folder) / "lips.lmdb"
        convert([devsets / "lips.extxyz"], dataset, progress=False)
        module = MatSciDataModule(str(dataset), representation_spec.build(**representation_params),
                                  batch_size=batch_size, split=(1.0, 0.0, 0.0))
        module.setup()
        batches = list(module.loader("train"))
        task.fit_statistics(module.samples("train", limit=256))
    atoms = sum(int(b.num_atoms.sum()) for b in batches) / len(batches)
    edges = sum(int(b.inputs.num_edges()) for b in batches) / len(batches) if hasattr(
        batches[0].inputs, "num_edges") else None
    task = task.to(device)
    batches = [b.to(device) for b in batches]
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)
    task.train()

    def step(batch) -> None:
        prediction = task.predict(batch)
        loss = task.loss(batch, prediction)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def synchronise() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step(batches[0])  # warm-up: lazy initialisation, allocator, kernels
    counter = FlopCounterMode(display=False)
    with counter:
        step(batches[0])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for index in range(steps):
        synchronise()
        start = time.perf_counter()
        step(batches[index % len(batches)])
        synchronise()
        times.append(time.perf_counter() - start)
    if device.startswith("cuda"):
        peak_gib = torch.cuda.max_memory_allocated() / 2 ** 30
        memory = "CUDA max_memory_allocated"
    else:
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB
        memory = "peak resident set of the process"
    seconds = statistics.median(times)
    flops = float(counter.get_total_flops())
    return {"model": model_name, "preset": preset or "default",
            "parameters": sum(p.numel() for p in backbone.parameters()),
            "cutoff": params.get("cutoff_radius"), "atoms": atoms, "edges": edges,
            "ms_per_step": seconds * 1e3, "gflop_per_step": flops / 1e9, "gflop_per_s": flops / seconds / 1e9,
            "peak_gib": peak_gib, "memory": memory, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": device}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devsets", type=Path, default=REPO_ROOT.parent / "shared" / "devsets")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--preset", default=None, help="MEGNet preset (default: its default hyper-parameters)")
    parser.add_argument("--only", choices=MODELS, help=argparse.SUPPRESS)  # the per-model subprocess
    args = parser.parse_args()

    if args.only:
        preset = args.preset if args.only == "megnet" else None
        print(json.dumps(measure(args.only, preset, args.devsets, args.batch_size, args.steps, args.device)))
        return 0
    results = []
    for name in MODELS:
        command = [sys.executable, __file__, "--only", name, "--devsets", str(args.devsets), "--steps",
                   str(args.steps), "--batch-size", str(args.batch_size), "--device", args.device]
        if args.preset:
            command += ["--preset", args.preset]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first = results[0]
    print(f"S2EF training step (forward, forces with create_graph, loss, backward, AdamW), batches of "
          f"{args.batch_size} LiPS frames ({first['atoms']:.0f} atoms); torch {first['torch']}, "
          f"{first['device']}, {first['threads']} threads; median of {args.steps} steps")
    print(f"{'model':8s} {'preset':8s} {'params':>9s} {'cutoff':>6s} {'edges':>7s} {'ms/step':>9s} "
          f"{'GFLOP/step':>11s} {'GFLOP/s':>8s} {'peak GiB':>9s}")
    for r in results:
        edges = f"{r['edges']:.0f}" if r["edges"] is not None else "-"
        print(f"{r['model']:8s} {r['preset']:8s} {r['parameters']:9,d} {r['cutoff']:6.1f} {edges:>7s} "
              f"{r['ms_per_step']:9.1f} {r['gflop_per_step']:11.2f} {r['gflop_per_s']:8.1f} {r['peak_gib']:9.2f}")
    megnet, egnn = results
    print(f"MEGNet / E(n)-GNN: time {megnet['ms_per_step'] / egnn['ms_per_step']:.2f}x, "
          f"FLOPs {megnet['gflop_per_step'] / egnn['gflop_per_step']:.2f}x, "
          f"peak memory {megnet['peak_gib'] / egnn['peak_gib']:.2f}x ({first['memory']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
