"""The checkpoint policy of a run: the best k by validation loss, last.ckpt, and optionally every N epochs.

Trains GALA's small preset (no DGL: both test environments) for a few
epochs on the shipped IS2RE devset.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from matsciml.errors import MatscimlError
from matsciml.training.config import build_config, check_config


def _train(tmp_path: Path, *overrides: str):
    from matsciml.training.run import train

    return train(build_config(overrides=[
        "model.name=gala", "model.preset=small", "representation.cutoff_radius=3.0",
        "representation.max_neighbors=12", "dataset.name=slab-emt-is2re", "task.name=is2re",
        "trainer.max_epochs=4", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "early_stopping=null", f"run.dir={tmp_path}", "run.name=policy",
        *overrides]))


def test_best_k_last_and_every_n_epochs_are_kept(tmp_path: Path) -> None:
    result = _train(tmp_path, "run.save_top_k=2", "run.checkpoint_every_n_epochs=2")
    names = sorted(path.name for path in (result.run_dir / "checkpoints").iterdir())
    best = [name for name in names if name.startswith("best-")]
    assert len(best) == 2 and "last.ckpt" in names
    assert [name for name in names if name.startswith("epoch-")] == ["epoch-1.ckpt", "epoch-3.ckpt"]
    assert result.best_checkpoint.name in best


def test_the_default_keeps_one_best_and_last(tmp_path: Path) -> None:
    result = _train(tmp_path)
    names = sorted(path.name for path in (result.run_dir / "checkpoints").iterdir())
    assert len([name for name in names if name.startswith("best-")]) == 1 and names[-1] == "last.ckpt"
    assert not any(name.startswith("epoch-") for name in names)


@pytest.mark.parametrize("override, words", [
    ("run.save_top_k=0", "run.save_top_k=0 is not valid: expected an integer >= 1"),
    ("run.checkpoint_every_n_epochs=0", "run.checkpoint_every_n_epochs=0 is not valid: expected an integer >= 1 "
                                        "or null"),
])
def test_a_bad_policy_is_one_line_naming_the_key(override: str, words: str) -> None:
    with pytest.raises(MatscimlError, match=words.replace("[", r"\[")):
        check_config(build_config(overrides=[override]))
