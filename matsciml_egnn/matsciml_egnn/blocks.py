"""The E(n)-equivariant graph convolutional layer (E_GCL), invariant form.

One layer of Satorras et al. (2021), equations (3)-(6) and Appendix C, with
the coordinate update left out (as the paper does for QM9 property
prediction): node features stay invariant, so a sum of per-atom energies is
invariant and its gradient with respect to the positions is equivariant::

    m_ij = phi_e(h_i, h_j, s_ij)              s_ij = ||r_ij||^2 / r_c^2
    e_ij = sigmoid(w_e . m_ij + c)            (soft edge / attention gate, optional)
    m_i  = sum_j f(d_ij) e_ij m_ij            (f: cosine cutoff envelope)
    h_i' = h_i + phi_h(h_i, m_i)              (residual, optional)

phi_e is Linear-act-Linear-act and phi_h Linear-act-Linear, as in the paper.

Why the first layer of phi_e is split: applied to the concatenation
``[h_i, h_j, s_ij]`` it is ``W_r h_i + W_s h_j + w_d s_ij + b``. Computing
``W_r h`` and ``W_s h`` once per node (``[num_nodes, hidden]`` matmuls) and
adding them on each edge (DGL's ``u_add_v``) gives the same numbers as an
edge-sized matmul over ``[num_edges, 2*hidden + 1]`` inputs for about
1/(average number of neighbours) of the arithmetic and memory (DESIGN.md,
performance stance). The second layer of phi_e acts on a genuinely per-edge
quantity and stays per edge.
"""
from __future__ import annotations

import math

import dgl
import dgl.function as fn
import torch
from torch import nn

# ACTIVATIONS is re-exported: the names ``activation`` accepts, one table for every model
from matsciml.nn.activations import ACTIVATIONS, make_activation

__all__ = ["ACTIVATIONS", "EGNNLayer"]


class EGNNLayer(nn.Module):
    """One invariant E_GCL message-passing layer on a DGL graph.

    Args:
        hidden_dim: width H of node features and messages.
        activation: a name of :data:`matsciml.nn.ACTIVATIONS` (the paper uses ``"silu"``).
        attention: multiply each message by the learned gate
            e_ij = sigmoid(Linear(m_ij)) (the paper's QM9 setting).
        residual: h_i' = h_i + phi_h(h_i, m_i) rather than phi_h(h_i, m_i).
        layer_norm: apply LayerNorm to the updated node features (the paper
            uses none).
        num_radial: width K of the distance feature: 0 for the paper's one
            scaled squared distance, else the number of radial basis functions.
    """

    def __init__(self, hidden_dim: int, activation: str = "silu", attention: bool = True,
                 residual: bool = True, layer_norm: bool = False, num_radial: int = 0) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_radial = num_radial
        self.residual = residual
        self.activation = make_activation(activation)
        # First layer of phi_e, split by input block (see the module docstring):
        # W_r h_i + b (receiver), W_s h_j (sender), w_d * s_ij (distance).
        self.edge_receiver = nn.Linear(hidden_dim, hidden_dim, bias=True)
        self.edge_sender = nn.Linear(hidden_dim, hidden_dim, bias=False)
        # the distance term: w_d * s_ij (paper, num_radial=0) or W_d rbf(d_ij)
        self.edge_distance = nn.Parameter(torch.empty(hidden_dim, max(num_radial, 1)))
        self.edge_out = nn.Linear(hidden_dim, hidden_dim)
        self.gate = nn.Linear(hidden_dim, 1) if attention else None
        self.node_mlp = nn.Sequential(
            nn.Linear(2 * hidden_dim, hidden_dim),
            make_activation(activation),
            nn.Linear(hidden_dim, hidden_dim),
        )
        self.norm = nn.LayerNorm(hidden_dim) if layer_norm else nn.Identity()
        self._reset_split_layer()

    def _reset_split_layer(self) -> None:
        # Initialise the three blocks as nn.Linear would initialise the one
        # concatenated layer with fan-in 2H + 1, so training starts the same.
        bound = 1.0 / math.sqrt(2 * self.hidden_dim + max(self.num_radial, 1))
        for tensor in (self.edge_receiver.weight, self.edge_receiver.bias,
                       self.edge_sender.weight, self.edge_distance):
            nn.init.uniform_(tensor, -bound, bound)

    def concatenated_edge_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer of phi_e as one linear map over ``[h_i, h_j, s_ij]``.

        Returns ``(weight [H, 2H + 1], bias [H])``; for reference
        implementations and tests, not used in ``forward``.
        """
        weight = torch.cat([self.edge_receiver.weight, self.edge_sender.weight, self.edge_distance], dim=1)
        return weight, self.edge_receiver.bias

    def messages(self, graph: dgl.DGLGraph, h: torch.Tensor, distance_feature: torch.Tensor,
                 envelope: torch.Tensor) -> torch.Tensor:
        """Weighted messages f(d_ij) e_ij m_ij, ``[num_edges, H]``.

        Args:
            graph: edges j -> i (src = sender j, dst = receiver i).
            h: ``[num_nodes, H]`` node features.
            distance_feature: ``[num_edges, 1]`` s_ij = ||r_ij||^2 / r_c^2 (paper), or
                ``[num_edges, num_radial]`` radial basis of d_ij.
            envelope: ``[num_edges]`` cutoff envelope f(d_ij).
        """
        with graph.local_scope():
            graph.ndata["sender"] = self.edge_sender(h)  # [num_nodes, H]: W_s h_j
            graph.ndata["receiver"] = self.edge_receiver(h)  # [num_nodes, H]: W_r h_i + b
            graph.apply_edges(fn.u_add_v("sender", "receiver", "pre"))
            # [num_edges, H]: W_r h_i + W_s h_j + b + distance term ([num_edges, K] @ [K, H], K small)
            pre = torch.addmm(graph.edata["pre"], distance_feature, self.edge_distance.t())
        message = self.activation(self.edge_out(self.activation(pre)))  # [num_edges, H]: m_ij
        weight = envelope[:, None]  # [num_edges, 1]
        if self.gate is not None:
            weight = weight * torch.sigmoid(self.gate(message))  # e_ij f(d_ij)
        return message * weight

    def forward(self, graph: dgl.DGLGraph, h: torch.Tensor, distance_feature: torch.Tensor,
                envelope: torch.Tensor) -> torch.Tensor:
        """Updated node features ``[num_nodes, H]`` (arguments as in :meth:`messages`)."""
        with graph.local_scope():
            graph.edata["message"] = self.messages(graph, h, distance_feature, envelope)
            graph.update_all(fn.copy_e("message", "message"), fn.sum("message", "aggregate"))
            aggregate = graph.ndata["aggregate"]  # [num_nodes, H]: m_i
        update = self.node_mlp(torch.cat([h, aggregate], dim=-1))  # [num_nodes, H]
        return self.norm(h + update if self.residual else update)
