"""Benchmark: GALA S2EF training steps on LiPS: peak memory per structure and step time beside E(n)-GNN.

Why: a rank-2 GALA layer works on every pair of a cloud's K neighbours, so
its memory grows as centres x K^2 x width, and training on forces keeps
(or, chunked, recomputes) all of it twice. This script reports, for
batches of 1, 8 and 32 LiPS frames (83 atoms each) and K = 16 and 32
neighbour slots (``representation.max_neighbors``; cutoff 5 Å):

* the step time: forward, forces by autograd with ``create_graph``, the S2EF
  loss, backward and the AdamW step; median of ``--steps`` steps after a
  warm-up;
* the peak resident set (``ru_maxrss``) of a fresh process that runs only
  that configuration, and the same less the process's resident set before
  the first step, per structure of the batch;

and the E(n)-GNN step (``egnn`` on ``dgl-graph``, its defaults) on the
same batches of 8, in its own process: DGL is imported only there, so the
GALA part runs where DGL is absent.

``--compare-package`` adds the measurement behind matsciml-gala's choice of
its own rank-2 products over the author's package
(``geometric-algebra-attention``, when installed): the same network
(3 covariant blocks and the pooling, width 64, merge/join concat, full
invariants) on LiPS clouds of batch 8, K = 32, built from the package's
``pytorch.VectorAttention`` and from matsciml-gala, one step each with
forces by ``create_graph``; and whether each leaves a structure's energy
unchanged when its clouds are padded with extra empty slots (masks) and
whether its gradients stay finite with cutoff envelopes as tuple weights.

It reports and asserts nothing. Run from the repository root:
``.venv/bin/python benchmarks/gala_s2ef_step.py [--width 64] [--steps 3] [--compare-package]``.
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
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZES = (1, 8, 32)
SLOTS = (16, 32)


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def _current_rss_gib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2 ** 30


def _batches(model_name: str, params: dict[str, Any], representation_params: dict[str, Any], devsets: Path,
             batch_size: int, count: int) -> tuple[Any, list[Any], Any]:
    """The built model, ``count`` LiPS batches of its representation, and an S2EF task around it."""
    import torch

    from matsciml.data.ase_import import convert
    from matsciml.registry import get_registry
    from matsciml.tasks.s2ef import S2EFTask
    from matsciml.training.datamodule import MatSciDataModule

    registry = get_registry()
    spec = registry.model(model_name)
    tied = {rep: params[model] for model, rep in spec.tied_params.items() if model in params}
    torch.manual_seed(0)
    backbone = spec.build(**params)
    task = S2EFTask(backbone)
    with tempfile.TemporaryDirectory() as folder:
        dataset = Path(folder) / "lips.lmdb"
        convert([devsets / "lips.extxyz"], dataset, progress=False)
        representation = registry.representation(spec.representation).build(**{**representation_params, **tied})
        module = MatSciDataModule(str(dataset), representation, batch_size=batch_size, split=(1.0, 0.0, 0.0))
        module.setup()
        batches = []
        for batch in module.loader("train"):
            batches.append(batch)
            if len(batches) == count:
                break
        task.fit_statistics(module.samples("train", limit=64))
    return backbone, batches, task


def measure(model_name: str, params: dict[str, Any], representation_params: dict[str, Any], devsets: Path,
            batch_size: int, steps: int) -> dict[str, Any]:
    """Step time and peak memory of one model and batch size (runs in its own process)."""
    import torch

    backbone, batches, task = _batches(model_name, params, representation_params, devsets, batch_size, steps + 1)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)
    task.train()

    def step(batch: Any) -> None:
        loss = task.loss(batch, task.predict(batch))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    before = _current_rss_gib()
    step(batches[0])  # warm-up
    times = []
    for index in range(steps):
        start = time.perf_counter()
        step(batches[(index + 1) % len(batches)])
        times.append(time.perf_counter() - start)
    inputs = batches[0].inputs
    slots = int(inputs.mask.shape[1]) if hasattr(inputs, "mask") else None
    neighbours = float(inputs.mask.sum(1).float().mean()) if hasattr(inputs, "mask") else None
    peak = _rss_gib()
    return {"model": model_name, "batch": batch_size, "slots": slots, "neighbours": neighbours,
            "parameters": sum(p.numel() for p in backbone.parameters()),
            "ms_per_step": statistics.median(times) * 1e3, "peak_gib": peak,
            "per_structure_mib": (peak - before) * 1024 / batch_size, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


# ------------------------------------------------------------------ package comparison
class _PackageNetwork:
    """The GALA network of matsciml-gala built from the author's ``pytorch.VectorAttention`` layers."""

    def __new__(cls, width: int, num_blocks: int) -> Any:
        import torch
        from geometric_algebra_attention import pytorch as gala
        from torch import nn

        from matsciml.nn import ElementEmbedding

        def layer(reduce: bool) -> nn.Module:
            score = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))
            value = nn.Sequential(nn.Linear(4, width), nn.SiLU(), nn.Linear(width, width))
            return gala.VectorAttention(width, score, value, reduce=reduce, merge_fun="concat", join_fun="concat",
                                        rank=2, invariant_mode="full")

        class Network(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embedding = ElementEmbedding(width)
                self.blocks = nn.ModuleList(layer(False) for _ in range(num_blocks))
                self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(num_blocks))
                self.pooling = layer(True)

            def forward(self, batch: Any, weights: bool = False) -> torch.Tensor:
                from matsciml_pointcloud.representation import pair_elements, relative_vectors

                from matsciml.nn import PolynomialEnvelope

                vectors = relative_vectors(batch) / 5.0
                z_centre, z_neighbour = pair_elements(batch)
                features = self.embedding(z_centre)[:, None] + self.embedding(z_neighbour)
                mask = batch.inputs.mask
                inputs: tuple[torch.Tensor, ...] = (vectors, features)
                if weights:
                    envelope = PolynomialEnvelope(1.0)(vectors.norm(dim=-1)) * mask
                    inputs = (vectors, features, envelope)
                for block, norm in zip(self.blocks, self.norms):
                    features = norm(features + block((inputs[0], features, *inputs[2:]), mask=mask))
                return self.pooling((inputs[0], features, *inputs[2:]), mask=mask)  # [C, width]

        return Network()


def compare(implementation: str, devsets: Path, width: int, steps: int, memory_limit_gib: float,
            batch_size: int = 8) -> dict[str, Any]:
    """One implementation's step time, peak memory, mask and gradient checks (own process)."""
    import torch

    from matsciml.batch import Batch
    from matsciml_pointcloud.representation import PointClouds

    params = {"width": width, "num_blocks": 3, "merge_fun": "concat", "join_fun": "concat",
              "invariant_mode": "full"}
    limit = int(memory_limit_gib * 2 ** 30)  # private allocations only: the dataset's mmap is not counted
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    if implementation == "own-unchunked":
        params["chunk_tuple_features"] = 2 ** 62
    backbone, batches, _ = _batches("gala", params, {"max_neighbors": 32}, devsets, batch_size, steps + 1)
    if implementation == "package":
        torch.manual_seed(0)
        model = _PackageNetwork(width, 3)

        def clouds(batch: Batch) -> torch.Tensor:
            return model(batch)
    else:
        model = backbone

        def clouds(batch: Batch) -> torch.Tensor:
            return model(batch).atom_features[batch.inputs.centres]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(batch: Batch) -> None:
        batch.pos.requires_grad_(True)
        energy = clouds(batch).sum()
        (forces,) = torch.autograd.grad(energy, batch.pos, create_graph=True)
        (energy ** 2 + (forces ** 2).sum()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])
    times = []
    for index in range(steps):
        start = time.perf_counter()
        step(batches[(index + 1) % len(batches)])
        times.append(time.perf_counter() - start)
    peak = _rss_gib()
    # masks: the first structure's clouds alone, then padded with 8 more empty slots
    batch = batches[0]
    inputs = batch.inputs
    extra = 8
    padded_inputs = PointClouds(
        centres=inputs.centres,
        neighbours=torch.cat([inputs.neighbours, inputs.centres[:, None].expand(-1, extra)], dim=1),
        shifts=torch.cat([inputs.shifts, inputs.shifts.new_zeros((inputs.num_centres, extra, 3))], dim=1),
        mask=torch.cat([inputs.mask, inputs.mask.new_zeros((inputs.num_centres, extra))], dim=1),
        structure_index=inputs.structure_index)
    padded = Batch(**{**batch.__dict__, "inputs": padded_inputs})
    with torch.no_grad():
        difference = float((clouds(batch) - clouds(padded)).abs().max())
    finite = None
    if implementation == "package":
        batch.pos.requires_grad_(True)
        energy = model(batch, weights=True).sum()
        (gradient,) = torch.autograd.grad(energy, batch.pos)
        finite = bool(torch.isfinite(gradient).all())
    else:
        batch.pos.requires_grad_(True)
        (gradient,) = torch.autograd.grad(clouds(batch).sum(), batch.pos)
        finite = bool(torch.isfinite(gradient).all())
    return {"implementation": implementation, "ms_per_step": statistics.median(times) * 1e3, "peak_gib": peak,
            "padding_changes_energy_by": difference, "finite_gradients_with_envelope": finite,
            "centres": inputs.num_centres, "slots": inputs.num_slots}


# ------------------------------------------------------------------ driver
def _subprocess(arguments: list[str]) -> dict[str, Any] | str:
    done = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devsets", type=Path, default=REPO_ROOT.parent / "shared" / "devsets")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--width", type=int, default=64, help="GALA width (default preset otherwise)")
    parser.add_argument("--num-blocks", type=int, default=3)
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--slots", default=",".join(map(str, SLOTS)))
    parser.add_argument("--compare-package", action="store_true")
    parser.add_argument("--compare-batch-size", type=int, default=8)
    parser.add_argument("--memory-limit-gib", type=float, default=12.0,
                        help="allocation limit of each comparison process (an implementation that needs more fails)")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # the per-configuration subprocess
    parser.add_argument("--batch-size", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args()

    common = ["--devsets", str(args.devsets), "--steps", str(args.steps), "--width", str(args.width),
              "--num-blocks", str(args.num_blocks), "--memory-limit-gib", str(args.memory_limit_gib)]
    if args.only == "gala":
        result = measure("gala", {"width": args.width, "num_blocks": args.num_blocks}, {"max_neighbors": args.k},
                         args.devsets, args.batch_size, args.steps)
        print(json.dumps(result))
        return 0
    if args.only == "egnn":
        print(json.dumps(measure("egnn", {}, {}, args.devsets, args.batch_size, args.steps)))
        return 0
    if args.only:
        print(json.dumps(compare(args.only, args.devsets, args.width, args.steps, args.memory_limit_gib,
                                   args.batch_size)))
        return 0

    print(f"GALA S2EF training step (forward, forces with create_graph, loss, backward, AdamW) on LiPS "
          f"(83 atoms per frame), width {args.width}, {args.num_blocks} blocks, cutoff 5 Å; "
          f"median of {args.steps} steps; each row a fresh process")
    print(f"{'batch':>5s} {'K':>3s} {'mean nbrs':>9s} {'params':>8s} {'ms/step':>9s} {'peak GiB':>9s} "
          f"{'MiB/structure':>14s}")
    gala_8 = None
    for slots in (int(k) for k in args.slots.split(",")):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            r = _subprocess(["--only", "gala", "--batch-size", str(batch_size), "--k", str(slots), *common])
            if isinstance(r, str):
                print(f"{batch_size:5d} {slots:3d} failed: {r}")
                continue
            print(f"{r['batch']:5d} {r['slots']:3d} {r['neighbours']:9.1f} {r['parameters']:8,d} "
                  f"{r['ms_per_step']:9.1f} {r['peak_gib']:9.2f} {r['per_structure_mib']:14.1f}")
            if batch_size == 8 and slots == max(int(k) for k in args.slots.split(",")):
                gala_8 = r
    egnn = _subprocess(["--only", "egnn", "--batch-size", "8", *common])
    if isinstance(egnn, str):
        print(f"E(n)-GNN (egnn on dgl-graph) not measured: {egnn}")
    else:
        print(f"E(n)-GNN, batch 8, its defaults ({egnn['parameters']:,d} parameters): "
              f"{egnn['ms_per_step']:.1f} ms/step, peak {egnn['peak_gib']:.2f} GiB")
        if gala_8 is not None:
            print(f"GALA / E(n)-GNN step time at batch 8: {gala_8['ms_per_step'] / egnn['ms_per_step']:.1f}x")
    if args.compare_package:
        print(f"package vs own rank-2 products: batch {args.compare_batch_size}, K = 32, width "
              f"{args.width}, 3 blocks + pooling, one step with forces by create_graph; fresh process each")
        for implementation in ("package", "own-unchunked", "own"):
            r = _subprocess(["--only", implementation, "--batch-size", str(args.compare_batch_size), *common])
            if isinstance(r, str):
                print(f"  {implementation:14s} failed: {r}")
                continue
            print(f"  {implementation:14s} {r['ms_per_step']:9.1f} ms/step  peak {r['peak_gib']:6.2f} GiB  "
                  f"energy change with 8 extra empty slots {r['padding_changes_energy_by']:.1e}  "
                  f"finite gradients with envelope weights: {r['finite_gradients_with_envelope']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
