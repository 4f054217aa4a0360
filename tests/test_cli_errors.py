"""Answers, not tracebacks: every CLI command against a table of bad arguments.

Each row runs ``matsciml.cli.main(argv)`` in this process and asserts the
contract of ``matsciml.cli``: exit status 2 (usage, argparse) or 1, never a
traceback, and for 1 exactly one stderr line ``matsciml: error: ...`` that
names the input. A few rows run again as ``python -m matsciml`` in a
subprocess, where a traceback could also escape at interpreter level.

Config values are checked before anything is built: ``build_run`` is
replaced by a tripwire for those rows, so a value that slipped through
fails the test at once instead of training a model.

Also here: the ``--json`` promise (standard output holds only the JSON
document, progress bars go to standard error, proved with a real tiny
training run) and the run-directory policy (a run never writes into an
existing directory).
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from matsciml import cli
from matsciml.cli import lookup
from matsciml.errors import MatscimlError

H2_EXTXYZ = """2
Properties=species:S:1:pos:R:3 energy=-1.5 pbc="F F F"
H 0.0 0.0 0.0
H 0.0 0.0 0.74
"""


class ModelWouldBeBuilt(BaseException):
    """Raised by the tripwire ``build_run``: a bad value got past the config check."""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Bad inputs of every sort, by placeholder name."""
    import torch

    root = tmp_path_factory.mktemp("bad-inputs")
    paths: dict[str, Path] = {
        "missing": root / "no-such-file.xyz",
        "missing_lmdb": root / "no-such.lmdb",
        "dir": root / "a-directory",
        "garbage": root / "garbage.bin",
        "garbage_lmdb": root / "garbage.lmdb",
        "empty": root / "empty.ckpt",
        "text": root / "notes.txt",
        "h2": root / "h2.extxyz",
        "existing_out": root / "existing.lmdb",
        "out": root / "out" / "new.lmdb",
        "yaml_list": root / "list.yaml",
        "yaml_scalar": root / "scalar.yaml",
        "yaml_bad": root / "bad.yaml",
        "yaml_binary": root / "binary.yaml",
        "yaml_unknown_section": root / "unknown.yaml",
        "yaml_bad_value": root / "bad-value.yaml",
        "foreign_ckpt": root / "foreign.ckpt",
        "truncated_ckpt": root / "truncated.ckpt",
        "zip_not_ckpt": root / "archive.ckpt",
    }
    paths["dir"].mkdir()
    garbage = bytes((i * 97 + 13) % 256 for i in range(4096))
    paths["garbage"].write_bytes(garbage)
    paths["garbage_lmdb"].write_bytes(garbage)
    paths["empty"].write_bytes(b"")
    paths["text"].write_text("these are notes, not a structure, a dataset or a checkpoint\n")
    paths["h2"].write_text(H2_EXTXYZ)
    paths["existing_out"].write_bytes(b"an earlier file the user cares about")
    paths["yaml_list"].write_text("- model\n- task\n")
    paths["yaml_scalar"].write_text("42\n")
    paths["yaml_bad"].write_text("model:\n  name: egnn\n   hidden_dim: [8\n")
    paths["yaml_binary"].write_bytes(b"\xff\xfe\x00model: \x9c\x80")
    paths["yaml_unknown_section"].write_text("trainr:\n  max_epochs: 3\n")
    paths["yaml_bad_value"].write_text("data:\n  batch_size: -4\n")
    torch.save({"state_dict": {"weight": torch.zeros(3)}, "epoch": 1}, paths["foreign_ckpt"])
    whole = root / "whole.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(1000)}, "matsciml": {"config": {}, "split": "{}"}}, whole)
    data = whole.read_bytes()
    paths["truncated_ckpt"].write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(paths["zip_not_ckpt"], "w") as archive:
        archive.writestr("readme.txt", "a zip archive, but not a checkpoint")
    return {name: str(path) for name, path in paths.items()}


def _expand(arguments: list[str], files: dict[str, str]) -> list[str]:
    return [argument.format(**files) for argument in arguments]


def _invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _assert_contract(code: int, err: str, expected_code: int, must_contain: tuple[str, ...], argv: list[str]) -> None:
    assert code == expected_code, f"{argv}: exit {code}, expected {expected_code}\nstderr: {err}"
    assert "Traceback" not in err, f"{argv}: traceback on stderr:\n{err}"
    if code == 2:
        assert "usage: matsciml" in err, err
        return
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{argv}: expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("matsciml: error: "), lines[0]
    for text in must_contain:
        assert text in lines[0], f"{argv}: {text!r} not in {lines[0]!r}"


# ---------------------------------------------------------------- usage errors (exit 2)
USAGE_ERRORS = [
    [],
    ["nosuchcommand"],
    ["--no-such-option", "plugins"],
    ["plugins", "extra"],
    ["models", "--bogus"],
    ["datasets", "slab-emt-s2ef"],
    ["representations", "--json=yes"],
    ["tasks", "-x"],
    ["info"],
    ["info", "egnn", "--kind", "gadget"],
    ["data"],
    ["data", "nosuchaction"],
    ["data", "convert", "{h2}"],  # no -o
    ["data", "convert", "-o", "{out}"],  # no input
    ["data", "inspect"],
    ["train", "--config"],
    ["train", "--bogus"],
    ["evaluate"],
    ["evaluate", "{garbage}", "--split", "bogus"],
    ["evaluate", "{garbage}", "--batch-size", "abc"],
    ["evaluate", "{garbage}", "--batch-size", "0"],
    ["evaluate", "{garbage}", "--batch-size", "-3"],
]


@pytest.mark.parametrize("arguments", USAGE_ERRORS, ids=lambda a: " ".join(a) or "(nothing)")
def test_usage_errors_exit_2_without_traceback(arguments: list[str], files, capsys) -> None:
    """Wrong command lines are argparse's: exit 2 and a usage message."""
    argv = _expand(arguments, files)
    code, out, err = _invoke(argv, capsys)
    _assert_contract(code, err, 2, (), argv)


# ---------------------------------------------------------------- lookups, data (exit 1)
LOOKUP_AND_DATA_ERRORS = [
    (["info", "zzz-qqq"], ("'zzz-qqq'",)),
    (["info", ""], ("''",)),
    (["info", "slab-emt-s2ef", "--kind", "model"], ("no model named 'slab-emt-s2ef'",)),
    (["info", "zzz-qqq", "--json"], ("'zzz-qqq'",)),
    # --quiet: a conversion's progress bar on stderr is output, not part of the error
    (["data", "convert", "{missing}", "-o", "{out}", "--quiet"], ("no-such-file.xyz",)),
    (["data", "convert", "{dir}", "-o", "{out}", "--quiet"], ("a-directory",)),
    (["data", "convert", "{garbage}", "-o", "{out}", "--quiet"], ("garbage.bin",)),
    (["data", "convert", "{text}", "-o", "{out}", "--quiet"], ("notes.txt",)),
    (["data", "convert", "{h2}", "-o", "{out}", "--unit", "no-equals-sign", "--quiet"], ("--unit",)),
    (["data", "convert", "{h2}", "-o", "{out}", "--format", "nosuchformat", "--quiet"], ("nosuchformat",)),
    (["data", "convert", "{h2}", "-o", "{out}", "--index", "abc", "--quiet"], ("abc",)),
    (["data", "convert", "{h2}", "-o", "{existing_out}", "--quiet"], ("existing.lmdb",)),
    (["data", "convert", "{h2}", "-o", "{dir}", "--quiet"], ("a-directory",)),
    (["data", "convert", "{h2}", "-o", "{h2}", "--overwrite", "--quiet"], ("h2.extxyz",)),
    (["data", "convert", "{h2}", "-o", "{out}", "--json", "--format", "nosuchformat"], ("nosuchformat",)),
    (["data", "inspect", "{missing_lmdb}"], ("no-such.lmdb",)),
    (["data", "inspect", "zzz-no-such-dataset"], ("zzz-no-such-dataset",)),
    (["data", "inspect", "{dir}"], ("a-directory",)),
    (["data", "inspect", "{garbage_lmdb}"], ("garbage.lmdb",)),
    (["data", "inspect", "{garbage}"], ("garbage.bin",)),
    (["data", "inspect", "{empty}"], ("empty.ckpt",)),
    (["data", "inspect", "{text}", "--validate"], ("notes.txt",)),
    (["data", "inspect", "{garbage_lmdb}", "--json"], ("garbage.lmdb",)),
]


@pytest.mark.parametrize("arguments, must_contain", LOOKUP_AND_DATA_ERRORS,
                         ids=[" ".join(a) for a, _ in LOOKUP_AND_DATA_ERRORS])
def test_lookup_and_data_errors_are_one_line(arguments: list[str], must_contain: tuple[str, ...], files,
                                             capsys) -> None:
    """Unknown names, missing files, directories, garbage: exit 1, one line naming the input."""
    pytest.importorskip("ase")
    argv = _expand(arguments, files)
    code, out, err = _invoke(argv, capsys)
    _assert_contract(code, err, 1, must_contain, argv)
    if "--json" in argv:
        assert out == "", f"{argv}: stdout must hold only a JSON document, or nothing on failure: {out!r}"
    assert Path(files["existing_out"]).read_bytes() == b"an earlier file the user cares about"
    assert Path(files["h2"]).read_text() == H2_EXTXYZ


# ---------------------------------------------------------------- config (exit 1, nothing built)
DGL = pytest.mark.dgl  # rows that name the egnn model, the dgl-graph representation or rely on them


def _row(overrides: list[str], *must_contain: str, dgl: bool = False):
    marks = [DGL] if dgl else []
    return pytest.param(overrides, must_contain, marks=marks, id=" ".join(overrides))


CONFIG_ERRORS = [
    # files and override syntax
    _row(["--config", "{missing}"], "no-such-file.xyz", "does not exist"),
    _row(["--config", "{dir}"], "a-directory", "is a directory"),
    _row(["--config", "{yaml_binary}"], "binary.yaml", "not text"),
    _row(["--config", "{yaml_bad}"], "bad.yaml", "not valid YAML at line"),
    _row(["--config", "{yaml_list}"], "list.yaml", "not a mapping of sections"),
    _row(["--config", "{yaml_scalar}"], "scalar.yaml", "not a mapping of sections"),
    _row(["--config", "{yaml_unknown_section}"], "'trainr' (did you mean 'trainer'?)"),
    _row(["--config", "{yaml_bad_value}"], "data.batch_size=-4", "an integer >= 1"),
    _row(["no-equals-sign"], "'no-equals-sign'", "section.key=value"),
    _row(["=5"], "'=5'"),
    _row(["trainer..max_epochs=3"], "empty part"),
    _row(["trainer.max_epochs=[1"], "not valid YAML"),
    _row(["trainr.max_epochs=3"], "did you mean 'trainer'"),
    _row(["trainer.max_epochs=3", "trainer.max_epochs.x=1"], "trainer.max_epochs is a value, not a section"),
    _row(["model=egnn"], "model='egnn'", "a mapping"),
    _row(["trainer=[1,2]"], "trainer=[1, 2]", "a mapping"),
    _row(["model.name="], "model.name=None", "the name of an installed model"),
    _row(["trainer.max_epochs=3"], "no model chosen: give one with --model NAME or model.name=NAME", dgl=True),
    _row(["--model", "zzz-no-such-model"], "no model named 'zzz-no-such-model'"),
    # the core's own sections
    _row(["trainer.max_epochs=abc"], "trainer.max_epochs='abc'", "an integer >= -1"),
    _row(["trainer.max_epochs=-2"], "trainer.max_epochs=-2", "an integer >= -1"),
    _row(["trainer.max_epochs=1.5"], "trainer.max_epochs=1.5"),
    _row(["trainer.max_epochs=true"], "trainer.max_epochs=True"),
    _row(["trainer.devices=0"], "trainer.devices=0"),
    _row(["trainer.devices=abc"], "trainer.devices='abc'"),
    _row(["trainer.devices=[]"], "trainer.devices=[]"),
    _row(["trainer.precision=17"], "trainer.precision=17", "bf16-mixed"),
    _row(["trainer.accelerator=5"], "trainer.accelerator=5"),
    _row(["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1", "a number >= 0"),
    _row(["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0"),
    _row(["trainer.enable_progress_bar=maybe"], "trainer.enable_progress_bar='maybe'", "true or false"),
    _row(["data.batch_size=0"], "data.batch_size=0", "an integer >= 1"),
    _row(["data.batch_size=abc"], "data.batch_size='abc'"),
    _row(["data.batch_size=true"], "data.batch_size=True"),
    _row(["data.batch_size=8.5"], "data.batch_size=8.5"),
    _row(["data.num_workers=-1"], "data.num_workers=-1", "an integer >= 0"),
    _row(["data.statistics_samples=0"], "data.statistics_samples=0", "an integer >= 1 or null"),
    _row(["data.skip_invalid=sometimes"], "data.skip_invalid='sometimes'", "true or false"),
    _row(["dataset.split=[0.5,0.5,0.2]"], "dataset.split=[0.5, 0.5, 0.2]", "sum to 1"),
    _row(["dataset.split=[0.5,0.5]"], "dataset.split=[0.5, 0.5]", "three numbers"),
    _row(["dataset.split=[0.0,0.5,0.5]"], "dataset.split=[0.0, 0.5, 0.5]", "train > 0"),
    _row(["dataset.split=[1.2,-0.1,-0.1]"], "dataset.split=[1.2, -0.1, -0.1]"),
    _row(["dataset.split=abc"], "dataset.split='abc'"),
    _row(["dataset.seed=-1"], "dataset.seed=-1"),
    _row(["dataset.seed=1.5"], "dataset.seed=1.5"),
    _row(["dataset.name="], "dataset.name=None"),
    _row(["dataset.options=5"], "dataset.options=5"),
    _row(["optimizer.name=rmsprop"], "optimizer.name='rmsprop'", "adamw"),
    _row(["optimizer.lr=-1"], "optimizer.lr=-1", "a number > 0"),
    _row(["optimizer.lr=0"], "optimizer.lr=0"),
    _row(["optimizer.lr=abc"], "optimizer.lr='abc'"),
    _row(["optimizer.lr=.nan"], "optimizer.lr=nan"),
    _row(["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1", "a number >= 0"),
    _row(["scheduler.name=step"], "scheduler.name='step'", "cosine"),
    _row(["scheduler.name=null"], "scheduler.name=None", "scheduler=null"),
    _row(["scheduler=5"], "scheduler=5"),
    _row(["early_stopping.patience=-1"], "early_stopping.patience=-1", "an integer >= 0"),
    _row(["early_stopping=5"], "early_stopping=5"),
    _row(["run.seed=abc"], "run.seed='abc'"),
    _row(["run.seed=-3"], "run.seed=-3"),
    _row(["run.name=[1,2]"], "run.name=[1, 2]", "a string or null"),
    _row(["run.dir="], "run.dir=None"),
    # hyper-parameters, checked against the specs of the chosen components
    _row(["--model", "egnn", "--task", "zzz-no-such-task"], "no task named 'zzz-no-such-task'", dgl=True),
    _row(["--model", "egnn", "model.hidden_dim=-5"], "model.hidden_dim=-5", "an integer >= 1", "model 'egnn'",
         dgl=True),
    _row(["--model", "egnn", "model.hidden_dim=abc"], "model.hidden_dim='abc'", dgl=True),
    _row(["--model", "egnn", "model.hidden_dim=8.0"], "model.hidden_dim=8.0", dgl=True),
    _row(["--model", "egnn", "model.num_layers=0"], "model.num_layers=0", dgl=True),
    _row(["--model", "egnn", "model.cutoff_radius=0"], "model.cutoff_radius=0", "a number > 0", dgl=True),
    _row(["--model", "egnn", "model.activation=swish"], "model.activation='swish'", "'silu', 'relu'", dgl=True),
    _row(["--model", "egnn", "model.attention=1"], "model.attention=1", "true or false",
         dgl=True),  # yes is true in YAML
    _row(["--model", "egnn", "model.hiden_dim=8"], "model.hiden_dim", "known: activation", dgl=True),
    _row(["--model", "egnn", "representation.cutoff_radius=-1"], "representation.cutoff_radius=-1", "dgl-graph",
         dgl=True),
    _row(["--model", "egnn", "representation.cutoff_radius=abc", "model.cutoff_radius=5.0"],
         "representation.cutoff_radius='abc'", dgl=True),
    _row(["--model", "egnn", "representation.max_neighbors=0"], "representation.max_neighbors=0", "or null",
         dgl=True),
    _row(["--model", "egnn", "representation.dtype=float16"], "representation.dtype='float16'", dgl=True),
    _row(["--model", "egnn", "representation.name=zzz-no-such-rep"], "zzz-no-such-rep", dgl=True),
    _row(["--model", "egnn", "task.energy_weight=-1"], "task.energy_weight=-1", "task 's2ef'", dgl=True),
    _row(["--model", "egnn", "task.activation=swish"], "task.activation='swish'", dgl=True),
    _row(["--model", "egnn", "task.head_layers=-1"], "task.head_layers=-1", dgl=True),
    _row(["--model", "egnn", "task.bogus=1"], "task.bogus", dgl=True),
    _row(["--model", "egnn", "--task", "regression", "task.loss=l3"], "task.loss='l3'", dgl=True),
    _row(["--model", "egnn", "dataset.options.bogus=1"], "dataset.options.bogus", dgl=True),
    _row(["--model", "egnn", "--print-config", "model.hidden_dim=0"], "model.hidden_dim=0", dgl=True),
    _row(["--model", "egnn", "--json", "model.hidden_dim=0"], "model.hidden_dim=0", dgl=True),
]


@pytest.mark.parametrize("arguments, must_contain", CONFIG_ERRORS)
def test_bad_config_values_fail_in_one_line_before_anything_is_built(
        arguments: list[str], must_contain: tuple[str, ...], files, capsys, monkeypatch, tmp_path) -> None:
    """`matsciml train` with a bad config file, override or value: one line naming the key and the value,
    and no model, dataset or run directory is made."""
    from matsciml.training import run

    def tripwire(*args, **kwargs):
        raise ModelWouldBeBuilt(f"build_run was reached with {arguments}")

    monkeypatch.setattr(run, "build_run", tripwire)
    monkeypatch.chdir(tmp_path)
    argv = ["train", *_expand(arguments, files)]
    code, out, err = _invoke(argv, capsys)
    _assert_contract(code, err, 1, must_contain, argv)
    assert out == "", out
    assert not any(tmp_path.iterdir()), "a failed config check must leave nothing behind"


# ---------------------------------------------------------------- train and evaluate on bad files
FILE_ERRORS = [
    _row(["train", "--model", "egnn", "--dataset", "{missing_lmdb}"], "no-such.lmdb", dgl=True),
    _row(["train", "--model", "egnn", "--dataset", "{garbage_lmdb}"], "garbage.lmdb", dgl=True),
    _row(["train", "--model", "egnn", "--dataset", "{dir}"], "a-directory", dgl=True),
    _row(["train", "--model", "egnn", "--dataset", "zzz-no-such-dataset"], "zzz-no-such-dataset", dgl=True),
    _row(["evaluate", "{missing}"], "no-such-file.xyz"),
    _row(["evaluate", "{dir}"], "a-directory"),
    _row(["evaluate", "{garbage}"], "garbage.bin"),
    _row(["evaluate", "{empty}"], "empty.ckpt"),
    _row(["evaluate", "{text}"], "notes.txt"),
    _row(["evaluate", "{truncated_ckpt}"], "truncated.ckpt"),
    _row(["evaluate", "{foreign_ckpt}"], "foreign.ckpt"),
    _row(["evaluate", "{zip_not_ckpt}"], "archive.ckpt"),
    _row(["evaluate", "{garbage}", "--json"], "garbage.bin"),
    _row(["evaluate", "{garbage}", "--dataset", "zzz-no-such-dataset", "--split", "all"], "garbage.bin"),
]


@pytest.mark.parametrize("arguments, must_contain", FILE_ERRORS)
def test_bad_datasets_and_checkpoints_are_one_line(arguments: list[str], must_contain: tuple[str, ...], files,
                                                   capsys, monkeypatch, tmp_path) -> None:
    """A missing, garbage, truncated or foreign file given to train or evaluate: one line naming it."""
    monkeypatch.chdir(tmp_path)
    argv = [*_expand(arguments, files), "trainer.enable_progress_bar=false"] if arguments[0] == "train" \
        else _expand(arguments, files)
    code, out, err = _invoke(argv, capsys)
    _assert_contract(code, err, 1, must_contain, argv)
    assert out == "", out


# ---------------------------------------------------------------- the same at interpreter level
SUBPROCESS_CASES = [
    (["train", "trainer.max_epochs=abc"], 1, "trainer.max_epochs='abc'"),
    (["train", "--json", "data.batch_size=0"], 1, "data.batch_size=0"),
    (["evaluate", "{garbage}"], 1, "garbage.bin"),
    (["evaluate", "{truncated_ckpt}", "--json"], 1, "truncated.ckpt"),
    (["data", "inspect", "{garbage_lmdb}"], 1, "garbage.lmdb"),
    (["data", "convert", "{dir}", "-o", "{out}", "--quiet"], 1, "a-directory"),
    (["info", "zzz-qqq", "--json"], 1, "zzz-qqq"),
    (["models", "--bogus"], 2, "usage: matsciml"),
]


def test_no_traceback_escapes_at_interpreter_level(files, tmp_path: Path) -> None:
    """`python -m matsciml` (the real entry point, started in parallel): the same contract, and on failure
    nothing on stdout."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}
    processes = [
        (arguments, code, text, subprocess.Popen(
            [sys.executable, "-m", "matsciml", *_expand(arguments, files)], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for arguments, code, text in SUBPROCESS_CASES
    ]
    for arguments, code, text, process in processes:
        out, err = process.communicate(timeout=300)
        _assert_contract(process.returncode, err, code, (), arguments)
        assert text in err, f"{arguments}: {text!r} not in {err!r}"
        assert out == "", f"{arguments}: {out!r}"


# ---------------------------------------------------------------- how main() reports
def _raising(exception: BaseException) -> Callable[..., int]:
    def handler(args) -> int:
        raise exception
    return handler


@pytest.mark.parametrize("exception, line", [
    (MatscimlError("dataset x.lmdb: sample 3 is broken\nsecond line; fix it"),
     "matsciml: error: dataset x.lmdb: sample 3 is broken second line; fix it"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/out.lmdb"),
     "matsciml: error: /data/out.lmdb: Permission denied; check its permissions or choose another location"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/out.lmdb"),
     "matsciml: error: /data/out.lmdb: No space left on device; free some disk space or write somewhere else"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out.lmdb"),
     "matsciml: error: /mnt/ro/out.lmdb: Read-only file system; the file system is read-only; "
     "choose another location"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "a.xyz"),
     "matsciml: error: a.xyz: No such file or directory; check the path"),
    (OSError(errno.ENOSPC, "No space left on device"),
     "matsciml: error: OSError: No space left on device (no file named by the system); "
     "free some disk space or write somewhere else"),
    (TypeError("unsupported operand type(s) for +: 'int' and 'str'"),
     "matsciml: error: unexpected TypeError: unsupported operand type(s) for +: 'int' and 'str'; "
     "rerun with --debug for the traceback and report it"),
    (KeyError("pos"), "matsciml: error: unexpected KeyError: 'pos'; rerun with --debug for the traceback "
                      "and report it"),
])
def test_every_failure_is_one_line(exception: BaseException, line: str, monkeypatch, capsys) -> None:
    """MatscimlError, OSError (with and without a file) and any other exception (a bug) print one line, exit 1."""
    monkeypatch.setattr(lookup, "run_plugins", _raising(exception))
    code, out, err = _invoke(["plugins"], capsys)
    assert (code, out, err) == (1, "", line + "\n")


def test_lightning_refusals_name_the_trainer_section(monkeypatch, capsys) -> None:
    """Lightning's MisconfigurationException is a config problem, not a bug."""
    class MisconfigurationException(Exception):
        pass

    monkeypatch.setattr(lookup, "run_plugins", _raising(MisconfigurationException("No supported gpu backend found!")))
    code, _, err = _invoke(["plugins"], capsys)
    assert code == 1
    assert err == ("matsciml: error: PyTorch Lightning refused the trainer settings: No supported gpu backend "
                   "found!; fix the trainer section of the config\n")


def test_debug_shows_the_traceback_and_interrupts_exit_130(monkeypatch, capsys) -> None:
    """--debug re-raises the original exception; Ctrl-C is exit 130 with one line."""
    monkeypatch.setattr(lookup, "run_plugins", _raising(ValueError("boom")))
    with pytest.raises(ValueError, match="boom"):
        cli.main(["--debug", "plugins"])
    monkeypatch.setattr(lookup, "run_plugins", _raising(KeyboardInterrupt()))
    code, _, err = _invoke(["plugins"], capsys)
    assert (code, err) == (130, "matsciml: interrupted\n")


def test_json_mode_keeps_stdout_for_the_document(monkeypatch, capsys) -> None:
    """Under --json whatever a command prints goes to stderr; print_json writes the document to stdout."""
    from matsciml.cli.output import print_json

    def noisy(args) -> int:
        print("Epoch 0: 100%|##########| 3/3", flush=True)
        sys.stdout.write("\rmore progress\n")
        print_json({"metrics": {"loss": 0.5, "diverged": float("nan")}})
        return 0

    monkeypatch.setattr(lookup, "run_plugins", noisy)
    code, out, err = _invoke(["plugins", "--json"], capsys)
    assert code == 0
    assert json.loads(out) == {"metrics": {"loss": 0.5, "diverged": None}}  # NaN is not JSON
    assert "Epoch 0" in err and "more progress" in err
    code, out, err = _invoke(["plugins"], capsys)  # without --json, stdout is stdout
    assert "Epoch 0" in out and err == ""


# ---------------------------------------------------------------- the lists the checks keep
def test_config_checks_know_the_names_the_tasks_and_lightning_accept() -> None:
    """The optimizer and scheduler names and the precisions the config check accepts are the real ones."""
    import typing

    from matsciml.tasks.base import OPTIMIZERS
    from matsciml.training.config import OPTIMIZER_NAMES, PRECISIONS

    assert set(OPTIMIZER_NAMES) == set(OPTIMIZERS)
    precision_module = pytest.importorskip("lightning_fabric.plugins.precision.precision")
    accepted = {value for name in ("_PRECISION_INPUT_INT", "_PRECISION_INPUT_STR", "_PRECISION_INPUT_STR_ALIAS")
                for value in typing.get_args(getattr(precision_module, name, typing.Literal[None]))} - {None}
    assert set(PRECISIONS) == accepted


def test_shipped_configs_pass_the_check() -> None:
    """The defaults and every example config are valid."""
    from matsciml.training.config import DEFAULT_CONFIG, build_config, check_config

    check_config(DEFAULT_CONFIG)
    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
    assert examples
    for example in examples:
        check_config(build_config([example]))


def test_scheduler_and_early_stopping_may_be_switched_off() -> None:
    """`scheduler=null` and `early_stopping=null` (or false) are valid configs."""
    from matsciml.training.config import build_config, check_config

    check_config(build_config(overrides=["scheduler=null", "early_stopping=null"]))
    check_config(build_config(overrides=["early_stopping=false", "trainer.max_epochs=-1", "trainer.devices=auto",
                                         "trainer.precision=bf16-mixed", "data.statistics_samples=null"]))


# ---------------------------------------------------------------- run directories
def _run_config(tmp_path: Path, name: str | None) -> dict:
    return {"run": {"dir": str(tmp_path / "runs"), "name": name}, "model": {"name": "egnn"},
            "task": {"name": "s2ef"}, "dataset": {"name": "slab-emt-s2ef"}}


def test_an_existing_run_directory_is_never_reused(tmp_path: Path, capsys) -> None:
    """Same run.name again: NAME-2, then NAME-3, with a note on stderr; the earlier run is untouched."""
    from matsciml.training.run import _run_dir

    first = _run_dir(_run_config(tmp_path, "study"))
    assert first == tmp_path / "runs" / "study" and capsys.readouterr().err == ""
    (first / "logs").mkdir()
    (first / "logs" / "metrics.csv").write_text("epoch,loss\n0,1.0\n")
    second = _run_dir(_run_config(tmp_path, "study"))
    third = _run_dir(_run_config(tmp_path, "study"))
    assert (second.name, third.name) == ("study-2", "study-3")
    assert not any(second.iterdir()) and not any(third.iterdir())
    assert (first / "logs" / "metrics.csv").read_text() == "epoch,loss\n0,1.0\n"
    notes = capsys.readouterr().err.strip().splitlines()
    assert notes == [f"matsciml: note: run directory {first} exists; this run writes to {second} instead",
                     f"matsciml: note: run directory {first} exists; this run writes to {third} instead"]


def test_default_names_started_together_get_their_own_directories(tmp_path: Path) -> None:
    """Timestamped names (one per second) and runs started at once never share a directory."""
    from matsciml.training.run import _run_dir

    made: list[Path] = []
    lock = threading.Lock()

    def start(name: str | None) -> None:
        path = _run_dir(_run_config(tmp_path, name))
        with lock:
            made.append(path)

    threads = [threading.Thread(target=start, args=(name,)) for name in [None] * 4 + ["same"] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == len(set(made)) == 8
    assert all(path.is_dir() and path.parent == tmp_path / "runs" for path in made)
    assert sorted(p.name for p in made if p.name.startswith("same")) == ["same", "same-2", "same-3", "same-4"]
    assert all(p.name.startswith("egnn-s2ef-slab-emt-s2ef-") for p in made if not p.name.startswith("same"))


@pytest.mark.parametrize("name, expected", [("../escape", "_escape"), ("..", "run"), (".hidden", "hidden"),
                                            ("my run/1", "my_run_1")])
def test_run_names_stay_inside_the_run_folder(tmp_path: Path, name: str, expected: str) -> None:
    """A run name is one plain folder under run.dir: no path separators, no '..', not hidden."""
    from matsciml.training.run import _run_dir

    assert _run_dir(_run_config(tmp_path, name)) == tmp_path / "runs" / expected


# ---------------------------------------------------------------- --json with a real training run
@pytest.mark.dgl
@pytest.mark.slow
def test_train_json_stdout_is_only_the_document(tmp_path: Path) -> None:
    """`matsciml train --json | jq` works: stdout parses as JSON while the progress bar goes to stderr;
    a second run of the same name gets its own directory."""
    command = [sys.executable, "-m", "matsciml", "train", "--json", "--model", "egnn", "trainer.max_epochs=1",
               "model.hidden_dim=8", "model.num_layers=1", "data.batch_size=8", "trainer.accelerator=cpu",
               f"run.dir={tmp_path}", "run.name=json-run", "trainer.enable_progress_bar=true",
               "trainer.limit_train_batches=2"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert Path(document["run_dir"]) == tmp_path / "json-run"
    assert set(document) == {"run_dir", "best_checkpoint", "epochs", "metrics", "baselines", "skipped_invalid",
                             "reference_energies"}
    assert document["skipped_invalid"]["count"] == 0
    assert "energy_mae" in document["metrics"]
    assert "Epoch 0" in done.stderr  # the progress bar was drawn, on stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert Path(json.loads(again.stdout)["run_dir"]) == tmp_path / "json-run-2"
    assert f"this run writes to {tmp_path / 'json-run-2'} instead" in again.stderr
    assert (tmp_path / "json-run" / "metrics.json").is_file() and (tmp_path / "json-run-2" / "metrics.json").is_file()


def test_overrides_may_come_between_and_after_options(capsys) -> None:
    """KEY=VALUE overrides written after a later option are overrides too (argparse takes one run of
    positionals); anything else left over is still a usage error, exit 2."""
    import yaml

    code, out, err = _invoke(["train", "--model", "gala", "trainer.max_epochs=3", "--task", "regression",
                              "task.targets=[energy]", "--dataset", "a.lmdb", "--dataset", "b.lmdb",
                              "data.batch_size=5", "--print-config"], capsys)
    assert code == 0, err
    config = yaml.safe_load(out)
    assert config["trainer"]["max_epochs"] == 3 and config["data"]["batch_size"] == 5
    assert config["task"]["targets"] == ["energy"] and config["dataset"]["name"] == ["a.lmdb", "b.lmdb"]
    for argv, left in ((["train", "--model", "gala", "--bogus"], "--bogus"),
                       (["train", "--model", "gala", "trainer.max_epochs=3", "--task", "s2ef", "stray"], "stray")):
        code, _, err = _invoke(argv, capsys)
        assert code == 2 and f"unrecognized arguments: {left}" in err, err
