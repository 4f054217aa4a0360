"""The GALA backbone: atom-centred neighbour clouds in, one feature vector per centre atom out.

Spellings, "Geometric Algebra Attention Networks for Small Point Clouds",
arXiv 2110.02393 (2021), on the ``point-cloud`` representation of
matsciml-pointcloud. The data flow, for each cloud (a centre atom and its K
nearest neighbours within the cutoff)::

    slot features  x_j = E[Z_centre] + E[Z_j]           (symmetric one-hot, linear map)  [K, H]
    vectors        r_j = pos_j + shift_j - pos_centre, in Å                                [K, 3]
    envelope       f_j = PolynomialEnvelope(|r_j|), 0 in empty slots                      [K]
    num_blocks x   x <- block_norm(x + dropout(GALA_rank(r, x; reduce=False)))
    pooling        y   = GALA_rank(r, x; reduce=True)                                      [H]

``atom_features`` has one row per atom of the batch: a centre atom's row is
its cloud's ``y``; an atom that is not a centre (``centres=oc20`` leaves most
of a slab's subsurface out) gets zeros, so energy tasks that sum per-atom
energies sum over the centres. Everything geometric is computed from
``batch.pos`` (forces and stress by autograd), every attention is masked
and envelope-weighted (:mod:`matsciml_gala.attention`), and the clouds are
processed in chunks whose tuples are recomputed rather than stored
(:mod:`matsciml_gala.chunking`), so memory stays bounded when training on
forces.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call

from matsciml.interfaces import BackboneOutput
from matsciml.nn import ElementEmbedding, PolynomialEnvelope, make_activation
from matsciml_gala.algebra import INVARIANT_MODES, safe_norm
from matsciml_gala.attention import GeometricAlgebraAttention, make_normalization
from matsciml_gala.chunking import run_in_chunks

if TYPE_CHECKING:
    from matsciml.batch import Batch

RANKS = (1, 2)
ENVELOPE_EXPONENT = 6


class _CloudNetwork(nn.Module):
    """The blocks and the pooling of one batch of clouds; a pure function of its arguments."""

    def __init__(self, width: int, rank: int, num_blocks: int, merge_fun: str, join_fun: str, invariant_mode: str,
                 include_normalized_products: bool, value_normalization: str, score_normalization: str,
                 block_normalization: str, activation: str, cutoff_radius: float) -> None:
        super().__init__()
        layer = dict(width=width, rank=rank, merge_fun=merge_fun, join_fun=join_fun, invariant_mode=invariant_mode,
                     include_normalized_products=include_normalized_products,
                     value_normalization=value_normalization, score_normalization=score_normalization,
                     activation=activation)
        self.blocks = nn.ModuleList(GeometricAlgebraAttention(reduce=False, **layer) for _ in range(num_blocks))
        self.block_norms = nn.ModuleList(make_normalization(block_normalization, width) for _ in range(num_blocks))
        self.pooling = GeometricAlgebraAttention(reduce=True, **layer)
        self.envelope = PolynomialEnvelope(cutoff_radius, ENVELOPE_EXPONENT)
        self.cutoff_radius = cutoff_radius

    def forward(self, vectors: torch.Tensor, features: torch.Tensor, mask: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """``[c, K, 3]`` vectors in Å, ``[c, K, H]`` features, ``[c, K]`` mask, optional
        ``[num_blocks, c, K, H]`` dropout multipliers -> ``[c, H]`` cloud features."""
        weights = self.envelope(safe_norm(vectors)) * mask.to(vectors.dtype)  # [c, K]
        # invariants in Å, not divided by the cutoff: at 1/cutoff scale the products of vectors vary so
        # little with the positions that force training sat at zero forces for many epochs (LiPS)
        for index, (block, norm) in enumerate(zip(self.blocks, self.block_norms)):
            update = block(vectors, features, weights, mask)
            if keep is not None:
                update = update * keep[index]
            features = norm(features + update)
        return self.pooling(vectors, features, weights, mask)


class GALA(nn.Module):
    """Geometric Algebra Attention network on ``point-cloud`` batches.

    Args:
        rank: tuple size of every attention layer: 2 (pairs of neighbours,
            the paper's usual choice) or 1 (single neighbours, a cheap ablation).
        num_blocks: permutation-covariant attention blocks before the pooling layer.
        width: H, the width of slot features, of the value and score
            networks' hidden layers, and ``embedding_dim``.
        merge_fun: how a tuple's slot features combine: ``mean`` or ``concat``
            (a learned map per tuple position, summed).
        join_fun: how the invariants' values and the merged slot features
            combine: ``mean`` or ``concat`` (a learned map each, summed).
        invariant_mode: ``single``, ``partial`` or ``full``: the invariants of
            only the final geometric product, of the products on the way to
            it, or of every sub-product (:mod:`matsciml_gala.algebra`).
        include_normalized_products: also feed the invariants of the
            normalised products (cosine and sine of each pair's angle).
        value_normalization, score_normalization: ``none`` or ``layer``:
            LayerNorm after the first layer of the value / score network.
        block_normalization: ``none`` or ``layer``: LayerNorm of the slot
            features after each block's residual sum.
        dropout: probability of zeroing a block's update (training only).
        activation: a name of :data:`matsciml.nn.ACTIVATIONS`.
        cutoff_radius: Å, where the envelope of the attention weights reaches
            zero; tied to the representation's cutoff.
        chunk_tuple_features: at most this many tuple features (centres x
            K^rank x width) are computed at once; clouds beyond are processed
            chunk by chunk and recomputed in backward (memory, not results).
    """

    representation = "point-cloud"
    """The representation whose batches ``forward`` takes (matsciml-pointcloud)."""

    structure_embedding_dim = None

    def __init__(self, rank: int = 2, num_blocks: int = 3, width: int = 256, merge_fun: str = "concat",
                 join_fun: str = "concat", invariant_mode: str = "full", include_normalized_products: bool = False,
                 value_normalization: str = "none", score_normalization: str = "none",
                 block_normalization: str = "layer", dropout: float = 0.0, activation: str = "silu",
                 cutoff_radius: float = 5.0, chunk_tuple_features: int = 1_048_576) -> None:
        super().__init__()
        if rank not in RANKS:
            raise ValueError(f"GALA: rank must be one of {RANKS} (rank 3 is not implemented: its tuples cost "
                             f"K^3 x width per cloud), got {rank!r}")
        for name, value in (("num_blocks", num_blocks), ("width", width),
                            ("chunk_tuple_features", chunk_tuple_features)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"GALA: {name} must be a positive integer, got {value!r}")
        if invariant_mode not in INVARIANT_MODES:
            raise ValueError(f"GALA: invariant_mode must be one of {', '.join(INVARIANT_MODES)}, "
                             f"got {invariant_mode!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"GALA: dropout must be in [0, 1), got {dropout!r}")
        make_activation(activation)  # fail here, with the known names, not deep inside a layer
        self.rank, self.num_blocks, self.width = int(rank), int(num_blocks), int(width)
        self.embedding_dim = self.width
        self.dropout = float(dropout)
        self.cutoff_radius = float(cutoff_radius)
        self.chunk_tuple_features = int(chunk_tuple_features)
        self.embedding = ElementEmbedding(self.width)
        self.network = _CloudNetwork(self.width, self.rank, self.num_blocks, merge_fun, join_fun, invariant_mode,
                                     bool(include_normalized_products), value_normalization, score_normalization,
                                     block_normalization, activation, self.cutoff_radius)

    def centres_per_chunk(self, num_slots: int) -> int:
        """Clouds processed at once for ``num_slots`` (K) slots per cloud."""
        return max(1, self.chunk_tuple_features // (num_slots ** self.rank * self.width))

    def forward(self, batch: Batch) -> BackboneOutput:
        """``atom_features`` ``[N, width]``: each centre atom's cloud features, zeros for other atoms.

        Args:
            batch: a :class:`matsciml.batch.Batch` whose ``inputs`` is a
                ``PointClouds`` (matsciml-pointcloud); vectors come from
                ``batch.pos`` and the clouds' periodic shifts.
        """
        from matsciml_pointcloud.representation import pair_elements, relative_vectors

        clouds = batch.inputs
        dtype = next(self.parameters()).dtype
        # the parameters' dtype rules; the cast is differentiable, so forces still reach batch.pos
        vectors = relative_vectors(batch).to(dtype)  # [C, K, 3], zero in empty slots
        z_centre, z_neighbour = pair_elements(batch)
        features = self.embedding(z_centre)[:, None, :] + self.embedding(z_neighbour)  # [C, K, H]
        mask = clouds.mask.to(vectors.device)
        chunked = [vectors, features, mask]
        if self.training and self.dropout > 0:
            keep = torch.rand((self.num_blocks, *features.shape), dtype=dtype, device=features.device)
            chunked.append(((keep >= self.dropout).to(dtype) / (1.0 - self.dropout)).transpose(0, 1))
        names = [name for name, _ in self.network.named_parameters()]
        parameters = [parameter for _, parameter in self.network.named_parameters()]

        def network(vectors: torch.Tensor, features: torch.Tensor, mask: torch.Tensor,
                    *rest: torch.Tensor) -> torch.Tensor:
            keep = rest[0].transpose(0, 1) if len(rest) > len(parameters) else None
            values = dict(zip(names, rest[len(rest) - len(parameters):]))
            return functional_call(self.network, values, (vectors, features, mask, keep))

        clouds_out = run_in_chunks(network, chunked, parameters, self.centres_per_chunk(mask.shape[1]))
        atom_features = clouds_out.new_zeros((batch.pos.shape[0], self.width))
        atom_features = atom_features.index_copy(0, clouds.centres.to(vectors.device), clouds_out)
        return BackboneOutput(atom_features=atom_features)
