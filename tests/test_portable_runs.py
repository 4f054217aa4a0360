"""A checkpoint finds its dataset from any directory, or says it moved and how to point at it.

The run record keeps the dataset's absolute path and a fingerprint (sample
count and a hash of the metadata record); `matsciml evaluate` uses the
configured name when it still resolves to the same content, the recorded
absolute path otherwise, and `--dataset` when the dataset moved (keeping the
recorded split when the content matches).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from matsciml.errors import MatscimlError
from matsciml.training.run import evaluate_task, load_checkpoint, train
from tests.installed_plugins import toy_registry, toy_site  # noqa: F401 - fixtures

DEVSETS = Path(__file__).resolve().parent.parent / "core" / "matsciml" / "datasets" / "devsets"


@pytest.fixture(scope="module")
def trained(toy_registry, tmp_path_factory: pytest.TempPathFactory):
    """A tiny IS2RE run on a copy of the shipped devset, given by a path relative to the run's directory."""
    root = tmp_path_factory.mktemp("portable")
    (root / "work" / "data").mkdir(parents=True)
    shutil.copy(DEVSETS / "slab-emt-is2re.lmdb", root / "work" / "data" / "is2re.lmdb")
    config = {"model": {"name": "toy-mlp", "hidden_dim": 4, "num_layers": 1},
              "dataset": {"name": "data/is2re.lmdb", "split": [0.6, 0.2, 0.2]},
              "task": {"name": "is2re"}, "trainer": {"max_epochs": 1, "accelerator": "cpu",
                                                     "enable_progress_bar": False},
              "run": {"dir": str(root / "runs"), "name": "portable"}}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root / "work")
        result = train(config, registry=toy_registry)
    return root, result


def test_a_checkpoint_records_its_dataset_by_absolute_path_and_fingerprint(trained, toy_registry) -> None:
    from matsciml.checkpoint import read_checkpoint

    root, result = trained
    record = read_checkpoint(result.last_checkpoint)["matsciml"]["dataset"]
    assert record["name"] == "data/is2re.lmdb"
    assert record["path"] == str((root / "work" / "data" / "is2re.lmdb").resolve())
    assert record["num_samples"] == 110 and len(record["metadata_sha256"]) == 64


def test_evaluate_finds_the_dataset_from_another_directory(trained, toy_registry, monkeypatch) -> None:
    root, result = trained
    monkeypatch.chdir(root)  # data/is2re.lmdb does not resolve from here
    loaded = load_checkpoint(result.best_checkpoint, registry=toy_registry)
    assert loaded.same_dataset and Path(loaded.run.datamodule.dataset_name) == root / "work" / "data" / "is2re.lmdb"
    assert loaded.run.datamodule.split == loaded.split
    metrics = evaluate_task(loaded.task, loaded.run.datamodule, "val")
    assert metrics["energy_mae"] == pytest.approx(result.metrics["energy_mae"], rel=1e-6)


def test_a_moved_dataset_is_named_and_found_again_with_dataset(trained, toy_registry, monkeypatch,
                                                              tmp_path: Path) -> None:
    root, result = trained
    monkeypatch.chdir(tmp_path)
    original = root / "work" / "data" / "is2re.lmdb"
    moved = tmp_path / "elsewhere.lmdb"
    shutil.move(original, moved)
    try:
        with pytest.raises(MatscimlError, match=r"is not there any more; if it moved, give its new location "
                                                r"with --dataset PATH") as caught:
            load_checkpoint(result.best_checkpoint, registry=toy_registry)
        assert str(original.resolve()) in str(caught.value) and "110 samples" in str(caught.value)
        loaded = load_checkpoint(result.best_checkpoint, dataset=str(moved), registry=toy_registry)
        assert loaded.same_dataset and loaded.run.datamodule.split == loaded.split  # the recorded split is kept
        metrics = evaluate_task(loaded.task, loaded.run.datamodule, "val")
        assert metrics["energy_mae"] == pytest.approx(result.metrics["energy_mae"], rel=1e-6)
    finally:
        shutil.move(moved, original)


def test_another_dataset_at_the_recorded_path_is_refused(trained, toy_registry, monkeypatch) -> None:
    root, result = trained
    monkeypatch.chdir(root)
    original = root / "work" / "data" / "is2re.lmdb"
    kept = root / "kept.lmdb"
    shutil.move(original, kept)
    _write_subset(kept, original, 50)
    try:
        with pytest.raises(MatscimlError, match=r"is not the one this run trained on \(110 samples.*found 50 "
                                                r"samples.*give the training dataset with --dataset PATH"):
            load_checkpoint(result.best_checkpoint, registry=toy_registry)
        # asked for explicitly, another dataset is evaluated on a split of its own
        loaded = load_checkpoint(result.best_checkpoint, dataset=str(original), registry=toy_registry)
        assert not loaded.same_dataset and loaded.run.datamodule.split != loaded.split
    finally:
        original.unlink()
        shutil.move(kept, original)


def _write_subset(source: Path, output: Path, count: int) -> None:
    """The first ``count`` samples of ``source`` as a new dataset (same task, other content)."""
    from matsciml.data.dataset import LMDBDataset
    from matsciml.data.storage import DatasetWriter

    dataset = LMDBDataset(source)
    from matsciml.fields import registered_names

    # the source's own keys keep their roles (annotations stay annotations)
    fields = {key: {"role": info["role"]} for key, info in dataset.metadata["keys"].items()
              if key not in registered_names() and info["dtype"] != "str"}
    with DatasetWriter(output, name="subset", fields=fields) as writer:
        for index in range(count):
            writer.append(dataset[index], index=index)
    dataset.close()


def test_evaluate_prints_the_baselines(trained, toy_site, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from tests.installed_plugins import environment

    _, result = trained
    done = subprocess.run([sys.executable, "-m", "matsciml", "evaluate", str(result.best_checkpoint), "--split",
                           "test", "--json"], capture_output=True, text=True, cwd=tmp_path,
                          env=environment(toy_site), timeout=300)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(document["baselines"]) == {"mean", "composition"}
    assert set(document["baselines"]["composition"]) == set(document["metrics"]) - {"loss"}
    text = subprocess.run([sys.executable, "-m", "matsciml", "evaluate", str(result.best_checkpoint)],
                          capture_output=True, text=True, cwd=tmp_path, env=environment(toy_site), timeout=300)
    assert text.returncode == 0, text.stderr
    header = text.stdout.splitlines()[1].split()
    assert header[:4] == ["METRIC", "MODEL", "MEAN", "COMPOSITION"]
    assert "composition: a per-element linear fit on the training split" in text.stdout
