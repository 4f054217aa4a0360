"""Splits that keep a group (a system, a trajectory) together.

Frames of one relaxation are near copies: split by frame, they land in
train, val and test alike and held-out errors come out too optimistic. With
groups, ``make_split`` cuts a seeded permutation of the groups, the data
module reads the group key of every sample (``dataset.split_by``, or the
dataset's declared ``group_key``), and conversion records the key
(``--group-by``).
"""
from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matsciml.data.splits import SPLIT_NAMES, Split, make_split, split_summary
from matsciml.errors import MatscimlError

FRACTIONS = [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (0.5, 0.25, 0.25), (1 / 3, 1 / 3, 1 / 3), (0.6, 0.4, 0.0),
             (0.9, 0.0, 0.1), (1.0, 0.0, 0.0), (0.0, 0.5, 0.5)]


def random_groups(rng: np.random.Generator, num_groups: int, max_size: int, strings: bool = False) -> list[Hashable]:
    """One id per sample, groups of random sizes 1..max_size, interleaved in random order."""
    sizes = rng.integers(1, max_size + 1, num_groups)
    ids = [f"sys-{g}" if strings else int(g) * 7 + 3 for g in range(num_groups)]
    groups = [ids[g] for g, size in enumerate(sizes) for _ in range(size)]
    return [groups[i] for i in rng.permutation(len(groups))]


def assert_groups_kept_together(split: Split, groups: Sequence[Hashable]) -> None:
    """The parts are sorted, disjoint, cover every index, and no group is in two parts."""
    everything = sorted(i for name in SPLIT_NAMES for i in split[name])
    assert everything == list(range(len(groups)))
    seen: dict[Hashable, str] = {}
    for name in SPLIT_NAMES:
        assert split[name] == sorted(split[name])
        for index in split[name]:
            group = groups[index]
            assert seen.setdefault(group, name) == name, f"group {group!r} is in {seen[group]} and {name}"


def old_make_split(num_samples: int, fractions: Sequence[float], seed: int) -> dict[str, list[int]]:
    """The by-sample rule as it was before groups existed (kept here verbatim as the reference)."""
    fractions = tuple(float(f) for f in fractions)
    order = np.random.Generator(np.random.PCG64(seed)).permutation(num_samples)
    num_train = int(round(fractions[0] * num_samples))
    num_val = int(round(fractions[1] * num_samples))
    if fractions[1] > 0 and num_val == 0 and num_samples - num_train > 0:
        num_val = 1
    num_val = min(num_val, num_samples - num_train)
    cuts = {"train": order[:num_train], "val": order[num_train:num_train + num_val],
            "test": order[num_train + num_val:]}
    return {name: sorted(int(i) for i in part) for name, part in cuts.items()}


# ---------------------------------------------------------------- make_split with groups
@pytest.mark.parametrize("fractions", FRACTIONS)
@pytest.mark.parametrize("strings", [False, True])
def test_no_group_is_in_two_parts(fractions, strings):
    """Many seeds, group counts and group sizes: every group lies in exactly one part, every part with a
    fraction > 0 has a group, every part with fraction 0 is empty."""
    rng = np.random.default_rng(1234)
    for seed in range(25):
        num_groups = int(rng.integers(3, 60))
        groups = random_groups(rng, num_groups, max_size=int(rng.integers(1, 12)), strings=strings)
        split = make_split(len(groups), fractions, seed, groups=groups, group_key="system_id")
        assert_groups_kept_together(split, groups)
        assert split.group_key == "system_id" and split.num_groups == num_groups
        for name, fraction in zip(SPLIT_NAMES, fractions):
            assert (len(split[name]) > 0) == (fraction > 0), (seed, name, fraction, len(split[name]))


@pytest.mark.parametrize("fractions", FRACTIONS[:6])
def test_sample_counts_follow_the_fractions(fractions):
    """With many groups, each part's sample count is its fraction of the samples to within a group size."""
    rng = np.random.default_rng(7)
    for seed in range(20):
        max_size = int(rng.integers(1, 8))
        groups = random_groups(rng, int(rng.integers(150, 400)), max_size)
        split = make_split(len(groups), fractions, seed, groups=groups)
        num_samples = len(groups)
        errors = [abs(len(split[name]) - fraction * num_samples) for name, fraction in zip(SPLIT_NAMES, fractions)]
        assert errors[0] <= max_size / 2 + 0.5, (seed, errors)
        assert errors[1] <= max_size / 2 + 1, (seed, errors)
        assert errors[2] <= max_size + 1, (seed, errors)


def test_the_shipped_shape_splits_exactly():
    """100 systems of 3 frames each split 0.8/0.1/0.1 give 80/10/10 systems and 240/30/30 frames."""
    groups = [system for system in range(100) for _ in range(3)]
    split = make_split(300, (0.8, 0.1, 0.1), 0, groups=groups, group_key="system_id")
    assert [len(split[name]) for name in SPLIT_NAMES] == [240, 30, 30]
    assert split_summary(split, groups) == "split by system_id: 100 groups -> 80/10/10 groups, 240/30/30 samples"


def test_group_split_is_deterministic_from_the_seed():
    """The same seed and groups give the same split; another seed another one; a group's members move together."""
    rng = np.random.default_rng(3)
    groups = random_groups(rng, 50, 6)
    first = make_split(len(groups), (0.8, 0.1, 0.1), 11, groups=groups, group_key="traj")
    assert first == make_split(len(groups), (0.8, 0.1, 0.1), 11, groups=list(groups), group_key="traj")
    assert first != make_split(len(groups), (0.8, 0.1, 0.1), 12, groups=groups, group_key="traj")
    # only which samples share a group matters, not what the ids are
    renamed = [f"other-{g}" for g in groups]
    assert make_split(len(groups), (0.8, 0.1, 0.1), 11, groups=renamed).indices == first.indices


def test_one_sample_per_group_gives_the_split_by_sample():
    """Groups of one sample each (an IS2RE set keyed by system) split exactly as by sample."""
    for num_samples in (10, 97, 110, 300):
        for seed in (0, 5):
            for fractions in ((0.8, 0.1, 0.1), (0.7, 0.3, 0.0), (0.5, 0.25, 0.25)):
                by_group = make_split(num_samples, fractions, seed, groups=list(range(num_samples)))
                assert by_group.indices == make_split(num_samples, fractions, seed).indices


def test_too_few_groups_is_a_clear_error():
    """Two groups cannot fill train, val and test: a ValueError naming the key, the count and the fix."""
    with pytest.raises(ValueError) as info:
        make_split(6, (0.8, 0.1, 0.1), 0, groups=["a", "a", "a", "b", "b", "b"], group_key="system_id")
    message = str(info.value)
    assert "'system_id'" in message and "2 distinct group(s)" in message and "train, val, test" in message
    assert "split by sample" in message
    # two groups are enough for two non-empty parts
    split = make_split(6, (0.5, 0.5, 0.0), 0, groups=["a", "a", "a", "b", "b", "b"])
    assert sorted(len(split[name]) for name in ("train", "val")) == [3, 3] and split["test"] == []
    with pytest.raises(ValueError, match="one group id per sample: got 2 for 3 samples"):
        make_split(3, groups=["a", "b"])


# ---------------------------------------------------------------- by sample: unchanged
def test_split_by_sample_is_unchanged():
    """Without groups the indices are those of the rule before groups existed, and the JSON is as before."""
    for num_samples in (1, 2, 3, 5, 10, 97, 300, 1001):
        for seed in (0, 1, 20240607):
            for fractions in FRACTIONS:
                split = make_split(num_samples, fractions, seed)
                assert split.indices == old_make_split(num_samples, fractions, seed), (num_samples, seed, fractions)
                assert split.group_key is None and split.num_groups is None
    # recorded with the code before groups existed, byte for byte
    assert make_split(10, seed=0).to_json() == (
        '{"num_samples": 10, "seed": 0, "fractions": [0.8, 0.1, 0.1], '
        '"indices": {"train": [0, 2, 3, 4, 5, 6, 7, 9], "val": [8], "test": [1]}}')
    assert make_split(300, seed=0)["val"] == [3, 21, 24, 26, 59, 62, 66, 76, 79, 81, 85, 96, 143, 145, 146, 156,
                                              158, 163, 183, 188, 193, 234, 237, 239, 245, 248, 254, 257, 279, 281]


# ---------------------------------------------------------------- JSON
def test_json_round_trip_keeps_the_group_key(tmp_path):
    """group_key and num_groups survive to_json/from_json and save/load; old JSON loads as a split by sample."""
    groups = [i // 4 for i in range(40)]
    split = make_split(40, (0.6, 0.2, 0.2), 3, groups=groups, group_key="system_id")
    assert Split.from_json(split.to_json()) == split
    split.save(tmp_path / "split.json")
    data = json.loads((tmp_path / "split.json").read_text())
    assert data["group_key"] == "system_id" and data["num_groups"] == 10
    loaded = Split.load(tmp_path / "split.json")
    assert loaded == split and loaded.group_key == "system_id" and loaded.num_groups == 10

    old = json.dumps({"num_samples": 4, "seed": 0, "fractions": [0.5, 0.25, 0.25],
                      "indices": {"train": [0, 3], "val": [1], "test": [2]}})
    legacy = Split.from_json(old)
    assert legacy.group_key is None and legacy.num_groups is None and legacy["train"] == [0, 3]
    assert legacy.to_json() == old


# ---------------------------------------------------------------- the data module
class Identity:
    """A representation that leaves samples as they are."""

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        return sample

    def collate(self, items: list[Any]) -> list[Any]:
        return items


def shipped_system_ids(name: str = "slab-emt-s2ef") -> list[int]:
    from matsciml.datasets import open_devset

    dataset = open_devset(name)
    try:
        return [int(dataset[i]["system_id"]) for i in range(len(dataset))]
    finally:
        dataset.close()


def datamodule(dataset: Any, **options: Any):
    from matsciml.training.datamodule import MatSciDataModule

    module = MatSciDataModule(dataset, Identity(), **options)
    module.setup()
    return module


@pytest.mark.parametrize("split_by", ["system_id", None])
def test_the_shipped_devset_splits_by_system(split_by, capsys):
    """slab-emt-s2ef, by system_id (named, or declared in its metadata): no system is in two parts."""
    module = datamodule("slab-emt-s2ef", split_by=split_by)
    assert module.metadata["group_key"] == "system_id"
    ids = shipped_system_ids()
    assert_groups_kept_together(module.split, ids)
    assert module.split.group_key == "system_id" and module.split.num_groups == len(set(ids)) == 300
    assert [len(module.split[name]) for name in SPLIT_NAMES] == [720, 90, 90]
    err = capsys.readouterr().err
    assert "matsciml: split by system_id: 300 groups -> 240/30/30 groups, 720/90/90 samples" in err


def test_split_by_sample_still_splits_frames(capsys):
    """dataset.split_by=sample ignores the declared group key: the split by sample, with systems spread."""
    module = datamodule("slab-emt-s2ef", split_by="sample")
    assert module.split == make_split(900, (0.8, 0.1, 0.1), 0)
    ids = shipped_system_ids()
    train = {ids[i] for i in module.split["train"]}
    assert any(ids[i] in train for i in module.split["val"])  # the leak that grouping removes
    assert "split by" not in capsys.readouterr().err


def test_the_shipped_devsets_declare_their_annotations():
    """Both devsets record group_key system_id; ids and string annotations are structure, not targets."""
    from matsciml.datasets import open_devset

    for name in ("slab-emt-s2ef", "slab-emt-is2re"):
        dataset = open_devset(name)
        keys = dataset.metadata["keys"]
        assert dataset.metadata["group_key"] == "system_id"
        for key in ("system_id", "metal", "facet", "adsorbate", "site") + (("frame",) if "frame" in keys else ()):
            assert (keys[key]["role"], keys[key]["arity"]) == ("structure", "structure"), (name, key)
        assert "system_id" not in dataset.targets and "frame" not in dataset.targets
        dataset.close()


def test_split_by_errors_name_the_key_and_the_fix(tmp_path):
    """A key in no sample lists the per-structure keys; a per-atom key is refused; a sample without the
    key is named; too few groups says how to split instead."""
    with pytest.raises(MatscimlError) as info:
        datamodule("slab-emt-s2ef", split_by="trajectory")
    message = str(info.value)
    assert "dataset.split_by=trajectory" in message and "no key 'trajectory'" in message
    assert "system_id" in message and "frame" in message and "dataset.split_by=sample" in message
    assert "\n" not in message

    with pytest.raises(MatscimlError, match="key 'forces' of dataset 'slab-emt-s2ef' has one value per atom"):
        datamodule("slab-emt-s2ef", split_by="forces")

    path = write_samples(tmp_path / "partial.lmdb", [{"traj": 0}, {"traj": 0}, {"traj": 1}, {}, {"traj": 2}])
    with pytest.raises(MatscimlError) as info:
        datamodule(str(path), split_by="traj")
    assert f"sample 3 of {path} has no key 'traj'" in str(info.value)

    few = write_samples(tmp_path / "few.lmdb", [{"traj": 0}, {"traj": 0}, {"traj": 1}, {"traj": 1}],
                        group_key="traj")
    with pytest.raises(MatscimlError) as info:
        datamodule(str(few))
    assert "only 2 distinct group(s)" in str(info.value) and "dataset.split_by=sample" in str(info.value)
    assert datamodule(str(few), split=(0.5, 0.5, 0.0)).split.num_groups == 2


def test_a_dataset_object_without_files_is_read_by_key():
    """Any map-style dataset works: ``dataset[i][key]`` gives the group; a missing one names the sample."""
    samples = [tiny_sample(traj=f"t{i // 3}") for i in range(30)]

    class Plain:
        def __len__(self) -> int:
            return len(samples)

        def __getitem__(self, index: int) -> dict[str, Any]:
            return samples[index]

    module = datamodule(Plain(), split_by="traj")
    assert_groups_kept_together(module.split, [s["traj"] for s in samples])
    assert module.split.num_groups == 10
    del samples[7]["traj"]
    with pytest.raises(MatscimlError, match="sample 7 of Plain has no key 'traj'"):
        datamodule(Plain(), split_by="traj")


def tiny_sample(**extra: Any) -> dict[str, Any]:
    rng = np.random.default_rng(len(extra) + sum(map(len, map(str, extra.values()))))
    return {"atomic_numbers": np.array([1, 8, 1]), "pos": np.array([[0.0, 0, 0], [0.96, 0, 0], [1.2, 0.9, 0]]),
            "pbc": np.zeros(3, dtype=bool), "energy": np.float64(rng.normal()), **extra}


def write_samples(path: Path, extras: list[dict[str, Any]], group_key: str | None = None) -> Path:
    from matsciml.data.storage import DatasetWriter

    with DatasetWriter(path, group_key=group_key) as writer:
        for extra in extras:
            writer.append(tiny_sample(**{key: np.int64(value) for key, value in extra.items()}))
    return path


def test_the_writer_refuses_a_group_key_some_samples_lack(tmp_path):
    """DatasetWriter(group_key=...) records it only when every sample has it per structure; else nothing is written."""
    with pytest.raises(MatscimlError, match="group key 'traj' cannot group the samples: 2 of the 3 samples have it"):
        write_samples(tmp_path / "x.lmdb", [{"traj": 0}, {}, {"traj": 1}], group_key="traj")
    assert not (tmp_path / "x.lmdb").exists() and list(tmp_path.iterdir()) == []
    path = write_samples(tmp_path / "y.lmdb", [{"traj": 0}, {"traj": 1}], group_key="traj")
    from matsciml.data.storage import DatasetFile

    assert DatasetFile(path).metadata["group_key"] == "traj"
    assert "group_key" not in DatasetFile(write_samples(tmp_path / "z.lmdb", [{"traj": 0}])).metadata


def test_merged_files_keep_a_group_key_they_agree_on(tmp_path):
    """Several files read as one dataset keep group_key when all record the same one, else drop it."""
    from matsciml.data.dataset import LMDBDataset

    a = write_samples(tmp_path / "a.lmdb", [{"traj": 0}, {"traj": 1}], group_key="traj")
    b = write_samples(tmp_path / "b.lmdb", [{"traj": 2}, {"traj": 2}], group_key="traj")
    c = write_samples(tmp_path / "c.lmdb", [{"traj": 3}])
    assert LMDBDataset([a, b]).metadata["group_key"] == "traj"
    assert "group_key" not in LMDBDataset([a, b, c]).metadata
    assert "group_key" not in LMDBDataset([c, a]).metadata


# ---------------------------------------------------------------- config
def test_split_by_is_checked_before_anything_is_built():
    """dataset.split_by takes null, 'sample' or a key name; anything else is one line naming it."""
    from matsciml.training.config import DEFAULT_CONFIG, build_config, check_config

    assert DEFAULT_CONFIG["dataset"]["split_by"] is None
    for good in ("dataset.split_by=null", "dataset.split_by=sample", "dataset.split_by=system_id"):
        check_config(build_config(overrides=[good]))
    for bad, shown in (("dataset.split_by=5", "5"), ("dataset.split_by=[system_id]", "['system_id']"),
                       ("dataset.split_by=''", "''"), ("dataset.split_by=true", "True")):
        with pytest.raises(MatscimlError) as info:
            check_config(build_config(overrides=[bad]))
        message = str(info.value)
        assert message.startswith(f"dataset.split_by={shown} is not valid"), message
        assert "sample" in message and "per-structure key" in message and "\n" not in message


def test_a_run_records_the_group_key_in_split_json(toy_registry, tmp_path, capsys):
    """`train` on the shipped devset splits by system (declared group key), says so on stderr only, and
    split.json records the key."""
    from matsciml.training.config import build_config
    from matsciml.training.run import train

    config = build_config(overrides=[
        "model.name=toy-mlp", "model.hidden_dim=8", "model.num_layers=1", "trainer.max_epochs=1",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "data.statistics_samples=32", f"run.dir={tmp_path}", "run.name=grouped"])
    train(config, toy_registry)
    captured = capsys.readouterr()
    assert "split by system_id: 300 groups -> 240/30/30 groups, 720/90/90 samples" in captured.err
    assert "split by" not in captured.out
    saved = Split.load(tmp_path / "grouped" / "split.json")
    assert saved.group_key == "system_id" and saved.num_groups == 300
    assert_groups_kept_together(saved, shipped_system_ids())


# ---------------------------------------------------------------- conversion --group-by
def write_relaxations(folder: Path, num_systems: int = 12, frames: int = 4,
                      info_keys: Sequence[str] = ("system_id",)) -> list[Path]:
    """Two extended XYZ files of relaxation-like frames with an id of their system in ``info_keys``:
    ``system_id`` (a number) and/or ``trajectory`` (a name)."""
    ase_io = pytest.importorskip("ase.io")
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    images = []
    for system in range(num_systems):
        for frame in range(frames):
            atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
            atoms.rattle(0.05, seed=system * 100 + frame)
            ids = {"system_id": system, "trajectory": f"relax-{system}"}
            atoms.info.update({key: ids[key] for key in info_keys})
            atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(4, 3)))
            images.append(atoms)
    half = len(images) // 2
    paths = [folder / "first.extxyz", folder / "second.extxyz"]
    ase_io.write(paths[0], images[:half])
    ase_io.write(paths[1], images[half:])
    return paths


@pytest.mark.parametrize("key", ["system_id", "trajectory"])
def test_convert_group_by_records_the_key_and_splits_keep_frames_together(tmp_path, key, capsys):
    """`data convert --group-by KEY`: the key is a per-structure structure annotation (not a target), the
    metadata says group_key: KEY, and the data module's split keeps each system's frames together."""
    from matsciml.cli import main
    from matsciml.data.dataset import LMDBDataset

    inputs = write_relaxations(tmp_path, info_keys=(key,))
    output = tmp_path / "relax.lmdb"
    assert main(["data", "convert", *map(str, inputs), "-o", str(output), "--group-by", key, "--quiet"]) == 0
    dataset = LMDBDataset(output)
    info = dataset.metadata["keys"][key]
    assert dataset.metadata["group_key"] == key
    assert (info["role"], info["arity"]) == ("structure", "structure")
    assert dataset.targets == ["energy", "forces"]
    groups = [str(dataset.files[0].read(i, keys=[key])[key]) for i in range(len(dataset))]
    capsys.readouterr()
    module = datamodule(str(output))  # split_by null: the declared group key
    assert module.split.group_key == key and module.split.num_groups == 12
    assert_groups_kept_together(module.split, groups)
    assert f"split by {key}: 12 groups" in capsys.readouterr().err


def test_convert_group_by_file_keeps_each_input_file_together(tmp_path):
    """`--group-by file`: each structure gets source_file (the input as given) and the split keeps files whole."""
    from matsciml.data.ase_import import convert
    from matsciml.data.dataset import LMDBDataset

    inputs = write_relaxations(tmp_path, num_systems=9, frames=2, info_keys=())
    given = [str(inputs[0]), f"{tmp_path}/./{inputs[1].name}"]
    convert(given, tmp_path / "files.lmdb", group_by="file", progress=False)
    dataset = LMDBDataset(tmp_path / "files.lmdb")
    assert dataset.metadata["group_key"] == "source_file"
    assert dataset.metadata["keys"]["source_file"]["role"] == "structure"
    names = [dataset[i]["source_file"] for i in range(len(dataset))]
    assert names == [given[0]] * 9 + [given[1]] * 9
    split = datamodule(dataset, split=(0.5, 0.5, 0.0)).split
    assert split.group_key == "source_file" and split.num_groups == 2
    assert_groups_kept_together(split, names)


def test_convert_group_by_a_missing_key_writes_nothing(tmp_path, capsys):
    """A frame without the --group-by key stops the conversion, naming the frame; nothing is written."""
    ase_io = pytest.importorskip("ase.io")
    from matsciml.cli import main

    inputs = write_relaxations(tmp_path, num_systems=3, frames=2)
    images = ase_io.read(inputs[0], index=":")
    del images[2].info["system_id"]
    ase_io.write(inputs[0], images)
    output = tmp_path / "out.lmdb"
    capsys.readouterr()
    assert main(["data", "convert", str(inputs[0]), "-o", str(output), "--group-by", "system_id", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("matsciml: error: --group-by system_id: ")
    assert f"frame 2 of {inputs[0]} has no 'system_id'" in err and "nothing written" in err
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    assert main(["data", "convert", str(inputs[0]), "-o", str(output), "--group-by", "forces", "--quiet"]) == 1
    assert "'forces' is a" in capsys.readouterr().err and not output.exists()
