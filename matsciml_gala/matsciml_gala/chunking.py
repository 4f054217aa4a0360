"""Run a per-cloud network chunk by chunk of centres, keeping only one chunk's tuples in memory,
through first *and second* derivatives.

Why: a rank-2 layer materialises ``[C, K, K, H]`` tuple features. Training
on energies and forces differentiates the energy with ``create_graph=True``
(forces) and then differentiates the force loss again; the graph of the
first derivative keeps every tuple activation of the forward pass alive
until the second backward. ``torch.utils.checkpoint`` does not help there:
the activations it recomputes during the first backward are captured by the
double-backward graph and stay alive all the same. At batch 32 of 83-atom
frames, K = 32, H = 64 that is tens of GiB.

:func:`run_in_chunks` wraps each chunk in :class:`_Chunk`, whose backward
is itself a recomputing function (:class:`_ChunkVJP`): the forward keeps
only the chunk's inputs, the first backward recomputes the chunk and returns
its vector-Jacobian product without a graph, and the second backward
recomputes the chunk once more, differentiates twice and frees it. Peak
memory is one chunk's double-backward working set, at the price of
recomputing each chunk's forward pass up to three times. Third derivatives
are not supported (no task takes them).

The network must be a pure function of its tensor arguments (parameters
passed explicitly, :func:`torch.func.functional_call`): anything random,
such as a dropout mask, is drawn outside and passed in.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Network = Callable[..., torch.Tensor]


def _with_grad(tensors: Sequence[torch.Tensor], wanted: Sequence[bool]) -> list[torch.Tensor]:
    """Detached leaves of ``tensors``; floating ones flagged in ``wanted`` require grad."""
    return [t.detach().requires_grad_(bool(w) and t.is_floating_point()) for t, w in zip(tensors, wanted)]


class _ChunkVJP(torch.autograd.Function):
    """``(grad_out, *inputs) -> d<out, grad_out>/d inputs`` by recomputation; differentiable once more."""

    @staticmethod
    def forward(ctx, network: Network, wanted: tuple[bool, ...], grad_out: torch.Tensor,  # type: ignore[override]
                *inputs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        ctx.network, ctx.wanted = network, wanted
        ctx.save_for_backward(grad_out, *inputs)
        with torch.enable_grad():
            leaves = _with_grad(inputs, wanted)
            output = network(*leaves)
            targets = [leaf for leaf in leaves if leaf.requires_grad]
            grads = iter(torch.autograd.grad(output, targets, grad_out, allow_unused=True))
        return tuple(_zero_if_none(next(grads), leaf) if leaf.requires_grad else None for leaf in leaves)

    @staticmethod
    def backward(ctx, *grad_grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_out, *inputs = ctx.saved_tensors
        needs = ctx.needs_input_grad  # (network, wanted, grad_out, *inputs)
        with torch.enable_grad():
            leaves = _with_grad(inputs, [w or n for w, n in zip(ctx.wanted, needs[3:])])
            cotangent = grad_out.detach().requires_grad_(True)
            output = ctx.network(*leaves)
            firsts = [(leaf, gg) for leaf, gg in zip(leaves, grad_grads)
                      if leaf.requires_grad and gg is not None]
            grads = torch.autograd.grad(output, [leaf for leaf, _ in firsts], cotangent, create_graph=True,
                                        allow_unused=True)
            used = [(g, gg) for g, (_, gg) in zip(grads, firsts) if g is not None]
            targets = [cotangent] + [leaf for leaf, n in zip(leaves, needs[3:]) if n and leaf.requires_grad]
            if used:
                seconds = list(torch.autograd.grad([g for g, _ in used], targets, [gg for _, gg in used],
                                                   allow_unused=True))
            else:
                seconds = [None] * len(targets)
        grad_cotangent = seconds.pop(0)
        results: list[torch.Tensor | None] = []
        for leaf, n in zip(leaves, needs[3:]):
            results.append(_zero_if_none(seconds.pop(0), leaf) if n and leaf.requires_grad else None)
        return (None, None, grad_cotangent, *results)


class _Chunk(torch.autograd.Function):
    """``network(*inputs)`` without a saved graph; its backward is a :class:`_ChunkVJP`."""

    @staticmethod
    def forward(ctx, network: Network, *inputs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.network = network
        ctx.save_for_backward(*inputs)
        return network(*inputs)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        inputs = ctx.saved_tensors
        wanted = tuple(ctx.needs_input_grad[1:])
        return (None, *_ChunkVJP.apply(ctx.network, wanted, grad_out, *inputs))


def _zero_if_none(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def run_in_chunks(network: Network, chunked: Sequence[torch.Tensor], shared: Sequence[torch.Tensor],
                  chunk_size: int) -> torch.Tensor:
    """``network(*chunked, *shared)`` computed over slices of ``chunked``'s first axis and concatenated.

    Args:
        network: a pure function, row ``c`` of its output depending on row
            ``c`` of the ``chunked`` tensors only.
        chunked: tensors sliced along their first axis (the clouds).
        shared: tensors passed whole to every chunk (the parameters).
        chunk_size: rows per chunk (at least 1).

    When no gradient is being recorded, or everything fits one chunk, this is
    a plain call (per chunk without a graph, all at once with one).
    """
    rows = int(chunked[0].shape[0])
    if rows <= chunk_size:
        return network(*chunked, *shared)
    pieces = []
    recording = torch.is_grad_enabled() and any(t.requires_grad for t in (*chunked, *shared))
    for start in range(0, rows, chunk_size):
        part = [t[start:start + chunk_size] for t in chunked]
        pieces.append(_Chunk.apply(network, *part, *shared) if recording else network(*part, *shared))
    return torch.cat(pieces, dim=0)
