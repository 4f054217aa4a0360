"""One Geometric Algebra Attention layer on padded, masked neighbour clouds.

Spellings 2021 (arXiv 2110.02393), eq. 1-5: for every tuple of slots
(``(j)`` at rank 1, ``(i, j)`` at rank 2) of a cloud

    q_t = invariants of the geometric product of the tuple's vectors
    v_t = join(value_net(q_t), merge(x_i, x_j))
    w_t = softmax over tuples of score_net(v_t)
    y   = sum_t w_t v_t

summed over ``j`` for a permutation-covariant layer (one output per slot
``i``, ``reduce=False``) or over all tuples for the permutation-invariant
pooling (one output per cloud, ``reduce=True``).

What differs from the author's package, and why:

* Masks enter the attention itself: a tuple is real only when all its slots
  are (``mask``), an empty slot's score is replaced before ``exp`` and its
  weight is exactly zero, so nothing of an empty slot (its zero vector, the
  centre's features it holds, how many there are) reaches the output.
* Smooth at the cutoff: each tuple's weight is the product of the envelopes
  of its neighbour distances, ``f_i f_j``, applied inside the normalisation
  with a null tuple of logit 0 and value 0::

      a_t = f_t exp(s_t) / (1 + sum_u f_u exp(s_u))

  A neighbour entering the cutoff enters with zero weight and changes no
  other weight discontinuously (a plain softmax renormalises, so a new
  neighbour would take its share at once), and a cloud whose last
  neighbour leaves goes smoothly to zero. The upstream ``weights`` input
  multiplies values after the softmax by ``(f_i f_j)^(1/2)``, whose slope is
  infinite where ``f = 0`` (NaN gradients) and whose softmax still jumps.
* ``merge_fun``/``join_fun`` "concat" are linear maps of each slot's
  features, applied per slot ``[C, K, H]`` and broadcast onto tuples, and
  the join's map of the value net's output is folded into its last layer:
  fewer ``[C, K, K, H]`` products, the same function.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from matsciml.nn import make_activation
from matsciml_gala.algebra import num_invariants, tuple_invariants

COMBINE_FUNCTIONS = ("mean", "concat")
NORMALIZATIONS = ("none", "layer")


def make_normalization(kind: str, width: int) -> nn.Module:
    """``none`` (identity) or ``layer`` (LayerNorm over the feature axis: each tuple or slot on its own)."""
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"GALA: normalization must be one of {', '.join(NORMALIZATIONS)}, got {kind!r}")


class GeometricAlgebraAttention(nn.Module):
    """Masked, envelope-weighted GALA layer (module docstring).

    Args:
        width: H, the width of slot features in and out.
        rank: 1 or 2, the tuple size.
        reduce: False: one output per slot ``[C, K, H]``; True: one per cloud ``[C, H]``.
        merge_fun, join_fun: ``mean`` (no parameters) or ``concat`` (a learned
            linear map per tuple position / per joined representation).
        invariant_mode, include_normalized_products: which invariants
            (:func:`matsciml_gala.algebra.tuple_invariants`).
        value_normalization, score_normalization: ``none`` or ``layer``, after
            the first linear layer of the value and score networks.
        activation: a name of :data:`matsciml.nn.ACTIVATIONS`.
    """

    def __init__(self, width: int, rank: int, reduce: bool, merge_fun: str, join_fun: str, invariant_mode: str,
                 include_normalized_products: bool, value_normalization: str, score_normalization: str,
                 activation: str) -> None:
        super().__init__()
        for name, value in (("merge_fun", merge_fun), ("join_fun", join_fun)):
            if value not in COMBINE_FUNCTIONS:
                raise ValueError(f"GALA: {name} must be one of {', '.join(COMBINE_FUNCTIONS)}, got {value!r}")
        self.rank, self.reduce = rank, reduce
        self.merge_fun, self.join_fun = merge_fun, join_fun
        self.invariant_mode = invariant_mode
        self.include_normalized_products = include_normalized_products
        invariants = num_invariants(rank, invariant_mode, include_normalized_products)
        # value_net: invariants -> H -> H; its last linear map is applied folded with the join (forward)
        self.value_in = nn.Linear(invariants, width)
        self.value_norm = make_normalization(value_normalization, width)
        self.value_out = nn.Linear(width, width)
        # score_net: joined tuple value -> H -> 1 logit
        self.score_in = nn.Linear(width, width)
        self.score_norm = make_normalization(score_normalization, width)
        self.score_out = nn.Linear(width, 1)
        self.activation = make_activation(activation)
        if merge_fun == "concat":
            self.merge_kernels = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(rank))
        if join_fun == "concat":
            self.join_kernels = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(2))

    def _slot_terms(self, features: torch.Tensor) -> list[torch.Tensor]:
        """The merged slot features as joined, one ``[C, K, H]`` term per tuple position (summed on broadcast)."""
        if self.merge_fun == "concat":
            terms = [kernel(features) for kernel in self.merge_kernels]
        else:
            terms = [features / self.rank] * self.rank
        if self.join_fun == "concat":
            return [self.join_kernels[1](term) for term in terms]
        return [term / 2 for term in terms]

    def _folded_value_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of ``join(value_out(.))``'s invariant branch as one linear map."""
        weight, bias = self.value_out.weight, self.value_out.bias
        if self.join_fun == "concat":
            kernel = self.join_kernels[0].weight
            return kernel @ weight, kernel @ bias
        return weight / 2, bias / 2

    def forward(self, vectors: torch.Tensor, features: torch.Tensor, weights: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """One attention step over each cloud.

        Args:
            vectors: ``[C, K, 3]`` neighbour vectors (zero in empty slots).
            features: ``[C, K, H]`` slot features.
            weights: ``[C, K]`` envelope of each slot's distance, zero in empty slots.
            mask: ``[C, K]`` bool, True on real neighbours.

        Returns:
            ``[C, K, H]`` (``reduce=False``; zero in empty slots) or ``[C, H]`` (``reduce=True``).
        """
        invariants = tuple_invariants(vectors, self.rank, self.invariant_mode, self.include_normalized_products)
        hidden = self.activation(self.value_norm(self.value_in(invariants.to(features.dtype))))  # [C, K, (K,) H]
        # v_t = hidden_t W + b + sum over positions of slot terms; never materialised: the score network's
        # first layer is linear too, so it is applied to hidden_t folded with W, and the output sum of
        # a_t v_t is taken over hidden_t first (one [C, K, K, H] x [H, H] product per layer instead of three)
        weight, bias = self._folded_value_out()
        slot_terms = self._slot_terms(features)  # per position, [C, K, H]
        score_weight = self.score_in.weight @ weight
        score_bias = self.score_in.weight @ bias + self.score_in.bias
        score_slots = [functional.linear(term, self.score_in.weight) for term in slot_terms]
        pre_scores = functional.linear(hidden, score_weight, score_bias)
        if self.rank == 1:
            pre_scores = pre_scores + score_slots[0]
            tuple_weights, tuple_mask = weights, mask
        else:
            pre_scores = pre_scores + score_slots[0][:, :, None, :] + score_slots[1][:, None, :, :]
            tuple_weights = weights[:, :, None] * weights[:, None, :]
            tuple_mask = mask[:, :, None] & mask[:, None, :]
        scores = self.score_out(self.activation(self.score_norm(pre_scores)))[..., 0]
        attention = self._attention(scores, tuple_weights, tuple_mask)
        if self.rank == 1:
            if not self.reduce:
                return attention[..., None] * (functional.linear(hidden, weight, bias) + slot_terms[0])
            total = attention.sum(dim=1)[:, None]
            return (functional.linear((hidden * attention[..., None]).sum(dim=1), weight) + total * bias
                    + torch.einsum("cjh,cj->ch", slot_terms[0], attention))
        if not self.reduce:  # y_i = sum_j a_ij v_ij
            row = attention.sum(dim=2)[..., None]  # [C, K, 1]
            return (functional.linear((hidden * attention[..., None]).sum(dim=2), weight)
                    + row * (bias + slot_terms[0]) + (attention[..., None] * slot_terms[1][:, None, :, :]).sum(dim=2))
        total = attention.sum(dim=(1, 2))[:, None]
        return (functional.linear((hidden * attention[..., None]).sum(dim=(1, 2)), weight) + total * bias
                + torch.einsum("cih,ci->ch", slot_terms[0], attention.sum(dim=2))
                + torch.einsum("cjh,cj->ch", slot_terms[1], attention.sum(dim=1)))

    def _attention(self, scores: torch.Tensor, tuple_weights: torch.Tensor, tuple_mask: torch.Tensor) -> torch.Tensor:
        """``a_t = w_t exp(s_t) / (1 + sum_u w_u exp(s_u))`` over j (covariant) or all tuples (pooling).

        Empty tuples (``tuple_mask`` False) have weight exactly 0 and their scores never reach ``exp``.
        """
        scores = torch.where(tuple_mask, scores, torch.zeros_like(scores))
        tuple_weights = tuple_weights.to(scores.dtype)
        if self.rank == 1 and not self.reduce:  # each slot is its own tuple: a gate
            shift = scores.clamp(min=0.0).detach()
            numerators = tuple_weights * torch.exp(scores - shift)
            return numerators / (torch.exp(-shift) + numerators)
        axes = tuple(range(1, scores.dim())) if self.reduce else tuple(range(2, scores.dim()))
        masked = torch.where(tuple_mask, scores, torch.full_like(scores, -torch.inf))
        # any shift gives the same weights; the largest real score (or 0, the null tuple's) keeps exp <= 1
        shift = torch.amax(masked, dim=axes, keepdim=True).clamp(min=0.0).detach()
        numerators = tuple_weights * torch.exp(scores - shift)
        return numerators / (torch.exp(-shift) + numerators.sum(dim=axes, keepdim=True))
