"""Training loaders with worker processes: each worker reads through its own LMDB environment, and
the batches are the ones the main process alone would make.

An LMDB environment must not be used in a process other than the one that
opened it; :class:`matsciml.data.storage.DatasetFile` opens lazily, reopens
when the process id changes, and pickles without its handle. Here a
representation wrapper records, for every item a loader makes, the process
that made it and the environment its sample was read through, and the
batches of a loader with two workers are compared with those of the same
loader without workers (same sample names in the same order, equal tensors).
"""
from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from matsciml.data import storage
from matsciml.data.storage import write_dataset
from matsciml.registry import get_registry
from matsciml.testing import random_periodic_sample
from matsciml.training.datamodule import MatSciDataModule

NUM_SAMPLES = 24
BATCH_SIZE = 4


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small periodic dataset with energies and forces (24 structures of 4 to 7 atoms)."""
    rng = np.random.default_rng(18)
    samples = []
    for _ in range(NUM_SAMPLES):
        sample = random_periodic_sample(rng, int(rng.integers(4, 8)), cell_length=6.0)
        sample["energy"] = np.asarray(rng.normal())
        sample["forces"] = rng.normal(size=sample["pos"].shape)
        samples.append(sample)
    return write_dataset(tmp_path_factory.mktemp("loader-workers") / "random.lmdb", samples)


class RecordingRepresentation:
    """A representation that notes, for each item, which process made it and through which LMDB environment.

    ``dataset`` is the data module's dataset: the reader in a worker holds
    the worker's copy of it (the same object under fork; under spawn both
    references are unpickled into one object), so after the reader has read
    a sample, ``dataset.files[0]`` shows the environment that read it.
    """

    def __init__(self, inner: Any, dataset: Any) -> None:
        self.inner = inner
        self.dataset = dataset
        self.main_pid = os.getpid()
        self.main_env = dataset.files[0]._open()  # the main process's handle (opened here, before any worker)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "main_env": None}  # an LMDB handle does not pickle; a spawned worker gets None

    def __call__(self, sample: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        file = self.dataset.files[0]
        info = torch.utils.data.get_worker_info()
        stat = file.path.stat()
        owner, shared = storage._ENVIRONMENTS[(stat.st_dev, stat.st_ino)]
        record = {"pid": os.getpid(), "worker": None if info is None else info.id, "env": id(file._env),
                  "file_pid": file._pid, "owner_pid": owner, "is_process_env": shared is file._env,
                  "is_main_env": file._env is self.main_env}
        return self.inner(sample), record

    def collate(self, items: list[tuple[Any, dict[str, Any]]]) -> Any:
        batch = self.inner.collate([item for item, _ in items])
        batch.records = [record for _, record in items]
        return batch


def _module(path: Path, representation: Any, num_workers: int) -> MatSciDataModule:
    module = MatSciDataModule(str(path), representation, batch_size=BATCH_SIZE, num_workers=num_workers,
                              split=(0.5, 0.25, 0.25), seed=3)
    module.setup("fit")
    return module


def test_each_worker_reads_through_its_own_environment(dataset_path: Path) -> None:
    module = _module(dataset_path, None, num_workers=2)
    inner = get_registry().representation("point-cloud").build()
    module.representation = RecordingRepresentation(inner, module.dataset)
    main_env = module.representation.main_env
    loader = module.loader("all")  # 6 batches, dealt to the 2 workers in turn
    try:
        records = [record for batch in loader for record in batch.records]
    finally:
        del loader
    assert len(records) == NUM_SAMPLES
    pids = {record["pid"] for record in records}
    assert len(pids) == 2 and os.getpid() not in pids, "items were not made in two worker processes"
    assert {record["worker"] for record in records} == {0, 1}
    for pid in pids:
        mine = [record for record in records if record["pid"] == pid]
        # opened in that process, registered as that process's environment, and the same one for every item
        assert all(record["file_pid"] == pid and record["owner_pid"] == pid for record in mine)
        assert all(record["is_process_env"] for record in mine)
        assert not any(record["is_main_env"] for record in mine), "a worker read through the main process's handle"
        assert len({record["env"] for record in mine}) == 1, "a worker opened the file more than once"
    # the main process's handle still reads, and is still the one it had
    file = module.dataset.files[0]
    assert file.read(0)["pos"].shape[1] == 3 and file._env is main_env and file._pid == os.getpid()


def test_no_handle_travels_to_a_worker(dataset_path: Path) -> None:
    """What a spawned worker would receive: the dataset without an open environment, reopened on first read."""
    module = _module(dataset_path, get_registry().representation("point-cloud").build(), num_workers=0)
    module.dataset[0]  # the main process's handle is open
    assert module.dataset.files[0]._env is not None
    copy = pickle.loads(pickle.dumps(module.dataset))
    assert all(file._env is None and file._pid is None for file in copy.files)
    np.testing.assert_array_equal(copy[5]["pos"], module.dataset[5]["pos"])


def _same(first: Any, second: Any, where: str) -> None:
    """Equal batches, field by field: tensors exactly, graphs by edges and their data."""
    if isinstance(first, torch.Tensor):
        assert isinstance(second, torch.Tensor) and first.dtype == second.dtype, where
        assert torch.equal(first, second), where
    elif dataclasses.is_dataclass(first):
        assert type(first) is type(second), where
        for field in dataclasses.fields(first):
            _same(getattr(first, field.name), getattr(second, field.name), f"{where}.{field.name}")
    elif isinstance(first, Mapping):
        assert sorted(first) == sorted(second), where
        for key in first:
            _same(first[key], second[key], f"{where}[{key!r}]")
    elif hasattr(first, "edges") and hasattr(first, "edata"):  # a DGL graph
        for left, right in zip(first.edges(), second.edges()):
            _same(left, right, f"{where}.edges")
        _same(dict(first.ndata), dict(second.ndata), f"{where}.ndata")
        _same(dict(first.edata), dict(second.edata), f"{where}.edata")
    else:
        assert first == second, where


@pytest.mark.parametrize("name", ["point-cloud", pytest.param("dgl-graph", marks=pytest.mark.dgl)])
def test_two_workers_give_the_batches_of_none(dataset_path: Path, name: str) -> None:
    representation = get_registry().representation(name).build()
    batches = {}
    for num_workers in (0, 2):
        module = _module(dataset_path, representation, num_workers)
        loaders = {"train": module.train_dataloader(), "val": module.val_dataloader()}
        try:
            batches[num_workers] = {part: list(loader) for part, loader in loaders.items()}
        finally:
            del loaders
    for part in ("train", "val"):
        alone, workers = batches[0][part], batches[2][part]
        names = [batch.sample_names for batch in alone]
        assert [batch.sample_names for batch in workers] == names
        assert sum(len(group) for group in names) == {"train": NUM_SAMPLES // 2, "val": NUM_SAMPLES // 4}[part]
        for number, (first, second) in enumerate(zip(alone, workers)):
            _same(first, second, f"{part} batch {number}")
    # the training order is shuffled (else equal orders would prove little)
    order = [name for batch in batches[0]["train"] for name in batch.sample_names]
    assert order != sorted(order, key=lambda text: int(text.split()[1]))
