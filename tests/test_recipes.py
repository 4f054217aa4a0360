"""The cluster recipes in examples/recipes/ launch commands that `matsciml train` accepts.

Each script is checked by bash (``bash -n``), then run for real with stand-ins
for ``matsciml``, ``srun`` and ``torchrun`` first on PATH: each stand-in
writes the command line it was given and exits, so the shell itself resolves
the variables (from the example environment below) and nothing trains. From
every recorded launch the ``matsciml train`` arguments are taken (after
``srun``'s options, or out of torchrun's own argument parser), the knobs the
script shows commented out (``# trainer.precision=bf16-mixed``) are added, and
``python -m matsciml train ... --print-config --json`` must accept them all
and resolve each override to its value. Keys are checked too, since
``--print-config`` echoes a key it does not know: trainer keys must be
arguments of ``pytorch_lightning.Trainer``, other keys the core's or the
model's own. Finally each launcher's process counts must agree with the
trainer's (Lightning refuses to start otherwise).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES = REPO_ROOT / "examples" / "recipes"
SCRIPTS = ("multi_gpu_node.sh", "slurm_multinode.sbatch", "torchrun_multinode.sh")
# What the launcher or the user would set; a shipped devset so that nothing depends on files outside the repository.
EXAMPLE_ENVIRONMENT = {
    "multi_gpu_node.sh": {"DATASET": "slab-emt-s2ef"},
    "slurm_multinode.sbatch": {"DATASET": "slab-emt-s2ef", "SLURM_JOB_ID": "4242", "SLURM_CPUS_PER_TASK": "8"},
    "torchrun_multinode.sh": {"DATASET": "slab-emt-s2ef", "HEAD": "node001", "RUN_NAME": "gala-s2ef-try1"},
}
SECTIONS_OF_THE_CORE = ("dataset", "data", "optimizer", "scheduler", "early_stopping", "run")
KNOB = re.compile(r"^\s*#\s*((?:trainer|data|model|run|optimizer|task|dataset|representation)\.[\w.]+=\S+)", re.M)
STAND_IN = """#!{python}
import json, os, sys
with open(os.environ["RECIPE_RECORD"], "a") as record:
    record.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of executables named matsciml, srun and torchrun that only record their arguments."""
    folder = tmp_path_factory.mktemp("stand-ins")
    for name in ("matsciml", "srun", "torchrun"):
        path = folder / name
        path.write_text(STAND_IN.format(python=sys.executable))
        path.chmod(0o755)
    return folder


def run_recipe(script: str, stand_ins: Path, tmp_path: Path, environment: dict[str, str]) -> tuple[int, str,
                                                                                                   list[list[str]]]:
    """``(exit status, stderr, recorded launches)`` of the script run with the stand-ins and only ``environment``."""
    record = tmp_path / f"{script}.{len(list(tmp_path.iterdir()))}.jsonl"
    env = {"PATH": f"{stand_ins}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path),
           "RECIPE_RECORD": str(record), **environment}
    done = subprocess.run(["bash", str(RECIPES / script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    launches = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return done.returncode, done.stderr, launches


def train_arguments(launch: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The arguments after ``matsciml train`` in one recorded launch, and the launcher's own settings."""
    program = launch[0]
    if program == "matsciml":
        assert launch[1] == "train", launch
        return launch[2:], {}
    if program == "srun":
        start = launch.index("matsciml")
        assert launch[start + 1] == "train", launch
        return launch[start + 2:], {"options": launch[1:start]}
    assert program == "torchrun", launch
    from torch.distributed.run import get_args_parser

    parsed = get_args_parser().parse_args(launch[1:])  # exits (fails the test) on an option torchrun lacks
    assert parsed.module and parsed.training_script == "matsciml", "torchrun must start `python -m matsciml`"
    assert parsed.training_script_args[0] == "train", launch
    return list(parsed.training_script_args[1:]), {"nnodes": parsed.nnodes, "nproc_per_node": parsed.nproc_per_node,
                                                    "rdzv_endpoint": parsed.rdzv_endpoint}


def split_arguments(arguments: list[str]) -> tuple[dict[str, str], list[str]]:
    """``--model X``-style options and the ``section.key=value`` overrides."""
    options: dict[str, str] = {}
    overrides: list[str] = []
    words = iter(arguments)
    for word in words:
        if word.startswith("--"):
            options[word[2:]] = next(words)
        else:
            assert "=" in word, f"{word!r} is neither an option nor section.key=value"
            overrides.append(word)
    return options, overrides


def print_config(options: dict[str, str], overrides: list[str]) -> dict[str, Any]:
    """The resolved config ``matsciml train`` prints for these arguments (the test fails if it refuses them)."""
    command = [sys.executable, "-m", "matsciml", "train", *(f"--{key}={value}" for key, value in options.items()),
               *overrides, "--print-config", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, f"{' '.join(command[3:])}\n{done.stderr[-2000:]}"
    return json.loads(done.stdout)


def check_keys(config: dict[str, Any], overrides: list[str]) -> None:
    """Every override names a key that is used, and resolves to the value written."""
    import inspect

    import pytorch_lightning as pl

    from matsciml.registry import get_registry
    from matsciml.training.config import CONFIG_CHECKS

    trainer_arguments = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    model_keys = set(get_registry().model(config["model"]["name"]).defaults) | {"name", "preset"}
    for override in overrides:
        key, _, raw = override.partition("=")
        section, name = key.split(".", 1)
        known = {"trainer": trainer_arguments, "model": model_keys}.get(section) or set(CONFIG_CHECKS.get(section, {}))
        if section in SECTIONS_OF_THE_CORE or section in ("trainer", "model"):
            assert name in known, f"{override}: {key} is not a key matsciml or Lightning uses"
        assert config[section][name] == yaml.safe_load(raw), f"{override} resolved to {config[section][name]!r}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_recipe_is_valid_bash(script: str) -> None:
    done = subprocess.run(["bash", "-n", str(RECIPES / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_recipe_launches_what_train_accepts(script: str, stand_ins: Path, tmp_path: Path) -> None:
    status, stderr, launches = run_recipe(script, stand_ins, tmp_path, EXAMPLE_ENVIRONMENT[script])
    assert status == 0, stderr
    assert len(launches) == 1, launches
    arguments, launcher = train_arguments(launches[0])
    options, overrides = split_arguments(arguments)
    text = (RECIPES / script).read_text()
    knobs = KNOB.findall(text)
    assert {"trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=2"} <= set(knobs), knobs
    config = print_config(options, overrides + knobs)
    check_keys(config, overrides + knobs)

    trainer = config["trainer"]
    assert trainer["accelerator"] == "gpu" and trainer["strategy"] == "ddp"
    assert any(override.startswith("data.num_workers=") for override in overrides)
    assert any(override.startswith("run.name=") for override in overrides) and config["run"]["name"]
    if script == "slurm_multinode.sbatch":
        sbatch = dict(re.findall(r"^#SBATCH\s+--([\w-]+)=(\S+)", text, re.M))
        # Lightning's SLURM environment refuses to start unless these agree
        assert int(sbatch["ntasks-per-node"]) == trainer["devices"] == int(sbatch["gpus-per-node"])
        assert int(sbatch["nodes"]) == trainer["num_nodes"]
        assert config["run"]["name"].endswith("4242")  # the job's id: the same in every task
    elif script == "torchrun_multinode.sh":
        assert launcher["nproc_per_node"] == str(trainer["devices"])
        assert launcher["nnodes"] == str(trainer["num_nodes"])
        assert launcher["rdzv_endpoint"] == "node001:29500"
    else:
        assert trainer.get("num_nodes", 1) == 1 and trainer["devices"] == 4


def test_every_node_launches_the_same_run(stand_ins: Path, tmp_path: Path) -> None:
    """torchrun runs the script once per node: what each launches, the run's name included, must agree."""
    environment = EXAMPLE_ENVIRONMENT["torchrun_multinode.sh"]
    first = run_recipe("torchrun_multinode.sh", stand_ins, tmp_path, environment)
    second = run_recipe("torchrun_multinode.sh", stand_ins, tmp_path, environment)
    assert first[0] == second[0] == 0 and first[2] == second[2]


@pytest.mark.parametrize("script, missing, words", [
    ("slurm_multinode.sbatch", "SLURM_JOB_ID", "submit this script with sbatch, or set RUN_NAME"),
    ("torchrun_multinode.sh", "RUN_NAME", "set RUN_NAME, the same on every node"),
    ("torchrun_multinode.sh", "HEAD", "set HEAD to the host name or address"),
])
def test_recipe_without_a_shared_setting_stops_before_launching(script: str, missing: str, words: str,
                                                                 stand_ins: Path, tmp_path: Path) -> None:
    environment = {key: value for key, value in EXAMPLE_ENVIRONMENT[script].items() if key != missing}
    status, stderr, launches = run_recipe(script, stand_ins, tmp_path, environment)
    assert status != 0 and not launches
    assert words in stderr
