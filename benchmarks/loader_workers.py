"""Benchmark: training batches per second through ``MatSciDataModule`` with 0, 1 and 2 loader workers.

Why: on a GPU the data path must keep up with the model, and the way to
scale it is DataLoader worker processes, each reading the LMDB file through
its own environment (:class:`matsciml.data.storage.DatasetFile` reopens
after a fork) and building its own graphs or clouds. This script measures
how far that scales here, for each representation, and reports the ratio
to the same loader with no workers (everything in the main process), run
in the same process in interleaved passes so that both see the machine in
the same state. It reports; it asserts no timing.

What it does:

1. converts ``--devset`` (default ``lips.extxyz``: 200 frames of 83 atoms)
   from ``--devsets`` to a temporary LMDB file with
   :func:`matsciml.data.ase_import.convert` (``--frames`` keeps the first N);
2. for each representation (``point-cloud``, which needs no DGL, and
   ``dgl-graph`` where DGL imports; each with its registered defaults) and
   each worker count, builds the training loader exactly as ``matsciml
   train`` does: :class:`~matsciml.training.datamodule.MatSciDataModule`
   over the whole file as the training split, read-time validation on,
   shuffled, persistent workers;
3. warms every loader up with ``--warmup`` full passes (starting the
   workers, opening the file in each, first-touch costs), timed apart as
   "first pass";
4. times ``--passes`` full passes of each loader, the loaders taking turns
   pass by pass, and reports the median samples/s, its range, and the ratio
   of the median to the median with no workers.

Worker processes run torch with one thread each (PyTorch sets it); the main
process keeps torch's default. On the 2-core development machine two
workers share the cores with the main process, which collates nothing
(batches arrive collated) but still unpickles them.

Run from the repository root:
``.venv/bin/python benchmarks/loader_workers.py [--workers 0,1,2] [--passes 3]``
(``.venv-current/bin/python`` measures the point cloud on current torch).
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from matsciml.data.ase_import import convert
from matsciml.registry import get_registry
from matsciml.training.datamodule import MatSciDataModule

REPO_ROOT = Path(__file__).resolve().parents[1]
REPRESENTATIONS = ("point-cloud", "dgl-graph")


def _worker_counts(text: str) -> list[int]:
    """argparse type: comma-separated worker counts, each an integer >= 0 (``0,1,2``)."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 0,1,2") from None
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more worker counts >= 0, e.g. 0,1,2")
    return sorted(set(counts))


def build_representation(name: str) -> tuple[Any | None, str]:
    """The registered representation with its defaults, or None and why it cannot be built here."""
    try:
        return get_registry().representation(name).build(), ""
    except Exception as exc:  # noqa: BLE001 - a missing DGL is reported as a skipped row, not a crash
        reason = " ".join(str(exc).split())
        return None, reason[:200] + ("..." if len(reason) > 200 else "")


def one_pass(loader: torch.utils.data.DataLoader) -> tuple[int, float]:
    """``(structures, seconds)`` of one full pass over ``loader``."""
    start = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    return count, time.perf_counter() - start


def measure(path: Path, representation: Any, workers: Sequence[int], batch_size: int, warmup: int,
            passes: int, validate: bool) -> dict[int, dict[str, Any]]:
    """Per worker count: first-pass seconds and the samples/s of each timed pass.

    The loaders are built first and kept (their workers persist between
    passes, as in training), warmed up, then timed pass by pass in turn.
    """
    loaders = {}
    results: dict[int, dict[str, Any]] = {}
    for count in workers:
        module = MatSciDataModule(str(path), representation, batch_size=batch_size, num_workers=count,
                                  split=(1.0, 0.0, 0.0), validate=validate)
        module.setup("fit")
        loaders[count] = module.train_dataloader()
        results[count] = {"first": [], "rates": []}
    try:
        for _ in range(warmup):
            for count, loader in loaders.items():
                results[count]["first"].append(one_pass(loader)[1])
        for _ in range(passes):
            for count, loader in loaders.items():
                samples, seconds = one_pass(loader)
                results[count]["rates"].append(samples / seconds)
    finally:
        loaders.clear()
        gc.collect()  # ends the persistent workers before the next representation starts its own
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devsets", type=Path, default=REPO_ROOT.parent / "shared" / "devsets",
                        help="folder holding the devset (default: ../shared/devsets from the repository root)")
    parser.add_argument("--devset", default="lips.extxyz", help="file of that folder to read (default lips.extxyz)")
    parser.add_argument("--frames", type=int, default=None, help="convert only the first N frames (default: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=_worker_counts, default=[0, 1, 2],
                        help="worker counts to compare, comma-separated (default 0,1,2; 0 is the reference)")
    parser.add_argument("--representations", default=",".join(REPRESENTATIONS),
                        help=f"comma-separated (default {','.join(REPRESENTATIONS)}; those that cannot be "
                             f"built here are listed as skipped)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed full passes per loader first (default 1)")
    parser.add_argument("--passes", type=int, default=3, help="timed full passes per loader (median; default 3)")
    parser.add_argument("--no-validate", action="store_true",
                        help="skip read-time validation of each sample (training validates; default: validate)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads of the main process (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.passes < 1 or args.warmup < 0 or args.batch_size < 1 or (args.frames is not None and args.frames < 1):
        parser.error("--passes and --batch-size must be >= 1, --warmup >= 0, --frames >= 1")
    if 0 not in args.workers:
        parser.error("--workers must include 0: the ratios are to the loader without workers")

    source = args.devsets / args.devset
    if not source.is_file():
        print(f"{source}: no such file; give the folder of the devsets with --devsets", file=sys.stderr)
        return 2

    names = [name.strip() for name in args.representations.split(",") if name.strip()]
    load_before = os.getloadavg()[0]
    rows: list[tuple[str, int, dict[str, Any]]] = []
    skipped: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="matsciml-bench-") as folder:
        stored = Path(folder) / "devset.lmdb"
        index = ":" if args.frames is None else f":{args.frames}"
        report = convert([source], stored, index=index, progress=False)
        num_frames = getattr(report, "written", None)
        for name in names:
            representation, reason = build_representation(name)
            if representation is None:
                skipped.append((name, reason))
                continue
            results = measure(stored, representation, args.workers, args.batch_size, args.warmup, args.passes,
                              validate=not args.no_validate)
            rows.extend((name, count, results[count]) for count in args.workers)

    print(f"MatSciDataModule train loader, batches of {args.batch_size}: "
          f"{num_frames if num_frames is not None else 'all'} frames of {args.devset}, read-time validation "
          f"{'off' if args.no_validate else 'on'}; torch {torch.__version__}, {torch.get_num_threads()} intra-op "
          f"thread(s) in the main process, 1 in each worker")
    # Other processes on a small machine distort timings; the load average tells the reader.
    print(f"1-minute load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs; {args.warmup} warm-up and {args.passes} timed passes per loader, "
          f"loaders taking turns")
    print()
    print(f"{'representation':16s} {'workers':>7s} {'samples/s (median)':>19s} {'min':>8s} {'max':>8s} "
          f"{'first pass s':>13s} {'ratio to 0 workers':>19s}")
    reference: dict[str, float] = {}
    for name, count, result in rows:
        median = statistics.median(result["rates"])
        if count == 0:
            reference[name] = median
        first = f"{result['first'][0]:13.2f}" if result["first"] else f"{'-':>13s}"
        print(f"{name:16s} {count:7d} {median:19.1f} {min(result['rates']):8.1f} {max(result['rates']):8.1f} "
              f"{first} {median / reference[name]:18.2f}x")
    for name, reason in skipped:
        print(f"{name:16s} skipped: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
