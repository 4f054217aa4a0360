"""matsciml-dgl: the ``dgl-graph`` representation of matsciml.

Samples become DGL radius graphs with periodic images; see
:mod:`matsciml_dgl.representation` for the graph format and
:mod:`matsciml_dgl.neighbors` for the neighbour search.

This package's ``__init__`` imports nothing heavy: the registry imports
:mod:`matsciml_dgl.plugin` to list the representation, and that must stay
cheap (no DGL, no torch).
"""
