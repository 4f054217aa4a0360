"""Train/val/test splits: deterministic from the seed, disjoint, complete, fractions respected, saved as JSON."""
from __future__ import annotations

import json

import pytest

from matsciml.data.splits import SPLIT_NAMES, Split, make_split


def parts(split: Split) -> list[list[int]]:
    return [split[name] for name in SPLIT_NAMES]


def assert_partition(split: Split, num_samples: int) -> None:
    """The three parts are sorted, disjoint and together hold every index exactly once."""
    everything = [index for part in parts(split) for index in part]
    assert sorted(everything) == list(range(num_samples))
    for part in parts(split):
        assert part == sorted(part)
        assert all(isinstance(index, int) for index in part)


def test_same_seed_same_split():
    """The same size, fractions and seed always give the same indices."""
    assert make_split(500, seed=7) == make_split(500, seed=7)
    assert make_split(500, seed=7).indices == make_split(500, (0.8, 0.1, 0.1), 7).indices


def test_different_seed_different_split():
    """Another seed gives another assignment of indices (same part sizes)."""
    first, second = make_split(500, seed=0), make_split(500, seed=1)
    assert first.indices != second.indices
    assert [len(p) for p in parts(first)] == [len(p) for p in parts(second)]
    assert first["train"] != second["train"] and first["val"] != second["val"]


def test_split_is_shuffled():
    """Parts are random draws, not consecutive blocks of the dataset."""
    split = make_split(1000, seed=3)
    assert split["train"] != list(range(800))
    assert max(split["val"]) - min(split["val"]) > 500


@pytest.mark.parametrize("num_samples", [10, 97, 100, 1000, 12345])
@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0),
                                       (0.6, 0.4, 0.0), (0.0, 0.0, 1.0), (1 / 3, 1 / 3, 1 / 3)])
def test_parts_cover_all_and_respect_fractions(num_samples, fractions):
    """Parts are disjoint, cover every index, and each has its fraction of the samples to within rounding."""
    split = make_split(num_samples, fractions, seed=11)
    assert_partition(split, num_samples)
    assert split.num_samples == num_samples and split.seed == 11
    assert split.fractions == tuple(fractions)
    for name, fraction in zip(SPLIT_NAMES, fractions):
        assert abs(len(split[name]) - fraction * num_samples) <= 1, (name, len(split[name]))
        if fraction == 0:
            assert split[name] == []


def test_exact_sizes():
    """Sizes that divide evenly come out exactly."""
    split = make_split(1000, (0.7, 0.2, 0.1), seed=0)
    assert [len(p) for p in parts(split)] == [700, 200, 100]
    split = make_split(100, seed=5)
    assert [len(p) for p in parts(split)] == [80, 10, 10]


def test_json_round_trip(tmp_path):
    """A split saved as JSON (indices included) loads back equal, from text or from a file."""
    split = make_split(257, (0.6, 0.3, 0.1), seed=42)
    assert Split.from_json(split.to_json()) == split
    path = tmp_path / "split.json"
    split.save(path)
    loaded = Split.load(path)
    assert loaded == split
    assert loaded.fractions == (0.6, 0.3, 0.1) and loaded.seed == 42 and loaded.num_samples == 257
    data = json.loads(path.read_text())
    assert set(data) == {"num_samples", "seed", "fractions", "indices"}
    assert {name: data["indices"][name] for name in SPLIT_NAMES} == split.indices


def test_loaded_split_does_not_depend_on_the_rule(tmp_path):
    """A saved split is reloaded as written, even if its indices are not what make_split would give."""
    custom = Split(num_samples=4, seed=0, fractions=(0.5, 0.25, 0.25),
                   indices={"train": [3, 0], "val": [2], "test": [1]})
    custom.save(tmp_path / "s.json")
    assert Split.load(tmp_path / "s.json")["train"] == [3, 0]


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.5, 0.2, 0.2, 0.1), (0.9, 0.2, 0.1), (0.5, 0.2, 0.2),
                                       (1.2, -0.1, -0.1), (0.0, 0.0, 0.0)])
def test_bad_fractions(fractions):
    """Fractions that are not three non-negative numbers summing to 1 raise a ValueError saying so."""
    with pytest.raises(ValueError) as info:
        make_split(100, fractions)
    message = str(info.value)
    assert "fractions" in message and "sum" in message and "non-negative" in message
    assert str(tuple(float(f) for f in fractions)) in message  # shows what was given


def test_bad_sample_count():
    """An empty or negative dataset size raises a ValueError naming it."""
    for bad in (0, -3):
        with pytest.raises(ValueError, match=str(bad)):
            make_split(bad)


@pytest.mark.parametrize("num_samples", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.34, 0.33, 0.33), (0.0, 0.5, 0.5), (1.0, 0.0, 0.0)])
def test_tiny_datasets(num_samples, fractions):
    """Datasets of 1 to 5 samples split without error into a valid partition."""
    split = make_split(num_samples, fractions, seed=0)
    assert_partition(split, num_samples)
    assert Split.from_json(split.to_json()) == split
    if fractions[0] == 1.0:
        assert split["train"] == list(range(num_samples))
