"""Exceptions of the platform.

Every error a user can meet derives from :class:`MatscimlError`, so the CLI
can turn it into a one-line cause and exit code 1. Messages name the input,
the problem and the fix.
"""
from __future__ import annotations


class MatscimlError(Exception):
    """Base class of every error matsciml raises on purpose."""


class ComponentNotFoundError(MatscimlError, LookupError):
    """No installed plugin provides a component of that kind and name."""


class ComponentConflictError(MatscimlError):
    """Two distributions provide a component of one kind under one name."""


class PluginLoadError(MatscimlError):
    """The component requested comes from a plugin that failed to load."""


class IncompatibleComponentsError(MatscimlError):
    """Two components cannot work together (e.g. a model needs a representation that is missing)."""


class InvalidSampleError(MatscimlError, ValueError):
    """A structure breaks the sample schema (shapes, finiteness, elements...)."""


class DatasetFormatError(MatscimlError):
    """A file is not a readable matsciml dataset, or is of another schema version."""


class DatasetWriteError(MatscimlError, OSError):
    """Writing a dataset file failed: read-only folder, full disk, file-size limit..."""


class NonFiniteError(MatscimlError, FloatingPointError):
    """Training met a NaN or infinite loss, prediction or gradient; the samples are named."""
