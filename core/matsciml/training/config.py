"""Run configuration: defaults, YAML files and ``key.sub=value`` overrides.

A run is fully described by one mapping with the sections below. The
resolved configuration (defaults of the chosen model, representation and
task filled in) is what ``--print-config`` prints, what is saved in the run
directory and in each checkpoint, and what ``matsciml train --config``
reads back: printing and reading a config is a round trip.
"""
from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from matsciml.errors import MatscimlError

DEFAULT_CONFIG: dict[str, Any] = {
    "model": {"name": "egnn"},
    "dataset": {"name": "slab-emt-s2ef", "split": [0.8, 0.1, 0.1], "seed": 0, "options": {}},
    "task": {"name": "s2ef"},
    "representation": {},
    "data": {"batch_size": 8, "num_workers": 0, "statistics_samples": 10000},
    "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0},
    "scheduler": {"name": "cosine"},
    "trainer": {
        "max_epochs": 10,
        "accelerator": "auto",
        "devices": 1,
        "strategy": "auto",
        "precision": "32-true",
        "gradient_clip_val": 10.0,
        "log_every_n_steps": 10,
        "enable_progress_bar": True,
    },
    "early_stopping": {"monitor": "val/loss", "patience": 20},
    "run": {"dir": "runs", "name": None, "seed": 0},
}

SECTIONS = tuple(DEFAULT_CONFIG)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``; nested mappings merge, other values replace."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise MatscimlError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise MatscimlError(f"config file {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise MatscimlError(f"config file {path} must hold a mapping of sections ({', '.join(SECTIONS)})")
    return dict(loaded)


def apply_override(config: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` override in place (value parsed as YAML)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise MatscimlError(f"override {override!r} must look like section.key=value, e.g. trainer.max_epochs=5")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise MatscimlError(f"override {override!r}: the value is not valid YAML ({exc})") from exc
    parts = key.split(".")
    target = config
    for depth, part in enumerate(parts[:-1]):
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            raise MatscimlError(f"override {override!r}: {'.'.join(parts[:depth + 1])} is a value, not a section")
        target = child
    target[parts[-1]] = value


def check_sections(config: Mapping[str, Any]) -> None:
    unknown = [key for key in config if key not in SECTIONS]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, SECTIONS, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise MatscimlError(f"unknown config section(s) {', '.join(hints)}; sections are {', '.join(SECTIONS)}")


def build_config(files: Iterable[str | os.PathLike[str]] = (), overrides: Iterable[str] = (),
                 base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then each YAML file in order, then each override."""
    config = copy.deepcopy(dict(base or DEFAULT_CONFIG))
    for file in files:
        loaded = load_config_file(file)
        check_sections(loaded)
        config = deep_merge(config, loaded)
    for override in overrides:
        apply_override(config, override)
    check_sections(config)
    return config


def dump_config(config: Mapping[str, Any]) -> str:
    """YAML text of a config, readable back by :func:`build_config`."""
    return yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False, allow_unicode=True)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
