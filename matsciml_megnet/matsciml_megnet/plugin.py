"""matsciml hook implementations of matsciml-megnet: describes the ``megnet`` model.

Listing models must stay cheap, so this module imports neither torch nor
DGL: the factory is named by a string and imported only when a model is built.
"""
from __future__ import annotations

from matsciml.hookspecs import hookimpl
from matsciml.specs import ModelSpec
from matsciml_dgl.plugin import DGL_ADVICE  # the one statement of the DGL pins (no torch, no DGL import)

DEFAULTS: dict[str, object] = {
    "num_blocks": 3,
    "atom_embedding_dim": 32,
    "num_gaussians": 100,
    "gaussian_width": 0.5,
    "state_dim": 2,
    "dense_hidden": 128,
    "dense_out": 64,
    "block_hidden": 160,
    "set2set_iterations": 3,
    "readout_hidden": 128,
    "structure_dim": 64,
    "dropout": 0.0,
    "activation": "softplus2",
    "cutoff_radius": 5.0,
}
"""The defaults of :class:`matsciml_megnet.model.MEGNet` (a test keeps them equal): 927,424 parameters,
the size the Open MatSci ML Toolkit paper trained (986k for IS2RE, 1.2M for S2EF in its Table 1) with
the block structure of Chen et al.; their own, narrower layer sizes are the ``original`` preset."""

ORIGINAL: dict[str, object] = {
    "atom_embedding_dim": 16,
    "dense_hidden": 64,
    "dense_out": 32,
    "block_hidden": 64,
    "readout_hidden": 32,
    "structure_dim": 16,
}
"""The layer sizes of Chen et al. 2019 (element embedding 16, dense [64, 32], blocks [64, 64, 32],
readout [32, 16]): 189,968 parameters, preset ``original``."""

SMALL: dict[str, object] = {
    "num_blocks": 2,
    "atom_embedding_dim": 8,
    "num_gaussians": 16,
    "dense_hidden": 16,
    "dense_out": 8,
    "block_hidden": 16,
    "set2set_iterations": 2,
    "readout_hidden": 16,
    "structure_dim": 8,
}
"""The ``small`` preset for CPU tests and smoke runs (over :data:`DEFAULTS`): 10,216 parameters."""

PRESETS: dict[str, dict[str, object]] = {"small": SMALL, "original": ORIGINAL}
"""Chosen with ``model.preset=NAME``; ``matsciml info megnet`` lists them with their parameter counts."""

PARAM_HELP: dict[str, str] = {
    "num_blocks": "number of MEGNet blocks (bond, then atom, then state update each)",
    "atom_embedding_dim": "width of the learned element embedding (Chen et al.: 16)",
    "num_gaussians": "Gaussians exp(-(d-mu)^2/width^2) expanding bond lengths, centres on [0, cutoff_radius + 1] Å",
    "gaussian_width": "Å; the width of the bond-length Gaussians (paper: 0.5)",
    "state_dim": "width of the global state input: per-structure model inputs (total_charge...) "
                 "concatenated and zero-padded; zeros when the data has none (paper: 2)",
    "dense_hidden": "hidden width of the dense pre-blocks on atoms, bonds and state (Chen et al.: 64)",
    "dense_out": "width of atom, bond and state vectors between blocks (Chen et al.: 32) = embedding_dim",
    "block_hidden": "hidden width of the bond, atom and state update MLPs [h, h, dense_out] (Chen et al.: 64)",
    "set2set_iterations": "processing steps of the Set2Set readouts over atoms and over bonds",
    "readout_hidden": "hidden width of the MLP on [Set2Set(atoms), Set2Set(bonds), state]",
    "structure_dim": "width of structure_features, the per-structure embedding (Chen et al.'s last hidden: 16)",
    "dropout": "dropout probability after each update MLP (0 = none)",
    "activation": "activation function: softplus2 (paper), silu, relu, gelu or tanh",
    "cutoff_radius": "Å; bonds fade to zero smoothly here; tied to the graph's cutoff (paper: 5 Å for crystals)",
}

PARAM_RANGES: dict[str, str] = {
    "num_blocks": ">=1",
    "atom_embedding_dim": ">=1",
    "num_gaussians": ">=2",
    "gaussian_width": ">0",
    "state_dim": ">=1",
    "dense_hidden": ">=1",
    "dense_out": ">=1",
    "block_hidden": ">=1",
    "set2set_iterations": ">=1",
    "readout_hidden": ">=1",
    "structure_dim": ">=1",
    "dropout": "[0,1)",
    "cutoff_radius": ">0",
}
"""Checked before the model is built, so a bad value is one line naming it."""

PARAM_CHOICES: dict[str, tuple[str, ...]] = {"activation": ("silu", "relu", "gelu", "tanh", "softplus2")}
"""The names of :data:`matsciml.nn.ACTIVATIONS`, written out because this module
must not import torch (a test keeps them equal)."""


@hookimpl
def matsciml_models() -> list[ModelSpec]:
    """The MEGNet backbone on ``dgl-graph`` batches."""
    return [
        ModelSpec(
            name="megnet",
            summary="MEGNet (Chen et al. 2019): atom, bond and global-state updates, Set2Set readout",
            factory="matsciml_megnet.model:MEGNet",
            defaults=dict(DEFAULTS),
            param_help=dict(PARAM_HELP),
            param_ranges=dict(PARAM_RANGES),
            param_choices=dict(PARAM_CHOICES),
            representation="dgl-graph",
            representation_distribution="matsciml-dgl",
            tied_params={"cutoff_radius": "cutoff_radius"},  # the envelope ends where the graph does
            requires={"dgl": DGL_ADVICE},
            presets={name: dict(values) for name, values in PRESETS.items()},
        )
    ]
