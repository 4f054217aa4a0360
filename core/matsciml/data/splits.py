"""Train/validation/test splits that are deterministic from a seed and recorded.

A split is a permutation of sample indices from numpy's PCG64 generator
seeded with ``seed``, cut by fractions. With groups (one id per sample: a
system, a trajectory), the permutation is of the distinct groups instead, cut
where the sample counts come closest to the fractions, so that no group is in
two parts: frames of one relaxation never land in train and test alike. Its
JSON form (indices included, and the key that grouped them) is saved with each
run, so the exact split can be reloaded even if the rule that made it changes.
"""
from __future__ import annotations

import json
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Indices of each part of a dataset, and the rule that made them.

    ``group_key`` names the per-structure key whose values grouped the
    samples and ``num_groups`` counts the groups; both are None for a split
    by sample (whose JSON form leaves them out, as before groups existed).
    """

    num_samples: int
    seed: int
    fractions: tuple[float, float, float]
    indices: dict[str, list[int]] = field(repr=False)
    group_key: str | None = None
    num_groups: int | None = None

    def __getitem__(self, name: str) -> list[int]:
        return self.indices[name]

    def to_json(self) -> str:
        data: dict[str, Any] = {"num_samples": self.num_samples, "seed": self.seed,
                                "fractions": list(self.fractions), "indices": self.indices}
        if self.group_key is not None or self.num_groups is not None:
            data.update(group_key=self.group_key, num_groups=self.num_groups)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "Split":
        data = json.loads(text)
        return cls(num_samples=data["num_samples"], seed=data["seed"],
                   fractions=tuple(data["fractions"]), indices={k: list(v) for k, v in data["indices"].items()},
                   group_key=data.get("group_key"), num_groups=data.get("num_groups"))

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Split":
        return cls.from_json(Path(path).read_text())


def make_split(num_samples: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
               groups: Sequence[Hashable] | None = None, group_key: str | None = None) -> Split:
    """Split ``num_samples`` indices into train/val/test.

    Args:
        num_samples: size of the dataset.
        fractions: shares of train, val and test; must be >= 0 and sum to 1.
        seed: the same seed and size (and groups) always give the same split.
        groups: one hashable group id per sample (a system or trajectory id),
            or None to split by sample. With groups, a seeded permutation of
            the distinct groups (numbered in order of first appearance) is cut
            where the sample counts of the parts come closest to the
            fractions; every part with a fraction > 0 gets at least one group
            and no group is in two parts. When every group is one sample this
            gives the split by sample (except for datasets too small to give
            each non-empty part a sample that way).
        group_key: the key the groups were read from, recorded in the split.

    Raises:
        ValueError: bad fractions or size, ``groups`` not one per sample, or
            fewer groups than parts with a fraction > 0.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1 (train, val, test); got {fractions}")
    if num_samples < 1:
        raise ValueError(f"cannot split a dataset of {num_samples} samples")
    if groups is not None:
        return _make_group_split(num_samples, fractions, seed, groups, group_key)  # type: ignore[arg-type]
    order = np.random.Generator(np.random.PCG64(seed)).permutation(num_samples)
    num_train = int(round(fractions[0] * num_samples))
    num_val = int(round(fractions[1] * num_samples))
    if fractions[1] > 0 and num_val == 0 and num_samples - num_train > 0:
        num_val = 1
    num_val = min(num_val, num_samples - num_train)
    cuts = {"train": order[:num_train], "val": order[num_train:num_train + num_val],
            "test": order[num_train + num_val:]}
    return Split(num_samples=num_samples, seed=seed, fractions=fractions,  # type: ignore[arg-type]
                 indices={name: sorted(int(i) for i in part) for name, part in cuts.items()})


def _make_group_split(num_samples: int, fractions: tuple[float, float, float], seed: int,
                      groups: Sequence[Hashable], group_key: str | None) -> Split:
    """:func:`make_split` with groups: whole groups, in seeded order, cut by sample counts."""
    if len(groups) != num_samples:
        raise ValueError(f"groups must give one group id per sample: got {len(groups)} for {num_samples} samples")
    number: dict[Hashable, int] = {}
    members: list[list[int]] = []
    for index, group in enumerate(groups):
        if group not in number:
            number[group] = len(members)
            members.append([])
        members[number[group]].append(index)
    num_groups = len(members)
    names = [name for name, fraction in zip(SPLIT_NAMES, fractions) if fraction > 0]
    if num_groups < len(names):
        by = f"{group_key!r}" if group_key else "the groups given"
        raise ValueError(f"cannot split {num_samples} samples by {by} into {', '.join(names)}: there are only "
                         f"{num_groups} distinct group(s), and each part with a fraction > 0 needs one; split by "
                         f"sample instead, use more groups, or set to 0 the fractions of parts that may be empty")
    order = np.random.Generator(np.random.PCG64(seed)).permutation(num_groups)
    # cumulative[k]: samples in the first k groups of the order
    cumulative = np.concatenate([[0], np.cumsum([len(members[g]) for g in order])])
    has_val, has_test = fractions[1] > 0, fractions[2] > 0

    def closest(target: int, low: int, high: int) -> int:
        """The cut k in [low, high] whose sample count is closest to ``target`` (the first on a tie)."""
        return low + int(np.argmin(np.abs(cumulative[low:high + 1] - target)))

    if not has_val and not has_test:
        train_end = num_groups
    else:
        train_end = closest(int(round(fractions[0] * num_samples)), 1 if fractions[0] > 0 else 0,
                            num_groups - has_val - has_test)
    if not has_test:
        val_end = num_groups
    elif not has_val:
        val_end = train_end
    else:
        val_end = closest(int(cumulative[train_end]) + int(round(fractions[1] * num_samples)),
                          train_end + 1, num_groups - 1)
    cuts = {"train": order[:train_end], "val": order[train_end:val_end], "test": order[val_end:]}
    return Split(num_samples=num_samples, seed=seed, fractions=fractions,  # type: ignore[arg-type]
                 indices={name: sorted(i for g in part for i in members[g]) for name, part in cuts.items()},
                 group_key=group_key, num_groups=num_groups)


def join_splits(splits: Sequence[Split]) -> Split:
    """The splits of datasets read one after another (:class:`~matsciml.data.concatenated.ConcatenatedDatasets`).

    Each dataset is split on its own, so each keeps its fractions in every
    part (a small dataset is never left out of training by chance); the
    indices of dataset ``k`` are shifted by the sizes of the datasets before
    it. The groups of a grouped split add up (no group spans two datasets).
    """
    if not splits:
        raise ValueError("no splits to join")
    indices: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    offset = 0
    for split in splits:
        for name in SPLIT_NAMES:
            indices[name].extend(offset + i for i in split.indices.get(name, []))
        offset += split.num_samples
    keys = {split.group_key for split in splits}
    grouped = all(split.num_groups is not None for split in splits)
    return Split(num_samples=offset, seed=splits[0].seed, fractions=splits[0].fractions, indices=indices,
                 group_key=keys.pop() if len(keys) == 1 else None,
                 num_groups=sum(split.num_groups for split in splits) if grouped else None)  # type: ignore[misc]


def split_summary(split: Split, groups: Sequence[Hashable] | None = None) -> str:
    """One line saying how a split was made.

    ``split by system_id: 100 groups -> 80/10/10 groups, 240/30/30 samples``
    (group counts per part need the ``groups`` the split was made from), or
    ``split by sample: 300 samples -> 240/30/30``.
    """
    samples = "/".join(str(len(split[name])) for name in SPLIT_NAMES)
    if split.num_groups is None:
        return f"split by sample: {split.num_samples} samples -> {samples}"
    line = f"split by {split.group_key or 'group'}: {split.num_groups} groups -> "
    if groups is not None:
        line += "/".join(str(len({groups[i] for i in split[name]})) for name in SPLIT_NAMES) + " groups, "
    return line + f"{samples} samples"
