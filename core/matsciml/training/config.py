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
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from matsciml.errors import ComponentNotFoundError, MatscimlError
from matsciml.specs import RESERVED_KEYS, as_yaml, invalid_value_message, is_integer, is_number

if TYPE_CHECKING:
    from matsciml.registry import Registry

DEFAULT_CONFIG: dict[str, Any] = {
    # No default model: the core knows none (DESIGN.md rule 1); `--model NAME` or model.name picks one.
    "model": {},
    # split_by: null = by the dataset's group key (metadata `group_key`) if it declares one, else by sample;
    # `sample` = by sample; any other string = a per-structure key whose values group samples (system_id)
    "dataset": {"name": "slab-emt-s2ef", "split": [0.8, 0.1, 0.1], "seed": 0, "split_by": None, "options": {}},
    "task": {"name": "s2ef"},
    "representation": {},
    "data": {"batch_size": 8, "num_workers": 0, "statistics_samples": 10000, "skip_invalid": False},
    "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0},
    # warmup_steps: the first N optimiser steps ramp the learning rate linearly up to the schedule's value
    # (name: cosine, plateau, or constant = no schedule after the warm-up); scheduler=null: constant, no warm-up
    "scheduler": {"name": "cosine", "warmup_steps": 0},
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
    # exponential moving average of the weights, validated and checkpointed in their place; decay null: off,
    # ema.decay=0.999 turns it on (averaging window about 1/(1 - decay) optimiser steps)
    "ema": {"decay": None, "update_every_n_steps": 1, "update_starting_at_step": 0},
    # save_top_k: best checkpoints kept (by val/loss), besides last.ckpt; checkpoint_every_n_epochs: also
    # keep epoch-N.ckpt every N epochs (null: none), e.g. to study a run after the fact
    "run": {"dir": "runs", "name": None, "seed": 0, "save_top_k": 1, "checkpoint_every_n_epochs": None},
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
    """The mapping of sections in one YAML config file (safe loader: no tags, no code)."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MatscimlError(f"config file {path} does not exist; check the path given to --config") from None
    except IsADirectoryError:
        raise MatscimlError(f"config file {path} is a directory; give a YAML file to --config") from None
    except UnicodeDecodeError:
        raise MatscimlError(f"config file {path} is not text (not UTF-8); give a YAML file to --config") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or "a syntax error"
        raise MatscimlError(f"config file {path} is not valid YAML{line} ({problem}); fix that line or "
                            f"print a valid config with `matsciml train --print-config`") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise MatscimlError(f"config file {path} holds a {type(loaded).__name__}, not a mapping of sections; "
                            f"write it as sections ({', '.join(SECTIONS)}) with keys under each")
    return dict(loaded)


def apply_override(config: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` override in place (value parsed as YAML)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise MatscimlError(f"override {override!r} must look like section.key=value, e.g. trainer.max_epochs=5")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "a syntax error"
        raise MatscimlError(f"override {override!r}: the value is not valid YAML ({problem}); "
                            f"quote it, e.g. {key}='{raw}'") from exc
    parts = key.split(".")
    if not all(part.strip() for part in parts):
        raise MatscimlError(f"override {override!r}: the key {key!r} has an empty part; write section.key=value, "
                            f"e.g. trainer.max_epochs=5")
    target = config
    for depth, part in enumerate(parts[:-1]):
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            raise MatscimlError(f"override {override!r}: {'.'.join(parts[:depth + 1])} is a value, not a section; "
                                f"override {'.'.join(parts[:depth + 1])} itself, or fix the key")
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


# ---------------------------------------------------------------- checking
# Names the tasks accept (matsciml.tasks.base); kept here so that checking a
# config imports neither torch nor Lightning. A test keeps them in step.
OPTIMIZER_NAMES: tuple[str, ...] = ("adamw", "adam", "sgd")
SCHEDULER_NAMES: tuple[str, ...] = ("cosine", "plateau", "reducelronplateau", "constant")
# What pytorch_lightning.Trainer(precision=...) accepts (Lightning 2.x); a test keeps them in step.
PRECISIONS: tuple[Any, ...] = (16, 32, 64, "16", "32", "64", "bf16", "16-true", "16-mixed", "bf16-true",
                               "bf16-mixed", "32-true", "64-true", "transformer-engine",
                               "transformer-engine-float16")
SEED_MAX = 2**32 - 1  # numpy's generators and Lightning's seed_everything take seeds in [0, 2**32)

_Check = tuple[str, Callable[[Any], bool]]


def _integer(minimum: int | None = None, maximum: int | None = None, nullable: bool = False) -> _Check:
    bounds = (f" >= {minimum}" if maximum is None else f" in [{minimum}, {maximum}]") if minimum is not None else ""
    words = f"an integer{bounds}" + (" or null" if nullable else "")

    def test(value: Any) -> bool:
        if value is None:
            return nullable
        return (is_integer(value) and (minimum is None or value >= minimum)
                and (maximum is None or value <= maximum))

    return words, test


def _number(minimum: float = 0.0, strict: bool = False, nullable: bool = False) -> _Check:
    words = f"a number {'>' if strict else '>='} {minimum:g}" + (" or null" if nullable else "")

    def test(value: Any) -> bool:
        if value is None:
            return nullable
        return (is_number(value) and math.isfinite(float(value))
                and (value > minimum if strict else value >= minimum))

    return words, test


def _text(what: str, nullable: bool = False) -> _Check:
    return what + (" or null" if nullable else ""), (
        lambda value: (value is None and nullable) or (isinstance(value, str) and bool(value.strip())))


def _flag() -> _Check:
    return "true or false", lambda value: isinstance(value, bool)


def _choice(names: Iterable[Any], nullable: bool = False, fold_case: bool = False) -> _Check:
    names = tuple(names)
    words = "one of " + ", ".join(dict.fromkeys(str(n) for n in names)) + (" or null" if nullable else "")

    def test(value: Any) -> bool:
        if value is None:
            return nullable
        if fold_case and isinstance(value, str):
            return value.lower() in names
        return any(type(value) is type(name) and value == name for name in names)

    return words, test


def _mapping(nullable: bool = False) -> _Check:
    return "a mapping of options" + (" or null" if nullable else ""), (
        lambda value: (value is None and nullable) or isinstance(value, Mapping))


def _fraction(nullable: bool = False) -> _Check:
    """A number strictly between 0 and 1 (an EMA decay: 0 would not average, 1 would never move)."""
    words = "a number between 0 and 1, both excluded, e.g. 0.999" + (" or null" if nullable else "")

    def test(value: Any) -> bool:
        if value is None:
            return nullable
        return is_number(value) and math.isfinite(float(value)) and 0.0 < float(value) < 1.0

    return words, test


def _split_fractions(value: Any) -> bool:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return False
    if not all(is_number(f) and math.isfinite(float(f)) and f >= 0 for f in value):
        return False
    return abs(sum(float(f) for f in value) - 1.0) <= 1e-6 and value[0] > 0


def _devices(value: Any) -> bool:
    if is_integer(value):
        return value >= 1 or value == -1
    if isinstance(value, str):
        text = value.strip()
        parts = [part.strip() for part in text.split(",") if part.strip()]
        return text == "auto" or text == "-1" or (bool(parts) and all(part.isdigit() for part in parts))
    if isinstance(value, (list, tuple)):
        return bool(value) and all(is_integer(index) and index >= 0 for index in value)
    return False


def _dataset_names(value: Any) -> bool:
    """One dataset name or path, or a list of two or more different ones."""
    def named(item: Any) -> bool:
        return isinstance(item, str) and bool(item.strip())

    if isinstance(value, list):
        return len(value) >= 2 and all(map(named, value)) and len(set(value)) == len(value)
    return named(value)


_SPLIT_WORDS = "three numbers >= 0 (train, val, test) that sum to 1, with train > 0, e.g. [0.8, 0.1, 0.1]"

CONFIG_CHECKS: dict[str, dict[str, _Check]] = {
    "dataset": {
        "name": ("a registered dataset name or a path to dataset files, or a list of two or more different ones "
                 "(several datasets in one run, each with its own statistics)", _dataset_names),
        "split": (_SPLIT_WORDS, _split_fractions),
        "seed": _integer(0, SEED_MAX),
        "split_by": _text("'sample', or the name of a per-structure key whose values group the samples "
                          "(e.g. system_id)", nullable=True),
        "options": _mapping(nullable=True),
    },
    "data": {
        "batch_size": _integer(1),
        "num_workers": _integer(0),
        "statistics_samples": _integer(1, nullable=True),
        "skip_invalid": _flag(),
    },
    "optimizer": {
        "name": _choice(OPTIMIZER_NAMES, fold_case=True),
        "lr": _number(0.0, strict=True),
        "weight_decay": _number(0.0),
    },
    "scheduler": {
        "name": _choice(SCHEDULER_NAMES, fold_case=True),
        "warmup_steps": _integer(0),
    },
    "trainer": {
        "max_epochs": _integer(-1, nullable=True),
        "min_epochs": _integer(0, nullable=True),
        "max_steps": _integer(-1),
        "accelerator": _text("an accelerator name such as auto, cpu or gpu"),
        "strategy": _text("a strategy name such as auto or ddp"),
        "devices": ("a positive integer, -1 (all), 'auto', a list of device indices or a string "
                    "such as '0,1'", _devices),
        "num_nodes": _integer(1),
        "precision": _choice(PRECISIONS),
        "gradient_clip_val": _number(0.0, nullable=True),
        "accumulate_grad_batches": _integer(1),
        "log_every_n_steps": _integer(1),
        "check_val_every_n_epoch": _integer(1, nullable=True),
        "num_sanity_val_steps": _integer(-1),
        "enable_progress_bar": _flag(),
        "enable_model_summary": _flag(),
        "enable_checkpointing": _flag(),
    },
    "early_stopping": {
        "monitor": _text("the name of a logged metric, e.g. val/loss"),
        "patience": _integer(0),
    },
    "ema": {
        "decay": _fraction(nullable=True),
        "update_every_n_steps": _integer(1),
        "update_starting_at_step": _integer(0),
    },
    "run": {
        "dir": _text("a directory path"),
        "name": _text("a string", nullable=True),
        "seed": _integer(0, SEED_MAX),
        "save_top_k": _integer(1),
        "checkpoint_every_n_epochs": _integer(1, nullable=True),
    },
}
"""The core's own config keys: what each accepts, in words and as a test."""

# Sections that may be null (no scheduler, no early stopping, no weight averaging); the others are mappings.
_NULLABLE_SECTIONS = ("scheduler", "early_stopping", "ema")
# Sections whose keys are all the core's own (no keyword arguments passed on to torch or Lightning), so an
# unknown key is a typo: it is named with a suggestion instead of being ignored.
_CLOSED_SECTIONS = ("dataset", "data", "early_stopping", "ema", "run")
# A fix that is more useful than "the default" for a key whose default is off
_FIX_EXAMPLES = {("ema", "decay"): "ema.decay=0.999 (or ema.decay=null: no averaging)"}


def check_config(config: Mapping[str, Any], registry: "Registry | None" = None) -> None:
    """Check every value of a config for type and range before anything is built.

    The core's own sections are checked against :data:`CONFIG_CHECKS`; with a
    ``registry``, the hyper-parameters of the chosen model, task and
    representation (and a registered dataset's ``dataset.options``) are
    checked against their specs (types of the defaults, declared ranges and
    choices). The first problem raises :class:`MatscimlError` with one line
    naming the key, the value and what is expected, so a typo costs a second
    instead of a traceback after the dataset has been opened.

    A component that cannot be found is left to the caller, whose error says
    what to install.
    """
    check_sections(config)
    scheduler = config.get("scheduler")
    if isinstance(scheduler, Mapping) and "name" in scheduler and scheduler["name"] is None:
        raise MatscimlError(invalid_value_message(
            "scheduler.name", None, "one of " + ", ".join(SCHEDULER_NAMES),
            "to train without a scheduler set the whole section to null: scheduler=null"))
    for section in SECTIONS:
        if section not in config:
            continue
        value = config[section]
        if value is None and section in _NULLABLE_SECTIONS:
            continue
        if value is False and section in ("early_stopping", "ema"):
            continue
        if not isinstance(value, Mapping):
            what = "a mapping of keys" + (" or null" if section in _NULLABLE_SECTIONS else "")
            raise MatscimlError(invalid_value_message(
                section, value, f"{what} (section {section})",
                f"write it as {section}.KEY=VALUE overrides or as a mapping in the config file"))
        checks = CONFIG_CHECKS.get(section, {})
        if section in _CLOSED_SECTIONS:
            _check_known_keys(section, value, checks)
        for key, (expected, test) in checks.items():
            if key in value and not test(value[key]):
                raise MatscimlError(invalid_value_message(
                    f"{section}.{key}", value[key], expected, _fix(section, key)))
    for section in ("model", "task"):
        chosen = config.get(section, {})
        if section == "model" and "name" not in chosen:
            continue  # no model chosen yet: with a registry, the message lists the installed ones
        name = chosen.get("name")
        if not isinstance(name, str) or not name.strip():
            raise MatscimlError(invalid_value_message(
                f"{section}.name", name, f"the name of an installed {section}",
                f"`matsciml {section}s` lists them"))
    for section in ("task", "representation"):
        chosen = config.get(section)
        if isinstance(chosen, Mapping) and "preset" in chosen:
            raise MatscimlError(f"{section}.preset={chosen['preset']!r}: only models have presets "
                                f"(model.preset=NAME); set {section} hyper-parameters one by one")
    if registry is not None:
        _check_components(config, registry)


def no_model_message(registry: "Registry") -> str:
    """The one line for a run without a model: how to choose one, and which are installed."""
    installed = registry.names("model")
    if installed:
        return (f"no model chosen: give one with --model NAME or model.name=NAME; installed models: "
                f"{', '.join(installed)} (`matsciml models` describes them)")
    return ("no model chosen, and no model is installed: install a model plugin (this repository's E(n)-GNN: "
            "pip install ./matsciml_egnn ./plugins/matsciml_dgl), then give --model NAME")


def _check_known_keys(section: str, value: Mapping[str, Any], checks: Mapping[str, _Check]) -> None:
    """Refuse a key a closed section does not have, naming it, the keys it has and the closest one."""
    for key in value:
        if key not in checks:
            close = difflib.get_close_matches(str(key), list(checks), n=1)
            hint = f" (did you mean {section}.{close[0]}?)" if close else ""
            raise MatscimlError(f"{section}.{key} is not an option of {section}{hint}; its options are "
                                f"{', '.join(checks)}: remove {section}.{key} or correct its name")


def _fix(section: str, key: str) -> str:
    if (section, key) in _FIX_EXAMPLES:
        return f"set {section}.{key} to such a value, e.g. {_FIX_EXAMPLES[section, key]}"
    default = DEFAULT_CONFIG.get(section, {})
    if isinstance(default, Mapping) and key in default:
        return f"set {section}.{key} to such a value, e.g. {section}.{key}={as_yaml(default[key])} (the default)"
    return f"set {section}.{key} to such a value or remove it"


def _hyper_parameters(section: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in section.items() if key not in RESERVED_KEYS}


def _check_components(config: Mapping[str, Any], registry: "Registry") -> None:
    from matsciml.registry import normalize_name

    if "name" not in config["model"]:
        raise MatscimlError(no_model_message(registry))
    model = registry.model(str(config["model"]["name"]))
    task = registry.task(str(config["task"]["name"]))
    model.check_params(_hyper_parameters(config["model"]), section="model")
    model.preset_params(config["model"].get("preset"), section="model")
    task.check_params(_hyper_parameters(config["task"]), section="task")
    representation_section = config.get("representation") or {}
    asked = representation_section.get("name")
    needed = getattr(model, "representation", None)
    if needed and (not asked or normalize_name(str(asked)) == normalize_name(str(needed))):
        try:
            representation = registry.representation(str(needed))
        except ComponentNotFoundError:
            representation = None  # the caller names the distribution to install
        if representation is not None:
            representation.check_params(_hyper_parameters(representation_section), section="representation")
    dataset = config.get("dataset") or {}
    options = dataset.get("options") or {}
    names = dataset.get("name")
    for name in map(str, names if isinstance(names, list) else [names]):
        if options and not (Path(name).exists() or Path(name).suffix == ".lmdb" or os.sep in name):
            try:
                spec = registry.dataset(name)
            except MatscimlError:
                continue  # opening the dataset says what is wrong with its name
            spec.check_params(options, section="dataset.options")
