"""Benchmark: one E(n)-GNN S2EF training step on LiPS, beside a naive reference.

Why: DESIGN.md asks the training step to do per edge only what must be per
edge, with arithmetic close to the machine's fp32 peak, and a batch-8 S2EF
run to stay under 1.6 GiB resident. This script reports, for batches of 8
LiPS frames (83 atoms, 6 Å cutoff):

* the step time (forward, forces by autograd with ``create_graph``, loss,
  backward, optimiser) of the default E(n)-GNN, median of ``--steps``;
* its FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` and the
  achieved FLOP/s (FlopCounterMode counts matrix products, not element-wise
  work);
* the same for a reference run in the same process whose first edge layer
  is the naive edge-sized matrix product over ``[h_i, h_j, d]`` (the same
  function, computed the slow way), and the ratios;
* the peak resident memory of the process after the runs (``ru_maxrss``).

It reports; it asserts nothing. Run from the repository root:
``.venv/bin/python benchmarks/egnn_s2ef_step.py``.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from matsciml.data.ase_import import convert
from matsciml.tasks.s2ef import S2EFTask
from matsciml.training.datamodule import MatSciDataModule
from matsciml_dgl.representation import DGLGraphRepresentation
from matsciml_egnn.blocks import EGNNLayer
from matsciml_egnn.model import EGNN

REPO_ROOT = Path(__file__).resolve().parents[1]


class NaiveEdgeLayer(EGNNLayer):
    """The reference: phi_e's first layer as one ``[num_edges, 2H + K]`` matrix product."""

    def messages(self, graph, h, distance_feature, envelope):  # type: ignore[override]
        src, dst = graph.edges()
        weight, bias = self.concatenated_edge_weight()
        pairs = torch.cat([h[dst], h[src], distance_feature], dim=1)  # [num_edges, 2H + K]
        message = self.activation(self.edge_out(self.activation(pairs @ weight.T + bias)))
        gate = torch.sigmoid(self.gate(message)) if self.gate is not None else 1.0
        return message * gate * envelope[:, None]


def make_task(naive: bool) -> S2EFTask:
    torch.manual_seed(0)
    backbone = EGNN()
    if naive:
        for layer in backbone.layers:
            layer.__class__ = NaiveEdgeLayer
    return S2EFTask(backbone)


def time_steps(task: S2EFTask, batches: list, steps: int) -> tuple[float, float]:
    """(median seconds per step, FLOPs of one step)."""
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)
    task.train()

    def step(batch) -> None:
        batch.pos.requires_grad_(False)
        prediction = task.predict(batch)
        loss = task.loss(batch, prediction)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up
    counter = FlopCounterMode(display=False)
    with counter:
        step(batches[0])
    times = []
    for index in range(steps):
        start = time.perf_counter()
        step(batches[index % len(batches)])
        times.append(time.perf_counter() - start)
    return statistics.median(times), float(counter.get_total_flops())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devsets", type=Path, default=REPO_ROOT.parent / "shared" / "devsets")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        dataset = Path(folder) / "lips.lmdb"
        convert([args.devsets / "lips.extxyz"], dataset, progress=False)
        module = MatSciDataModule(str(dataset), DGLGraphRepresentation(), batch_size=args.batch_size,
                                  split=(1.0, 0.0, 0.0))
        module.setup()
        batches = list(module.loader("train"))
        edges = sum(b.inputs.num_edges() for b in batches) / len(batches)
        atoms = sum(int(b.num_atoms.sum()) for b in batches) / len(batches)
        samples = module.samples("train", limit=256)
        results = {}
        for name, naive in (("E(n)-GNN (node projections)", False), ("reference (edge-sized matmul)", True)):
            task = make_task(naive)
            task.fit_statistics(samples)
            results[name] = time_steps(task, batches, args.steps)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB

    print(f"E(n)-GNN S2EF training step, batches of {args.batch_size} LiPS frames: {atoms:.0f} atoms, "
          f"{edges:.0f} edges per batch; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'run':32s} {'ms/step':>9s} {'GFLOP/step':>11s} {'GFLOP/s':>8s}")
    for name, (seconds, flops) in results.items():
        print(f"{name:32s} {seconds * 1e3:9.1f} {flops / 1e9:11.2f} {flops / seconds / 1e9:8.1f}")
    (fast, fast_flops), (slow, slow_flops) = results.values()
    print(f"ratio reference / E(n)-GNN: time {slow / fast:.2f}x, FLOPs {slow_flops / fast_flops:.2f}x")
    print(f"peak resident memory of this process: {peak_gib:.2f} GiB (DESIGN.md target for a batch-8 run: < 1.6 GiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
