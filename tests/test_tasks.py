"""The built-in task specs stay in step with the task classes."""
from __future__ import annotations

import inspect

import pytest

from matsciml.registry import get_registry

_NOT_HYPERPARAMETERS = {"self", "backbone", "optimizer", "scheduler"}


@pytest.mark.parametrize("name", ["s2ef", "is2re", "regression"])
def test_task_spec_defaults_equal_constructor_defaults(name: str) -> None:
    """Every hyper-parameter a task class takes is declared, with the same default and a help line."""
    spec = get_registry().task(name)
    parameters = inspect.signature(spec.load_factory().__init__).parameters
    signature = {key: p.default for key, p in parameters.items() if key not in _NOT_HYPERPARAMETERS}
    declared = {key: tuple(value) if isinstance(value, list) else value for key, value in spec.defaults.items()}
    assert declared == signature
    assert set(spec.param_help) == set(signature)
    assert spec.distribution == "matsciml"
