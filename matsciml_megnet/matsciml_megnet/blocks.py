"""The pieces of MEGNet: MLPs, the graph-network block, and Set2Set.

Everything here is plain torch on index tensors (edges j -> i as ``src``,
``dst``; ``structure_index`` for atoms, ``edge_structure`` for bonds), so a
block can be checked against a hand-written reference without DGL.

Smoothness (what the upstream implementations lacked): every aggregation of
bonds is weighted by the cutoff envelope f(d_ij), which falls to zero with
zero slope at r_c. A bond that enters or leaves the graph therefore carries
zero weight at that moment, and the energy and forces stay continuous. The
paper's plain mean over incoming bonds would jump as the neighbour count
changes; here it is the smooth envelope-weighted mean

    mean_i(e) = sum_j f_ij e_ij / (1 + sum_j f_ij)

(the 1 keeps it finite and continuous for an atom without neighbours; for a
crystal with ~10 neighbours in range it is within ~10% of the plain mean).
"""
from __future__ import annotations

import torch
from torch import nn

from matsciml.nn import make_activation, mean_per_structure


def mlp(sizes: list[int], activation: str, final_activation: bool = True) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ...`` with the activation after each
    (after the last too when ``final_activation``, as in the paper's dense layers)."""
    layers: list[nn.Module] = []
    for position, (width_in, width_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(width_in, width_out))
        if final_activation or position < len(sizes) - 2:
            layers.append(make_activation(activation))
    return nn.Sequential(*layers)


def smooth_mean(values: torch.Tensor, weight: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``sum_k w_k v_k / (1 + sum_k w_k)`` per group: ``[M, D]`` values, ``[M]`` weights,
    ``[M]`` group index -> ``[size, D]``; continuous as a weight goes to zero."""
    totals = values.new_zeros((size, values.shape[1])).index_add_(0, index, values * weight[:, None])
    norms = weight.new_zeros(size).index_add_(0, index, weight)
    return totals / (1.0 + norms)[:, None]


class MEGNetBlock(nn.Module):
    """One MEGNet graph-network block: bonds, then atoms, then the state.

    With atom vectors v, bond vectors e and state u (all ``width`` wide)::

        e_ij' = phi_e([v_i, v_j, e_ij, u])
        v_i'  = phi_v([v_i, mean_j f_ij e_ij', u])          (smooth mean, see module doc)
        u'    = phi_u([u, mean_atoms(mean_j f_ij e_ij'), mean_atoms(v')])

    phi are MLPs ``[hidden, hidden, width]``; the outputs get a residual
    connection to the block's input (before the dense pre-block). Blocks
    after the first start with a dense pre-block ``[dense_hidden, width]``
    on each of v, e, u. The state's bond term averages each atom's smooth
    bond mean over the structure's atoms, so it is intensive (a supercell
    has the same state) and continuous at the cutoff.

    The first layer of phi_e is applied to the concatenation as
    ``W_i v_i + W_j v_j + W_e e_ij + W_u u``, with the atom and state
    projections computed once per atom or structure and gathered on edges
    (the same numbers as an edge-sized matmul, far less arithmetic).
    """

    def __init__(self, width: int, dense_hidden: int, block_hidden: int, activation: str,
                 pre_dense: bool, dropout: float = 0.0) -> None:
        super().__init__()
        self.pre_dense = pre_dense
        if pre_dense:
            self.dense_atoms = mlp([width, dense_hidden, width], activation)
            self.dense_bonds = mlp([width, dense_hidden, width], activation)
            self.dense_state = mlp([width, dense_hidden, width], activation)
        # phi_e, its first layer split by input block (receiver i, sender j, bond, state)
        self.edge_receiver = nn.Linear(width, block_hidden, bias=False)
        self.edge_sender = nn.Linear(width, block_hidden, bias=False)
        self.edge_state = nn.Linear(width, block_hidden, bias=False)
        self.edge_bond = nn.Linear(width, block_hidden)
        self.edge_rest = nn.Sequential(make_activation(activation),
                                       *mlp([block_hidden, block_hidden, width], activation))
        self.atom_mlp = mlp([3 * width, block_hidden, block_hidden, width], activation)
        self.state_mlp = mlp([3 * width, block_hidden, block_hidden, width], activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._init_split_layer(width)

    def _init_split_layer(self, width: int) -> None:
        # as nn.Linear would initialise the one concatenated layer of fan-in 4 * width
        bound = 1.0 / (4 * width) ** 0.5
        for tensor in (self.edge_receiver.weight, self.edge_sender.weight, self.edge_state.weight,
                       self.edge_bond.weight, self.edge_bond.bias):
            nn.init.uniform_(tensor, -bound, bound)

    def forward(self, atoms: torch.Tensor, bonds: torch.Tensor, state: torch.Tensor, src: torch.Tensor,
                dst: torch.Tensor, envelope: torch.Tensor, structure_index: torch.Tensor,
                num_atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Updated ``(atoms [N, W], bonds [E, W], state [B, W])``.

        Args:
            atoms, bonds, state: current vectors.
            src, dst: ``[E]`` sender j and receiver i of each bond.
            envelope: ``[E]`` cutoff envelope f(d_ij).
            structure_index: ``[N]`` structure of each atom; num_atoms ``[B]``.
        """
        atoms_in, bonds_in, state_in = atoms, bonds, state
        if self.pre_dense:
            atoms, bonds, state = self.dense_atoms(atoms), self.dense_bonds(bonds), self.dense_state(state)
        per_atom_state = self.edge_state(state)[structure_index]  # [N, hidden]: W_u u, per atom
        receiver = self.edge_receiver(atoms) + per_atom_state  # [N, hidden]
        pre = receiver[dst] + self.edge_sender(atoms)[src] + self.edge_bond(bonds)  # [E, hidden]
        bonds_new = self.dropout(self.edge_rest(pre))  # [E, W]
        bond_mean = smooth_mean(bonds_new, envelope, dst, atoms.shape[0])  # [N, W]
        atoms_new = self.dropout(self.atom_mlp(torch.cat([atoms, bond_mean, state[structure_index]], dim=1)))
        state_bonds = mean_per_structure(bond_mean, structure_index, num_atoms)  # [B, W]
        state_atoms = mean_per_structure(atoms_new, structure_index, num_atoms)  # [B, W]
        state_new = self.dropout(self.state_mlp(torch.cat([state, state_bonds, state_atoms], dim=1)))
        return atoms_in + atoms_new, bonds_in + bonds_new, state_in + state_new


class Set2Set(nn.Module):
    """Set2Set (Vinyals et al. 2016): an order-invariant, attention-based set readout.

    For each set (structure) b, ``iterations`` times::

        q_b      = LSTM(q*_b)                           [D]
        a_k      = w_k exp(x_k . q_b) / sum_k' w_k' exp(x_k' . q_b)   (k in set b)
        r_b      = sum_k a_k x_k
        q*_b     = [q_b, r_b]                           [2D]

    returning q* ``[B, 2D]``. The optional weights w (the cutoff envelope, for
    bonds) make a bond entering at the cutoff enter with zero attention, so
    the readout stays continuous; atoms use w = 1 (the plain softmax).
    """

    def __init__(self, dim: int, iterations: int) -> None:
        super().__init__()
        self.dim = dim
        self.iterations = iterations
        self.lstm = nn.LSTM(2 * dim, dim)

    def _lstm(self, q_star: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if q_star.is_cuda:
            # cuDNN's LSTM has no double backward ("cudnn RNN backward can only be called in training
            # mode" / not twice differentiable), and a force loss differentiates -dE/dpos once more.
            # The native kernel supports create_graph=True, so bypass cuDNN for this call only.
            with torch.backends.cudnn.flags(enabled=False):
                return self.lstm(q_star[None], state)
        return self.lstm(q_star[None], state)

    def forward(self, x: torch.Tensor, segment: torch.Tensor, num_segments: int,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        """``[M, D]`` set members, ``[M]`` their set, B sets, optional ``[M]`` weights -> ``[B, 2D]``."""
        h = x.new_zeros((1, num_segments, self.dim))
        state = (h, torch.zeros_like(h))
        q_star = x.new_zeros((num_segments, 2 * self.dim))
        for _ in range(self.iterations):
            output, state = self._lstm(q_star, state)
            q = output[0]  # [B, D]
            score = (x * q[segment]).sum(dim=1)  # [M]
            # shift by each set's largest score (a constant per set: the softmax is unchanged)
            top = score.new_full((num_segments,), float("-inf")).scatter_reduce(
                0, segment, score.detach(), reduce="amax", include_self=True)
            attention = torch.exp(score - top[segment])  # [M], in (0, 1]
            if weight is not None:
                attention = attention * weight
            norm = attention.new_zeros(num_segments).index_add_(0, segment, attention)  # [B]
            norm = torch.where(norm > 0, norm, torch.ones_like(norm))  # an empty set reads out zeros
            readout = x.new_zeros((num_segments, self.dim)).index_add_(0, segment, attention[:, None] * x)
            q_star = torch.cat([q, readout / norm[:, None]], dim=1)
        return q_star
