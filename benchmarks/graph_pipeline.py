"""Benchmark: stored samples to collated ``dgl-graph`` batches, against an ASE reference.

Why: the data path must feed training without workers on a 2-core machine
(DESIGN.md target: at least 700 samples/s for 83-atom periodic frames, 6 Å
cutoff, batches of 8). This script measures it and puts it beside a
reference pipeline run in the same process, identical except that the
neighbour search is ``ase.neighborlist.neighbor_list`` instead of vesin, and
reports the ratio. It reports; it asserts no timing.

What it does:

1. converts ``lips.extxyz`` (200 frames of 83 atoms) from ``--devsets`` to a
   temporary LMDB dataset with :func:`matsciml.data.ase_import.convert`;
2. for each pipeline, iterates a ``DataLoader`` (``num_workers=0``,
   ``batch_size=8``, ``collate_fn=representation.collate``) over a dataset
   that reads a sample from the LMDB and applies the representation, over
   all frames, ``--repeats`` times after one warm-up pass, and reports the
   median samples/s;
3. splits the time into LMDB read, neighbour search, graph building and
   collate, timed step by step in a plain loop (for the slow reference,
   over the first ``--reference-split-frames`` frames only).

Run from the repository root: ``.venv/bin/python benchmarks/graph_pipeline.py``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data

from matsciml.data.ase_import import convert
from matsciml.data.dataset import LMDBDataset
from matsciml.data.schema import Sample
from matsciml_dgl.representation import DGLGraphRepresentation, GraphItem

REPO_ROOT = Path(__file__).resolve().parents[1]
DEVSET_FILE = "lips.extxyz"


class ASEGraphRepresentation(DGLGraphRepresentation):
    """The reference: the same graphs, with ASE's neighbour list instead of vesin."""

    def edges(self, sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from ase import Atoms
        from ase.neighborlist import neighbor_list

        cell = sample.get("cell")
        atoms = Atoms(numbers=sample["atomic_numbers"], positions=sample["pos"],
                      cell=np.zeros((3, 3)) if cell is None else cell, pbc=sample["pbc"])
        # ASE pairs (i, j, S) have the vector pos[j] + S @ cell - pos[i]:
        # i is the receiver, j the sender, as in vesin.
        first, second, shifts = neighbor_list("ijS", atoms, self.cutoff_radius)
        return second.astype(np.int64), first.astype(np.int64), shifts.astype(np.int64)


class RepresentedDataset(torch.utils.data.Dataset):
    """Applies a representation to each sample read from a dataset."""

    def __init__(self, dataset: LMDBDataset, representation: DGLGraphRepresentation) -> None:
        self.dataset = dataset
        self.representation = representation

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.representation(self.dataset[index])


def samples_per_second(dataset: LMDBDataset, representation: DGLGraphRepresentation, batch_size: int,
                       repeats: int) -> list[float]:
    """Throughput of full passes of a worker-less DataLoader (after one warm-up pass)."""
    loader = torch.utils.data.DataLoader(RepresentedDataset(dataset, representation), batch_size=batch_size,
                                         shuffle=False, num_workers=0, collate_fn=representation.collate)
    rates = []
    for repeat in range(repeats + 1):
        start = time.perf_counter()
        count = sum(len(batch) for batch in loader)
        elapsed = time.perf_counter() - start
        if repeat:
            rates.append(count / elapsed)
    return rates


def time_split(dataset: LMDBDataset, representation: DGLGraphRepresentation, batch_size: int,
               num_samples: int, repeats: int) -> dict[str, float]:
    """Seconds per sample of each step, timed one step at a time over the
    first ``num_samples`` samples; the median of ``repeats`` passes per step."""
    clock = time.perf_counter
    steps = ("LMDB read", "neighbour search", "graph building", "collate")
    passes: dict[str, list[float]] = {step: [] for step in steps}
    for _ in range(repeats):
        totals = dict.fromkeys(steps, 0.0)
        items = []
        for index in range(num_samples):
            start = clock()
            sample = dataset[index]
            read = clock()
            edges = representation.edges(sample)
            searched = clock()
            graph = representation.graph_from_edges(sample, *edges)
            built = clock()
            totals["LMDB read"] += read - start
            totals["neighbour search"] += searched - read
            totals["graph building"] += built - searched
            items.append(GraphItem(sample, graph))
            if len(items) == batch_size or index == num_samples - 1:
                start = clock()
                representation.collate(items)
                totals["collate"] += clock() - start
                items = []
        for step in steps:
            passes[step].append(totals[step] / num_samples)
    return {step: statistics.median(values) for step, values in passes.items()}


def same_graphs(dataset: LMDBDataset, first: DGLGraphRepresentation, second: DGLGraphRepresentation,
                indices: Sequence[int]) -> bool:
    """Whether both pipelines find the same (sender, receiver, image) edges."""
    def edge_set(representation: DGLGraphRepresentation, sample: Sample) -> set[tuple[int, ...]]:
        senders, receivers, images = representation.edges(sample)
        return set(map(tuple, np.column_stack([senders, receivers, images]).tolist()))

    return all(edge_set(first, dataset[i]) == edge_set(second, dataset[i]) for i in indices)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devsets", type=Path, default=REPO_ROOT.parent / "shared" / "devsets",
                        help=f"folder holding {DEVSET_FILE} (default: ../shared/devsets from the repository root)")
    parser.add_argument("--cutoff-radius", type=float, default=6.0, help="neighbour cutoff in Å (default 6)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of the vesin pipeline (median)")
    parser.add_argument("--reference-repeats", type=int, default=3,
                        help="timed passes of the ASE reference (median; about 25 s each here)")
    parser.add_argument("--reference-split-frames", type=int, default=40,
                        help="frames over which the reference's time split is taken (default 40)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    source = args.devsets / DEVSET_FILE
    if not source.is_file():
        print(f"{source}: no such file; give the folder of the devsets with --devsets", file=sys.stderr)
        return 2

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="matsciml-bench-") as folder:
        stored = Path(folder) / "lips.lmdb"
        convert([source], stored, progress=False)
        dataset = LMDBDataset(stored)
        first = dataset[0]
        vesin_representation = DGLGraphRepresentation(cutoff_radius=args.cutoff_radius)
        ase_representation = ASEGraphRepresentation(cutoff_radius=args.cutoff_radius)
        num_edges = len(vesin_representation.edges(first)[0])
        agree = same_graphs(dataset, vesin_representation, ase_representation, range(0, len(dataset), 20))

        # Each pipeline's split right after its throughput, so that both see
        # the machine in the same state.
        vesin_name, ase_name = "vesin (matsciml-dgl)", "ASE neighbor_list (reference)"
        rates = {vesin_name: samples_per_second(dataset, vesin_representation, args.batch_size, args.repeats)}
        splits = {vesin_name: time_split(dataset, vesin_representation, args.batch_size, len(dataset),
                                         args.repeats)}
        rates[ase_name] = samples_per_second(dataset, ase_representation, args.batch_size,
                                             args.reference_repeats)
        reference_frames = min(len(dataset), args.reference_split_frames)
        splits[ase_name] = time_split(dataset, ase_representation, args.batch_size, reference_frames, 1)
        dataset.close()

    print(f"LMDB -> dgl-graph batches of {args.batch_size}, no workers: {len(dataset)} frames of "
          f"{len(first['atomic_numbers'])} atoms from {DEVSET_FILE}, cutoff {args.cutoff_radius} Å, "
          f"{num_edges / len(first['atomic_numbers']):.1f} neighbours/atom; torch {torch.__version__}, "
          f"{torch.get_num_threads()} intra-op thread(s)")
    # Other processes on the 2 cores distort timings (OpenMP workers of
    # torch and DGL then wait for a core); the load average tells the reader.
    print(f"1-minute load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs; target (DESIGN.md): >= 700 samples/s")
    print(f"same edges in both pipelines (every 20th frame): {'yes' if agree else 'NO'}")
    print()
    print(f"{'pipeline':32s} {'samples/s (median)':>19s} {'min':>8s} {'max':>8s} {'passes':>7s}")
    for name, values in rates.items():
        print(f"{name:32s} {statistics.median(values):19.1f} {min(values):8.1f} {max(values):8.1f} "
              f"{len(values):7d}")
    names = list(rates)
    ratio = statistics.median(rates[names[0]]) / statistics.median(rates[names[1]])
    print(f"ratio vesin / reference: {ratio:.1f}x")
    print()
    print(f"time split (median of {args.repeats} passes over all frames for vesin, one pass over "
          f"{reference_frames} frames for the reference):")
    print(f"{'time per sample, µs':32s} {'vesin':>12s} {'share':>7s} {'reference':>12s} {'share':>7s}")
    for step in splits[names[0]]:
        cells = []
        for name in names:
            total = sum(splits[name].values())
            cells.append(f"{splits[name][step] * 1e6:12.1f} {splits[name][step] / total:7.1%}")
        print(f"{step:32s} {' '.join(cells)}")
    totals = [sum(splits[name].values()) * 1e6 for name in names]
    print(f"{'total':32s} {totals[0]:12.1f} {'':7s} {totals[1]:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
