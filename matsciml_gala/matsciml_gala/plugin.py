"""matsciml hook implementations of matsciml-gala: describes the ``gala`` model.

Listing models must stay cheap, so this module does not import torch: the
factory is named by a string and imported only when a model is built.
Hyper-parameter names follow the table of Spellings 2021 (Appendix A):
rank, blocks, width, merge/join functions, invariant mode, value/score/block
normalisation, dropout, activation, normalised products.
"""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import ModelSpec

DEFAULTS: dict[str, object] = {
    "rank": 2,
    "num_blocks": 3,
    "width": 256,
    "merge_fun": "concat",
    "join_fun": "concat",
    "invariant_mode": "full",
    "include_normalized_products": False,
    "value_normalization": "none",
    "score_normalization": "none",
    "block_normalization": "layer",
    "dropout": 0.0,
    "activation": "silu",
    "cutoff_radius": 5.0,
    "chunk_tuple_features": 1_048_576,
}
"""The defaults of :class:`matsciml_gala.model.GALA` (a test keeps them equal): 1,612,804 parameters,
near the 1.5M of the paper's networks."""

SMALL: dict[str, object] = {"num_blocks": 1, "width": 8}
"""The ``small`` preset for CPU tests and smoke runs (over :data:`DEFAULTS`): 1,858 parameters."""

CPU: dict[str, object] = {"num_blocks": 1, "width": 16}
"""The ``cpu`` preset, a model that learns in minutes on two cores: 5,250 parameters."""

PRESETS: dict[str, dict[str, object]] = {"small": SMALL, "cpu": CPU}
"""Chosen with ``model.preset=NAME``; ``matsciml info gala`` lists them with their parameter counts."""

PARAM_HELP: dict[str, str] = {
    "rank": "tuple size of every attention: 2 = pairs of neighbours (geometric products r_i r_j), "
            "1 = single neighbours; rank 3 is not implemented",
    "num_blocks": "permutation-covariant attention blocks (residual, then block_normalization) before the pooling",
    "width": "width of slot features and of the value and score networks = embedding_dim",
    "merge_fun": "how a tuple's slot features combine: mean, or concat (a learned linear map per position)",
    "join_fun": "how the invariants' value and the merged slot features combine: mean, or concat (learned maps)",
    "invariant_mode": "invariants fed to the value network: single (r_i.r_j, |r_i^r_j|), partial (+|r_i|) "
                      "or full (+|r_i|, |r_j|)",
    "include_normalized_products": "also feed the invariants of normalised products (cos and sin of each angle)",
    "value_normalization": "none or layer: LayerNorm after the value network's first layer",
    "score_normalization": "none or layer: LayerNorm after the score network's first layer",
    "block_normalization": "none or layer: LayerNorm of slot features after each block's residual sum",
    "dropout": "probability of zeroing entries of each block's update (training only; 0 = none)",
    "activation": "activation of the value and score networks: silu, relu, gelu, tanh or softplus2",
    "cutoff_radius": "Å; attention weights fade smoothly to zero here; tied to the point cloud's cutoff",
    "chunk_tuple_features": "memory bound: at most this many tuple features (centres x K^rank x width) at once; "
                            "more clouds are processed in chunks and recomputed in backward (same results)",
}

PARAM_RANGES: dict[str, str] = {
    "num_blocks": ">=1",
    "width": ">=1",
    "dropout": "[0,1)",
    "cutoff_radius": ">0",
    "chunk_tuple_features": ">=1",
}
"""Checked before the model is built, so a bad value is one line naming it."""

PARAM_CHOICES: dict[str, tuple[object, ...]] = {
    "rank": (1, 2),
    "merge_fun": ("mean", "concat"),
    "join_fun": ("mean", "concat"),
    "invariant_mode": ("single", "partial", "full"),
    "include_normalized_products": (False, True),
    "value_normalization": ("none", "layer"),
    "score_normalization": ("none", "layer"),
    "block_normalization": ("none", "layer"),
    "activation": ("silu", "relu", "gelu", "tanh", "softplus2"),
}
"""Written out because this module must not import torch (a test keeps them equal to the model's)."""


@hookimpl
def matsciml_models() -> list[ModelSpec]:
    """The GALA backbone on ``point-cloud`` batches."""
    return [
        ModelSpec(
            name="gala",
            summary="Geometric Algebra Attention (Spellings 2021): masked rank-2 attention over neighbour clouds",
            factory="matsciml_gala.model:GALA",
            defaults=dict(DEFAULTS),
            param_help=dict(PARAM_HELP),
            param_ranges=dict(PARAM_RANGES),
            param_choices=dict(PARAM_CHOICES),
            representation="point-cloud",
            representation_distribution="matsciml-pointcloud",
            tied_params={"cutoff_radius": "cutoff_radius"},  # the envelope ends where the clouds do
            presets={name: dict(values) for name, values in PRESETS.items()},
        )
    ]
