"""The core's tasks: LightningModules that turn any backbone into a predictor.

Registered as built-ins (``s2ef``, ``is2re``, ``regression``) through the
same hooks a plugin uses; see :mod:`matsciml.builtins`.
"""
from matsciml.tasks.base import BaseTask
from matsciml.tasks.is2re import IS2RETask
from matsciml.tasks.regression import PropertyRegressionTask
from matsciml.tasks.s2ef import S2EFTask

__all__ = ["BaseTask", "IS2RETask", "PropertyRegressionTask", "S2EFTask"]
