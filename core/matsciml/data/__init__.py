"""The data layer: the sample schema, LMDB storage, datasets, splits and import.

Submodules import lazily: :mod:`matsciml.data.dataset` needs torch,
:mod:`matsciml.data.ase_import` needs ASE; the schema and the storage format
need only numpy and lmdb.
"""
