"""Callbacks selectable in the config: the EMA of the weights (``ema``) and the learning-rate warm-up
(``scheduler.warmup_steps``), with the checks of their keys.

Real runs of the toy plugin's model (pure torch: both test environments) on
its in-memory molecules: 12 training structures in batches of 4, so 3
optimiser steps per epoch. A recorder callback, added beside the config's
callbacks, keeps the learning rate each step used and the weights after it,
so the EMA and the warm-up are checked against values computed here.
"""
from __future__ import annotations

import csv
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pytorch_lightning.callbacks import Callback

from installed_plugins import environment
from matsciml.errors import MatscimlError
from matsciml.training.config import SCHEDULER_NAMES, build_config, check_config, dump_config

import pytorch_lightning.callbacks as _lightning_callbacks

# the EMA is Lightning's EMAWeightAveraging (Lightning >= 2.6); the config checks need no Lightning at all
needs_ema = pytest.mark.skipif(not hasattr(_lightning_callbacks, "EMAWeightAveraging"),
                               reason="the installed pytorch-lightning predates EMAWeightAveraging (2.6)")

LR = 0.01
EPOCHS = 3
STEPS_PER_EPOCH = 3
EMA = {"decay": 0.8, "update_every_n_steps": 2, "update_starting_at_step": 1}
EMA_OVERRIDES = [f"ema.{key}={value}" for key, value in EMA.items()]


class Recorder(Callback):
    """What each optimiser step did: the rates it used, the rates the schedule holds, the weights after it."""

    def __init__(self) -> None:
        self.used: list[float] = []  # the rate of the first parameter group as the optimiser steps
        self.scheduled: list[float] = []  # the same as the batch starts: the schedule's own value
        self.weights: list[dict[str, torch.Tensor]] = []
        self.sgd_checks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (before, gradient, after)
        self._before: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.scheduled.append(float(trainer.optimizers[0].param_groups[0]["lr"]))

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self.used.append(float(optimizer.param_groups[0]["lr"]))
        parameter = pl_module.backbone.filter.weight
        self._before = (parameter.detach().clone(), parameter.grad.detach().clone())

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.weights.append({name: p.detach().clone() for name, p in pl_module.named_parameters()})
        assert self._before is not None
        self.sgd_checks.append((*self._before, pl_module.backbone.filter.weight.detach().clone()))


def _config(root: Path, name: str, *overrides: str) -> dict[str, Any]:
    return build_config(overrides=[
        "model.name=toy-mlp", "model.hidden_dim=8", "model.num_layers=1", "dataset.name=toy-dataset",
        "dataset.options.num_samples=24", "dataset.split=[0.5,0.5,0.0]", "data.batch_size=4",
        f"optimizer.lr={LR}", f"trainer.max_epochs={EPOCHS}", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "early_stopping=null",
        f"run.dir={root}", f"run.name={name}", *overrides])


def _train(root: Path, name: str, registry: Any, *overrides: str) -> tuple[Any, Recorder, list[Any]]:
    """``train()`` of a config, with a :class:`Recorder` after the config's own callbacks; also returns those."""
    import matsciml.training.run as run

    recorder = Recorder()
    chosen: list[Any] = []
    original = run.training_callbacks

    def with_recorder(config: Any) -> list[Any]:
        chosen.extend(original(config))
        return [*chosen, recorder]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "training_callbacks", with_recorder)
        result = run.train(_config(root, name, *overrides), registry)
    return result, recorder, chosen


def _independent_ema(weights: list[dict[str, torch.Tensor]], decay: float, every: int,
                     start: int) -> tuple[dict[str, torch.Tensor], int]:
    """The average of the weights after the steps that update it, computed here: first a copy, then
    ``decay * average + (1 - decay) * weights``; and how many updates there were."""
    average: dict[str, torch.Tensor] | None = None
    updates = 0
    for step, current in enumerate(weights):
        if step < start or step % every:
            continue
        updates += 1
        average = ({k: v.clone() for k, v in current.items()} if average is None
                   else {k: decay * average[k] + (1 - decay) * current[k] for k in current})
    assert average is not None
    return average, updates


def _logged_val_losses(run_dir: Path) -> dict[int, float]:
    with (run_dir / "logs" / "metrics.csv").open() as handle:
        return {int(row["epoch"]): float(row["val/loss"]) for row in csv.DictReader(handle) if row.get("val/loss")}


@pytest.fixture(scope="module")
def ema_run(toy_registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Recorder, list[Any]]]:
    """One run with ``ema`` on (decay 0.8, every 2nd step from step 1) and the default cosine schedule."""
    yield _train(tmp_path_factory.mktemp("ema"), "ema", toy_registry, *EMA_OVERRIDES)


# ---------------------------------------------------------------- EMA
@needs_ema
def test_the_checkpoint_holds_the_ema_of_the_training_weights(ema_run) -> None:
    """last.ckpt's state_dict is the EMA computed here from the weights after each step; the trained
    weights are beside it (current_model_state), and the buffers (fitted statistics) are the task's."""
    from matsciml.checkpoint import read_checkpoint

    result, recorder, chosen = ema_run
    assert [type(callback).__name__ for callback in chosen] == ["EMAWeights"]
    assert len(recorder.weights) == EPOCHS * STEPS_PER_EPOCH
    checkpoint = read_checkpoint(result.last_checkpoint)
    averaged, trained = checkpoint["state_dict"], checkpoint["current_model_state"]
    expected, updates = _independent_ema(recorder.weights, EMA["decay"], EMA["update_every_n_steps"],
                                         EMA["update_starting_at_step"])
    assert updates == 4 and int(checkpoint["averaging_state"]["n_averaged"]) == updates
    assert set(averaged) == set(trained)
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-6, atol=1e-7, msg=name)
        assert torch.equal(trained[name], recorder.weights[-1][name]), name
    assert any(not torch.allclose(averaged[name], trained[name]) for name in expected)
    buffers = [name for name in averaged if name not in expected]
    assert "statistics_fitted" in buffers and "energy_head.references" in buffers
    for name in buffers:
        assert torch.equal(averaged[name], trained[name]), name
    assert bool(averaged["statistics_fitted"]) and bool(averaged["energy_head.references"].abs().sum() > 0)


@needs_ema
def test_validation_runs_with_the_averaged_weights_and_evaluate_agrees(ema_run, toy_registry) -> None:
    """The validation loss logged at each epoch is the loss of the averaged weights: `matsciml evaluate`
    of the checkpoint gives it again, and the trained weights give another; the run's final metrics are
    evaluate's of its best checkpoint."""
    from matsciml.checkpoint import read_checkpoint
    from matsciml.training.run import evaluate_task, load_checkpoint

    result, _, _ = ema_run
    logged = _logged_val_losses(result.run_dir)
    assert sorted(logged) == list(range(EPOCHS))
    loaded = load_checkpoint(result.last_checkpoint, registry=toy_registry)
    averaged = evaluate_task(loaded.task, loaded.run.datamodule, "val", loaded.config["trainer"])
    assert averaged["loss"] == pytest.approx(logged[EPOCHS - 1], rel=1e-5)
    loaded.task.load_state_dict(read_checkpoint(result.last_checkpoint)["current_model_state"])
    trained = evaluate_task(loaded.task, loaded.run.datamodule, "val", loaded.config["trainer"])
    assert abs(trained["loss"] - logged[EPOCHS - 1]) > 1e-3 * abs(logged[EPOCHS - 1])

    best = load_checkpoint(result.best_checkpoint, registry=toy_registry)
    evaluated = evaluate_task(best.task, best.run.datamodule, "val", best.config["trainer"])
    assert evaluated == pytest.approx(result.metrics, rel=1e-6)
    assert evaluated["loss"] == pytest.approx(min(logged.values()), rel=1e-5)


@needs_ema
def test_a_resumed_fit_goes_on_from_the_trained_weights_and_the_saved_average(ema_run, toy_registry,
                                                                              tmp_path: Path) -> None:
    """`trainer.fit(ckpt_path=last.ckpt)` restores the task from current_model_state and the average,
    its update count and the callback's step from the checkpoint, then keeps averaging from there."""
    import pytorch_lightning as pl

    from matsciml.checkpoint import read_checkpoint
    from matsciml.training.callbacks import EMAWeights
    from matsciml.training.run import load_checkpoint

    result, _, _ = ema_run
    saved = read_checkpoint(result.last_checkpoint)
    ema = EMAWeights(**EMA)
    restored: dict[str, Any] = {}

    class AtStart(Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            restored["task"] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            restored["average"] = {k: v.detach().clone() for k, v in ema._average_model.module.state_dict().items()}
            restored["n_averaged"] = int(ema._average_model.n_averaged)
            restored["latest_update_step"] = ema._latest_update_step

    recorder = Recorder()
    loaded = load_checkpoint(result.last_checkpoint, registry=toy_registry)
    trainer = pl.Trainer(inference_mode=False, accelerator="cpu", max_epochs=EPOCHS + 1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path), callbacks=[ema, AtStart(), recorder])
    trainer.fit(loaded.task, datamodule=loaded.run.datamodule, ckpt_path=str(result.last_checkpoint))

    for name, value in saved["current_model_state"].items():
        assert torch.equal(restored["task"][name], value), name
    for name, value in saved["state_dict"].items():
        assert torch.equal(restored["average"][name], value), name
    assert restored["n_averaged"] == 4 and restored["latest_update_step"] == EPOCHS * STEPS_PER_EPOCH
    # steps 9, 10, 11: only step 10 updates (every 2nd); at the end of fitting the task gets the average
    assert len(recorder.weights) == STEPS_PER_EPOCH
    final = dict(loaded.task.named_parameters())
    for name, step_10 in recorder.weights[1].items():
        expected = EMA["decay"] * saved["state_dict"][name] + (1 - EMA["decay"]) * step_10
        torch.testing.assert_close(final[name].detach(), expected, rtol=1e-6, atol=1e-7, msg=name)


@needs_ema
def test_plain_lightning_fitting_statistics_at_fit_start_and_double_precision(toy_registry, tmp_path: Path) -> None:
    """A task that fits its statistics in on_fit_start (plain Lightning, after the average was copied) is
    validated with those statistics, not the copy's unfitted ones; under precision=64-true the average is
    float64 like the task (Lightning builds it before the task is converted); before
    update_starting_at_step the average is the trained weights, not the initial ones."""
    import pytorch_lightning as pl

    from matsciml.checkpoint import read_checkpoint
    from matsciml.training.callbacks import EMAWeights
    from matsciml.training.run import build_run, resolve_config

    config = resolve_config(_config(tmp_path, "plain", "representation.dtype=float64"), toy_registry)
    run = build_run(config, registry=toy_registry)
    assert not bool(run.task.statistics_fitted)
    ema = EMAWeights(decay=0.5, update_starting_at_step=STEPS_PER_EPOCH)  # no update in this one epoch
    initial = {name: p.detach().clone() for name, p in run.task.named_parameters()}
    trainer = pl.Trainer(inference_mode=False, accelerator="cpu", max_epochs=1, precision="64-true", logger=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[ema])
    trainer.fit(run.task, datamodule=run.datamodule)  # the sanity check validates before any update
    average = ema._average_model.module
    assert {p.dtype for p in average.parameters()} == {torch.float64}
    assert bool(average.statistics_fitted) and torch.equal(average.energy_head.references,
                                                           run.task.energy_head.references)
    checkpoint = read_checkpoint(trainer.checkpoint_callback.best_model_path)
    state = checkpoint["state_dict"]
    assert state["backbone.filter.weight"].dtype == torch.float64 and bool(state["statistics_fitted"])
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 0
    for name, value in initial.items():
        assert torch.equal(state[name], checkpoint["current_model_state"][name]), name
    assert not torch.equal(state["backbone.filter.weight"], initial["backbone.filter.weight"].double())


# ---------------------------------------------------------------- warm-up
def _cosine(epoch: int) -> float:
    return LR * (1 + math.cos(math.pi * epoch / EPOCHS)) / 2


@needs_ema
def test_cosine_warm_up_scales_the_first_steps_and_leaves_the_schedule_as_it_is(ema_run, toy_registry,
                                                                              tmp_path: Path) -> None:
    """With warmup_steps=5, step k < 5 uses (k+1)/5 of the cosine rate; from step 5 the rates are
    exactly those of the run without warm-up, and the scheduler never holds a scaled rate."""
    _, plain, _ = ema_run  # the same schedule without warm-up (the EMA does not touch the rate)
    _, warm, _ = _train(tmp_path, "warm", toy_registry, "scheduler.warmup_steps=5")
    steps = EPOCHS * STEPS_PER_EPOCH
    assert len(plain.used) == len(warm.used) == steps
    assert plain.used == pytest.approx([_cosine(k // STEPS_PER_EPOCH) for k in range(steps)], rel=1e-12)
    for k in range(steps):
        factor = min(1.0, (k + 1) / 5)
        assert warm.used[k] == pytest.approx(plain.used[k] * factor, rel=1e-12), k
        assert warm.scheduled[k] == plain.scheduled[k] == plain.used[k], k
    assert warm.used[5:] == plain.used[5:]  # exactly


def test_a_run_resumed_to_train_longer_stretches_its_cosine_over_the_new_length(toy_registry,
                                                                                tmp_path: Path) -> None:
    """`--resume RUN trainer.max_epochs=6` after 3 epochs: the rates of epochs 3-5 are the 6-epoch cosine's
    (not the 3-epoch schedule's end, near zero, and its mirror image), and the checkpoint holds the new
    schedule."""
    import matsciml.training.run as run
    from matsciml.checkpoint import read_checkpoint

    result, _, _ = _train(tmp_path, "short", toy_registry)
    recorder = Recorder()
    original = run.training_callbacks
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "training_callbacks", lambda config: [*original(config), recorder])
        longer = run.train(_config(tmp_path, "short", "trainer.max_epochs=6"), toy_registry,
                           resume=result.run_dir)
    total = 6
    expected = [LR * (1 + math.cos(math.pi * (k // STEPS_PER_EPOCH) / total)) / 2
                for k in range(EPOCHS * STEPS_PER_EPOCH, total * STEPS_PER_EPOCH)]
    assert recorder.used == pytest.approx(expected, rel=1e-9)
    saved = read_checkpoint(longer.last_checkpoint)
    assert saved["lr_schedulers"][0]["T_max"] == total and saved["epoch"] == total - 1


def test_plateau_warm_up_composes_with_its_reductions_and_sgd_steps_with_the_scaled_rate(toy_registry,
                                                                                       tmp_path: Path) -> None:
    """Plateau halving the rate after every epoch (threshold 10: no epoch counts as better) under a
    5-step warm-up: step k uses min(1, (k+1)/5) * LR / 2**epoch, the scheduler holds LR / 2**epoch,
    and plain SGD moves the weights by exactly minus that rate times the gradient."""
    _, recorder, _ = _train(tmp_path, "plateau", toy_registry, "scheduler.name=plateau", "scheduler.factor=0.5",
                            "scheduler.patience=0", "scheduler.threshold=10", "scheduler.warmup_steps=5",
                            "optimizer.name=sgd", "trainer.gradient_clip_val=null")
    steps = EPOCHS * STEPS_PER_EPOCH
    scheduled = [LR / 2 ** (k // STEPS_PER_EPOCH) for k in range(steps)]
    assert recorder.scheduled == pytest.approx(scheduled, rel=1e-12)
    assert recorder.used == pytest.approx([rate * min(1.0, (k + 1) / 5) for k, rate in enumerate(scheduled)],
                                          rel=1e-12)
    for k, (before, gradient, after) in enumerate(recorder.sgd_checks):
        torch.testing.assert_close(after, before - recorder.used[k] * gradient, rtol=1e-6, atol=1e-8,
                                   msg=f"step {k}")


def test_every_scheduler_name_builds_and_constant_warms_up_alone(toy_registry) -> None:
    """Each name the config check accepts is one configure_optimizers builds; `constant` has no torch
    scheduler (the warm-up, then the optimiser's rate) and refuses options it would ignore."""
    import pytorch_lightning as pl

    from matsciml.tasks import S2EFTask

    backbone = toy_registry.model("toy-mlp").build(hidden_dim=8, num_layers=1)
    for name in SCHEDULER_NAMES:
        task = S2EFTask(backbone, optimizer={"name": "adamw", "lr": LR}, scheduler={"name": name, "warmup_steps": 3})
        task.trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False)
        configured = task.configure_optimizers()
        assert isinstance(configured, torch.optim.Optimizer) == (name == "constant"), name
        assert task.warmup_steps == 3 and [task.warmup_factor(k) for k in range(4)] == [1 / 3, 2 / 3, 1.0, 1.0]
    task = S2EFTask(backbone, optimizer={"name": "adamw", "lr": LR}, scheduler={"name": "constant", "T_max": 3})
    with pytest.raises(MatscimlError, match="scheduler 'constant' takes no options besides warmup_steps, got T_max"):
        task.configure_optimizers()
    assert S2EFTask(backbone, scheduler=None).warmup_factor(0) == 1.0


# ---------------------------------------------------------------- config
@needs_ema
def test_one_override_turns_the_ema_on_and_the_defaults_read_back(toy_registry, tmp_path: Path) -> None:
    """ema.decay=0.99 alone turns EMA on with the other keys' defaults; the resolved config shows every
    key of ema and scheduler.warmup_steps and reads back unchanged; ema=null, false or decay null: off."""
    from matsciml.training.callbacks import training_callbacks
    from matsciml.training.run import resolve_config

    config = resolve_config(build_config(overrides=["model.name=toy-mlp", "ema.decay=0.99"]), toy_registry)
    assert config["ema"] == {"decay": 0.99, "update_every_n_steps": 1, "update_starting_at_step": 0}
    assert config["scheduler"] == {"name": "cosine", "warmup_steps": 0}
    (callback,) = training_callbacks(config)
    assert (callback.decay, callback.update_every_n_steps, callback.update_starting_at_step) == (0.99, 1, 0)
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(config))
    assert resolve_config(build_config([saved]), toy_registry) == config
    for off in ("ema=null", "ema=false", "ema.decay=null"):
        assert training_callbacks(build_config(overrides=[off])) == [], off
    assert training_callbacks({"model": {}}) == []  # a config from before the section existed


def test_print_config_shows_the_new_defaults(toy_site: Path, tmp_path: Path) -> None:
    """`matsciml train --print-config` prints ema (off: decay null) and scheduler.warmup_steps, and the
    printed config read back with --config prints the same."""
    def print_config(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "matsciml", "train", "--print-config", *args],
                              capture_output=True, text=True, env=environment(toy_site), timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    printed = print_config("--model", "toy-mlp")
    config = yaml.safe_load(printed)
    assert config["ema"] == {"decay": None, "update_every_n_steps": 1, "update_starting_at_step": 0}
    assert config["scheduler"]["warmup_steps"] == 0
    (tmp_path / "printed.yaml").write_text(printed)
    assert print_config("--config", str(tmp_path / "printed.yaml")) == printed


@pytest.mark.parametrize("override, words", [
    ("ema.decay=1.5", "ema.decay=1.5 is not valid: expected a number between 0 and 1, both excluded, e.g. 0.999 "
                      "or null; set ema.decay to such a value, e.g. ema.decay=0.999"),
    ("ema.decay=1", "ema.decay=1 is not valid: expected a number between 0 and 1"),
    ("ema.decay=0", "ema.decay=0 is not valid"),
    ("ema.decay=high", "ema.decay='high' is not valid"),
    ("ema.update_every_n_steps=0", "ema.update_every_n_steps=0 is not valid: expected an integer >= 1; "
                                   "set ema.update_every_n_steps to such a value, e.g. ema.update_every_n_steps=1"),
    ("ema.update_every_n_steps=2.5", "ema.update_every_n_steps=2.5 is not valid: expected an integer >= 1"),
    ("ema.update_starting_at_step=-1", "ema.update_starting_at_step=-1 is not valid: expected an integer >= 0"),
    ("ema.decy=0.99", "ema.decy is not an option of ema (did you mean ema.decay?); its options are decay, "
                      "update_every_n_steps, update_starting_at_step: remove ema.decy or correct its name"),
    ("ema=0.99", "ema=0.99 is not valid: expected a mapping of keys or null (section ema)"),
    ("scheduler.warmup_steps=-5", "scheduler.warmup_steps=-5 is not valid: expected an integer >= 0; set "
                                  "scheduler.warmup_steps to such a value, e.g. scheduler.warmup_steps=0"),
    ("scheduler.warmup_steps=0.1", "scheduler.warmup_steps=0.1 is not valid: expected an integer >= 0"),
    ("scheduler.name=linear", "scheduler.name='linear' is not valid: expected one of cosine, plateau, "
                              "reducelronplateau, constant"),
])
def test_a_bad_value_is_one_line_naming_the_key(override: str, words: str) -> None:
    with pytest.raises(MatscimlError) as info:
        check_config(build_config(overrides=[override]))
    message = str(info.value)
    assert message.startswith(words), message
    assert "\n" not in message
