"""matsciml-megnet: the MEGNet backbone (Chen, Ye, Zuo, Zheng, Ong, Chem. Mater. 2019) for matsciml.

Importing this package is cheap: the model (torch, DGL) lives in
:mod:`matsciml_megnet.model` and is imported only when a model is built.
"""
