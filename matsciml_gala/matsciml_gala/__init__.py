"""matsciml-gala: Geometric Algebra Attention (Spellings 2021, arXiv 2110.02393) for matsciml.

Importing this package is cheap: the model (torch) lives in
:mod:`matsciml_gala.model` and is imported only when a model is built;
:mod:`matsciml_gala.plugin` describes it to the registry without torch.
"""
