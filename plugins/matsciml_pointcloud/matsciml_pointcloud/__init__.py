"""matsciml-pointcloud: the ``point-cloud`` representation (atom-centred neighbour clouds, padded with masks).

Importing this package is cheap; :mod:`matsciml_pointcloud.representation`
(torch, numpy) is imported when the representation is built.
"""
