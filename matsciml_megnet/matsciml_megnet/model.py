"""The MEGNet backbone: atoms, bonds and a global state in; per-atom and per-structure features out.

Chen, Ye, Zuo, Zheng, Ong, "Graph Networks as a Universal Machine Learning
Framework for Molecules and Crystals", Chem. Mater. 31, 3564 (2019), on the
``dgl-graph`` representation of matsciml-dgl.

The data flow::

    atoms  Z -> ElementEmbedding (16)            -> dense [64, 32]
    bonds  d -> Gaussians on [0, r_c + 1], w 0.5 -> x f(d) -> dense [64, 32]
    state  per-structure inputs or zeros (2)     -> dense [64, 32]
    3 x MEGNet block (bonds, atoms, state; MLPs [64, 64, 32]; residual;
        blocks after the first start with a dense pre-block [64, 32])
    atom_features      = the final atom vectors             [N, 32]
    structure_features = MLP([Set2Set(atoms), Set2Set(bonds), state]) [B, 16]

Physics, where the upstream toolkits fall short: bond lengths are computed
here from ``batch.pos`` and the graph's periodic image shifts (forces are
-dE/dpos by autograd, periodic images included), positions never enter as
features (invariance), and a cosine cutoff envelope f(d) multiplies the bond
features and weights every aggregation of bonds, so energies and forces are
continuous when atoms cross the cutoff.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from matsciml.fields import UnknownFieldError, field_spec
from matsciml.interfaces import BackboneOutput
from matsciml.nn import CosineCutoff, ElementEmbedding, GaussianRadialBasis, edge_vectors, make_activation
from matsciml_megnet.blocks import MEGNetBlock, Set2Set, mlp

if TYPE_CHECKING:
    from matsciml.batch import Batch


class MEGNet(nn.Module):
    """MEGNet graph network with a global state vector.

    Args:
        num_blocks: MEGNet blocks (paper: 3).
        atom_embedding_dim: width of the element embedding (paper: 16).
        num_gaussians: Gaussians expanding each bond length, centred evenly on
            [0, cutoff_radius + 1] Å (paper: 100).
        gaussian_width: ``w`` in exp(-(d - mu)^2 / w^2), Å (paper: 0.5).
        state_dim: width of the state input. The per-structure model inputs of
            the batch (``batch.input_fields`` declared per structure, such as
            ``total_charge``), flattened and concatenated in key order, fill
            its first entries; the rest are zeros, and without such inputs the
            state is all zeros (the paper's [0, 0]). More input numbers than
            ``state_dim`` is an error.
        dense_hidden, dense_out: the dense pre-blocks ``[dense_hidden,
            dense_out]`` (paper: [64, 32]); ``dense_out`` is the width of every
            atom, bond and state vector, and ``embedding_dim``.
        block_hidden: the update MLPs are ``[block_hidden, block_hidden, dense_out]``.
        set2set_iterations: processing steps of both Set2Set readouts.
        readout_hidden, structure_dim: the MLP ``[readout_hidden,
            structure_dim]`` on the concatenated readouts; ``structure_dim`` is
            ``structure_embedding_dim``.
        dropout: dropout after each update MLP (training only).
        activation: a name of :data:`matsciml.nn.ACTIVATIONS` (paper: softplus2).
        cutoff_radius: Å, where the bond envelope reaches zero; tied to the
            graph's cutoff.

    Energy tasks sum per-atom energies read from ``atom_features``
    (extensive, exact for supercells); property regression reads
    ``structure_features`` (intensive: Set2Set averages and the state do not
    grow with the cell).
    """

    representation = "dgl-graph"
    """The representation whose batches ``forward`` takes (matsciml-dgl)."""

    def __init__(self, num_blocks: int = 3, atom_embedding_dim: int = 32, num_gaussians: int = 100,
                 gaussian_width: float = 0.5, state_dim: int = 2, dense_hidden: int = 128, dense_out: int = 64,
                 block_hidden: int = 160, set2set_iterations: int = 3, readout_hidden: int = 128,
                 structure_dim: int = 64, dropout: float = 0.0, activation: str = "softplus2",
                 cutoff_radius: float = 5.0) -> None:
        super().__init__()
        for name, value in (("num_blocks", num_blocks), ("atom_embedding_dim", atom_embedding_dim),
                            ("state_dim", state_dim), ("dense_hidden", dense_hidden), ("dense_out", dense_out),
                            ("block_hidden", block_hidden), ("set2set_iterations", set2set_iterations),
                            ("readout_hidden", readout_hidden), ("structure_dim", structure_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"MEGNet: {name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MEGNet: dropout must be in [0, 1), got {dropout!r}")
        make_activation(activation)  # fail here, with the known names, not deep inside a layer
        self.embedding_dim = dense_out
        self.structure_embedding_dim = structure_dim
        self.state_dim = state_dim
        self.cutoff_radius = float(cutoff_radius)
        self.cutoff = CosineCutoff(cutoff_radius)
        self.radial_basis = GaussianRadialBasis(num_gaussians, start=0.0, stop=self.cutoff_radius + 1.0,
                                                width=gaussian_width)
        self.embedding = ElementEmbedding(atom_embedding_dim)
        self.encode_atoms = mlp([atom_embedding_dim, dense_hidden, dense_out], activation)
        self.encode_bonds = mlp([num_gaussians, dense_hidden, dense_out], activation)
        self.encode_state = mlp([state_dim, dense_hidden, dense_out], activation)
        self.blocks = nn.ModuleList(
            MEGNetBlock(dense_out, dense_hidden, block_hidden, activation, pre_dense=index > 0, dropout=dropout)
            for index in range(num_blocks)
        )
        self.atom_set2set = Set2Set(dense_out, set2set_iterations)
        self.bond_set2set = Set2Set(dense_out, set2set_iterations)
        self.readout = mlp([5 * dense_out, readout_hidden, structure_dim], activation)

    def state_input(self, batch: Batch, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The state input ``[B, state_dim]``: per-structure model inputs, zero-padded; zeros without any."""
        num_structures = batch.num_structures
        columns = []
        for key in sorted(batch.input_fields):
            try:
                if field_spec(key).per_atom:
                    continue  # per-atom inputs (a spin per atom) are not state
            except UnknownFieldError:
                continue
            columns.append(batch.input_fields[key].reshape(num_structures, -1).to(device=device, dtype=dtype))
        state = torch.cat(columns, dim=1) if columns else torch.zeros((num_structures, 0), dtype=dtype, device=device)
        if state.shape[1] > self.state_dim:
            raise ValueError(f"MEGNet: the batch has {state.shape[1]} per-structure input numbers "
                             f"({', '.join(sorted(batch.input_fields))}) but state_dim={self.state_dim}; "
                             f"set model.state_dim={state.shape[1]} or more")
        padding = state.new_zeros((num_structures, self.state_dim - state.shape[1]))
        return torch.cat([state, padding], dim=1)

    def forward(self, batch: Batch) -> BackboneOutput:
        """``atom_features`` ``[N, embedding_dim]`` and ``structure_features`` ``[B, structure_embedding_dim]``.

        Args:
            batch: a :class:`matsciml.batch.Batch` whose ``inputs`` is a batched
                ``dgl.DGLGraph`` (edges j -> i, ``edata["shift"]`` ``[num_edges, 3]``
                in Å); positions come from ``batch.pos``, elements from
                ``batch.atomic_numbers``, the state from ``batch.input_fields``.
        """
        graph = batch.inputs
        pos = batch.pos
        src, dst = (index.long() for index in graph.edges())
        distance = edge_vectors(pos, src, dst, graph.edata["shift"]).norm(dim=-1)  # [E]
        dtype = next(self.parameters()).dtype
        # The parameters' dtype rules (a float32 model may get float64 positions);
        # the casts are differentiable, so forces still reach batch.pos.
        envelope = self.cutoff(distance).to(dtype)  # [E]
        bond_features = self.radial_basis(distance).to(dtype) * envelope[:, None]  # [E, num_gaussians]
        structure_index = batch.structure_index.to(pos.device)
        num_atoms = batch.num_atoms.to(pos.device)
        num_structures = batch.num_structures
        atoms = self.encode_atoms(self.embedding(batch.atomic_numbers.to(pos.device)))  # [N, W]
        bonds = self.encode_bonds(bond_features)  # [E, W]
        state = self.encode_state(self.state_input(batch, dtype, pos.device))  # [B, W]
        for block in self.blocks:
            atoms, bonds, state = block(atoms, bonds, state, src, dst, envelope, structure_index, num_atoms)
        atom_readout = self.atom_set2set(atoms, structure_index, num_structures)  # [B, 2W]
        bond_readout = self.bond_set2set(bonds, structure_index[dst], num_structures, weight=envelope)  # [B, 2W]
        structure = self.readout(torch.cat([atom_readout, bond_readout, state], dim=1))  # [B, structure_dim]
        return BackboneOutput(atom_features=atoms, structure_features=structure)
