"""matsciml hook implementations of matsciml-egnn: describes the ``egnn`` model.

Listing models must stay cheap, so this module imports neither torch nor
DGL: the factory is named by a string and imported only when a model is built.
"""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import ModelSpec
from matsciml_dgl.plugin import DGL_ADVICE  # the one statement of the DGL pins (no torch, no DGL import)

DEFAULTS: dict[str, object] = {
    "hidden_dim": 64,
    "num_layers": 3,
    "activation": "silu",
    "attention": True,
    "residual": True,
    "layer_norm": False,
    "cutoff_radius": 6.0,
    "num_radial": 16,
}
"""The defaults of :class:`matsciml_egnn.model.EGNN` (a test keeps them equal)."""

PARAM_HELP: dict[str, str] = {
    "hidden_dim": "width of atom embeddings, messages and hidden layers (= output embedding width)",
    "num_layers": "number of E_GCL message-passing layers",
    "activation": "activation function: silu (paper), relu, gelu, tanh or softplus2",
    "attention": "gate each message with sigmoid(Linear(m_ij)) (the paper's soft edge inference)",
    "residual": "residual node update h' = h + phi_h(h, m)",
    "layer_norm": "LayerNorm on node features after each layer (paper: off)",
    "cutoff_radius": "Å; messages fade to zero smoothly here; at most the graph's cutoff (6 Å default)",
    "num_radial": "Gaussian radial basis functions of the distance (0 = the paper's single squared distance)",
}

PARAM_RANGES: dict[str, str] = {
    "hidden_dim": ">=1",
    "num_layers": ">=1",
    "cutoff_radius": ">0",
    "num_radial": ">=0",
}
"""Checked before the model is built, so a bad value is one line naming it."""

PARAM_CHOICES: dict[str, tuple[str, ...]] = {"activation": ("silu", "relu", "gelu", "tanh", "softplus2")}
"""The names of :data:`matsciml.nn.ACTIVATIONS`, written out because this module
must not import torch (a test keeps them equal)."""


@hookimpl
def matsciml_models() -> list[ModelSpec]:
    """The E(n)-GNN backbone on ``dgl-graph`` batches."""
    return [
        ModelSpec(
            name="egnn",
            summary="E(n)-equivariant GNN (Satorras et al. 2021), invariant per-atom embeddings",
            factory="matsciml_egnn.model:EGNN",
            defaults=dict(DEFAULTS),
            param_help=dict(PARAM_HELP),
            param_ranges=dict(PARAM_RANGES),
            param_choices=dict(PARAM_CHOICES),
            representation="dgl-graph",
            representation_distribution="matsciml-dgl",
            tied_params={"cutoff_radius": "cutoff_radius"},  # the envelope ends where the graph does
            requires={"dgl": DGL_ADVICE},
        )
    ]
