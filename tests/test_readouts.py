"""Size-aware regression readouts: each per-structure target is declared extensive or intensive.

The declaration lives where keys are declared: the field registry for the
built-in keys (energy: extensive; band gap: intensive), and the dataset's
metadata for a dataset's own keys (``matsciml data convert --field
KEY=extensive``). A regression target's default readout follows it (sum for
extensive, mean for intensive); ``task.readout`` overrides it; a key nobody
declared gets mean, and training says so on standard error.

The supercell test uses a tiny deterministic backbone written here: invariant
per-atom features from the core's periodic neighbour list
(:mod:`matsciml.neighbors`), so an atom of a 2x2x1 supercell has exactly the
features of its atom in the cell, and a sum readout must give exactly four
times the cell's prediction.
"""
from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from installed_plugins import environment

from matsciml import fields
from matsciml.batch import Batch, collate_structures
from matsciml.builtins import resolve_readouts
from matsciml.errors import MatscimlError
from matsciml.fields import FieldSpec, field_spec
from matsciml.interfaces import BackboneOutput
from matsciml.neighbors import radius_graph
from matsciml.registry import get_registry

_NOTE = "has no extensive/intensive declaration; using readout mean"


@pytest.fixture(autouse=True)
def _isolated_fields() -> Iterator[None]:
    """Datasets opened (or fields declared) in one test do not leak into the next."""
    with fields.isolated():
        yield


# ------------------------------------------------------------------ declarations in the registry
@pytest.mark.parametrize("name, extensive", [
    ("energy", True), ("free_energy", True), ("relaxed_energy", True), ("magmom", True), ("dipole", True),
    ("energy_per_atom", False), ("uncorrected_energy_per_atom", False), ("formation_energy_per_atom", False),
    ("energy_above_hull", False), ("band_gap", False), ("efermi", False), ("stress", False),
    ("charges", None), ("forces", None), ("magmoms", None), ("energies", None), ("total_charge", None),
])
def test_registered_fields_declare_extensive_or_intensive(name: str, extensive: bool | None) -> None:
    spec = field_spec(name)
    assert spec.extensive is extensive
    if extensive is not None:
        assert ("extensive" if extensive else "intensive") in spec.describe()


def test_a_per_atom_field_is_neither() -> None:
    with pytest.raises(ValueError, match="field 'q': a per-atom field is neither extensive nor intensive"):
        FieldSpec("q", "target", "atom", extensive=True)
    with pytest.raises(ValueError, match="extensive 'yes' is not True, False or None"):
        FieldSpec("q", "target", "structure", extensive="yes")  # type: ignore[arg-type]


def test_registered_targets_resolve_to_their_declared_readout(capsys: pytest.CaptureFixture[str]) -> None:
    """Totals get sum (task.targets=[energy] included: never a total under mean), intensive values mean,
    per-atom targets none; task.readout overrides; nothing is said about declared keys."""
    spec = get_registry().task("regression")
    targets = ["energy", "free_energy", "relaxed_energy", "magmom", "band_gap", "efermi", "energy_per_atom",
               "formation_energy_per_atom", "energy_above_hull", "uncorrected_energy_per_atom", "charges"]
    resolved = spec.resolve_params({"targets": targets})["readout"]
    assert resolved == {"energy": "sum", "free_energy": "sum", "relaxed_energy": "sum", "magmom": "sum",
                        "band_gap": "mean", "efermi": "mean", "energy_per_atom": "mean",
                        "formation_energy_per_atom": "mean", "energy_above_hull": "mean",
                        "uncorrected_energy_per_atom": "mean"}
    assert spec.resolve_params({"targets": ["energy"]})["readout"] == {"energy": "sum"}
    assert spec.resolve_params({"targets": "energy"})["readout"] == {"energy": "sum"}
    assert spec.resolve_params({"targets": ["energy", "band_gap"], "readout": {"energy": "mean"}})["readout"] == {
        "energy": "mean", "band_gap": "mean"}
    assert spec.resolve_params({"targets": ["energy", "band_gap"], "readout": "sum"})["readout"] == {
        "energy": "sum", "band_gap": "sum"}
    assert _NOTE not in capsys.readouterr().err


def test_an_undeclared_key_gets_mean_and_a_note_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert resolve_readouts(["my_key", "band_gap"], None) == {"my_key": "mean", "band_gap": "mean"}
    err = capsys.readouterr().err
    assert err.count(_NOTE) == 1 and err.startswith("matsciml: note: task target 'my_key' " + _NOTE), err
    assert "set task.readout.my_key=sum for a total" in err and len(err.strip().splitlines()) == 1
    # given explicitly (as in a resolved config read back): nothing to say
    assert resolve_readouts(["my_key"], {"my_key": "mean"}) == {"my_key": "mean"}
    assert resolve_readouts(["my_key"], None, note=False) == {"my_key": "mean"}
    assert capsys.readouterr().err == ""


def test_a_datasets_declaration_sets_the_readout_of_its_own_key(capsys: pytest.CaptureFixture[str]) -> None:
    metadata = _metadata(my_total=True, my_gap=False, my_other=None, my_charges="atom")
    assert resolve_readouts(["my_total", "my_gap", "my_charges"], None, metadata) == {
        "my_total": "sum", "my_gap": "mean"}
    assert capsys.readouterr().err == ""
    with pytest.raises(MatscimlError, match="task.readout names 'my_charges', a per-atom target"):
        resolve_readouts(["my_total", "my_charges"], {"my_charges": "sum"}, metadata)
    # a dataset opened in this process declares its keys for code without the metadata in hand
    fields.declare_dataset_fields(metadata)
    assert resolve_readouts(["my_total", "my_other"], None) == {"my_total": "sum", "my_other": "mean"}
    assert capsys.readouterr().err.count("task target 'my_other' " + _NOTE) == 1


def test_metadata_contradicting_the_registry_is_refused() -> None:
    metadata = {"name": "bad", "keys": {"band_gap": {"role": "target", "arity": "structure", "extensive": True}}}
    with pytest.raises(fields.FieldConflictError, match="records 'band_gap' as extensive, but the registered field"):
        resolve_readouts(["band_gap"], None, metadata)
    metadata = {"name": "bad", "keys": {"q": {"role": "target", "arity": "atom", "extensive": True}}}
    with pytest.raises(MatscimlError, match="records extensive=True for the per-atom key 'q'"):
        field_spec("q", metadata)


# ------------------------------------------------------------------ the task keeps what it resolved
def test_the_task_resolves_a_datasets_key_at_fit_and_checkpoints_carry_it(capsys) -> None:
    """Built without the dataset (plain Lightning), the task resolves readouts not given when it fits its
    statistics with the dataset's metadata; a reloaded task reads them from its state."""
    from matsciml.tasks import PropertyRegressionTask

    metadata = _metadata(my_total=True, my_gap=False, my_other=None)
    samples = [{**_cell(), "my_total": 1.5 * k, "my_gap": 0.2 * k, "my_other": 1.0 + k} for k in range(1, 5)]
    task = PropertyRegressionTask(RadialBackbone(), targets=["my_total", "my_gap", "my_other"])
    assert capsys.readouterr().err == ""  # nothing is said before the dataset's declarations are known
    task.fit_statistics(samples, metadata)
    assert task.readout == {"my_total": "sum", "my_gap": "mean", "my_other": "mean"}
    assert task.target_sum.tolist() == [True, False, False]
    assert capsys.readouterr().err.count("task target 'my_other' " + _NOTE) == 1
    # the total's statistics are per atom (3 atoms each)
    assert float(task.target_mean[0, 0]) == pytest.approx(np.mean([1.5 * k / 3 for k in range(1, 5)]))

    reloaded = PropertyRegressionTask(RadialBackbone(), targets=["my_total", "my_gap", "my_other"])
    assert reloaded.readout["my_total"] == "mean"  # nothing declares it in this process
    reloaded.load_state_dict(task.state_dict())
    assert reloaded.readout == task.readout
    old = {key: value for key, value in task.state_dict().items() if key != "target_sum"}  # an older checkpoint
    again = PropertyRegressionTask(RadialBackbone(), targets=["my_total", "my_gap", "my_other"], readout="sum")
    again.load_state_dict(old)  # keeps the readouts it was built with
    assert again.readout == {"my_total": "sum", "my_gap": "sum", "my_other": "sum"}


# ------------------------------------------------------------------ exactly extensive for a supercell
class RadialBackbone(torch.nn.Module):
    """Invariant per-atom features: species embeddings plus radial sums over periodic neighbours."""

    representation = "test-radius-graph"
    embedding_dim = 8
    cutoff = 3.2

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.species = torch.nn.Parameter(torch.randn(10, self.embedding_dim, generator=generator))
        self.mix = torch.nn.Parameter(torch.randn(self.embedding_dim, self.embedding_dim, generator=generator) / 3)
        self.register_buffer("centres", torch.linspace(0.8, self.cutoff, self.embedding_dim))

    def forward(self, batch: Batch) -> BackboneOutput:
        senders, receivers, images = batch.inputs
        dtype = batch.pos.dtype
        cells = batch.cell[batch.structure_index[receivers]]
        vectors = batch.pos[senders] + torch.einsum("ek,ekl->el", images.to(dtype), cells) - batch.pos[receivers]
        distances = vectors.norm(dim=-1)
        envelope = 0.5 * (torch.cos(math.pi * distances / self.cutoff) + 1)
        radial = torch.exp(-4.0 * (distances[:, None] - self.centres.to(dtype)) ** 2) * envelope[:, None]
        messages = radial * self.species.to(dtype)[batch.atomic_numbers[senders]]
        summed = torch.zeros(len(batch.atomic_numbers), self.embedding_dim, dtype=dtype).index_add_(
            0, receivers, messages)
        features = self.species.to(dtype)[batch.atomic_numbers] + summed
        return BackboneOutput(atom_features=torch.tanh(features @ self.mix.to(dtype)))


def _collate(samples: Sequence[dict[str, Any]]) -> Batch:
    """A batch whose input is the periodic radius graph of each structure, offset atom-wise."""
    senders, receivers, images, offset = [], [], [], 0
    for sample in samples:
        s, r, i = radius_graph(sample["pos"], sample["cell"], sample["pbc"], RadialBackbone.cutoff)
        senders.append(s + offset)
        receivers.append(r + offset)
        images.append(i)
        offset += len(sample["atomic_numbers"])
    edges = tuple(torch.from_numpy(np.concatenate(part)) for part in (senders, receivers, images))
    return collate_structures(samples, inputs=edges, dtype=torch.float64)


def _cell() -> dict[str, Any]:
    """Three atoms in a skewed periodic cell (Li, O, H)."""
    cell = np.array([[3.9, 0.0, 0.0], [0.6, 4.1, 0.0], [0.3, -0.4, 4.4]])
    fractional = np.array([[0.05, 0.10, 0.00], [0.45, 0.55, 0.30], [0.70, 0.20, 0.65]])
    return {"atomic_numbers": np.array([3, 8, 1], dtype=np.int64), "pos": fractional @ cell, "cell": cell,
            "pbc": np.array([True, True, True])}


def _tile(sample: dict[str, Any], repeats: tuple[int, int, int]) -> dict[str, Any]:
    """The same crystal in a supercell, tiled with numpy (no ASE)."""
    cell = sample["cell"]
    shifts = np.array([[a, b, c] for a in range(repeats[0]) for b in range(repeats[1])
                       for c in range(repeats[2])], dtype=np.float64) @ cell
    return {"atomic_numbers": np.tile(sample["atomic_numbers"], len(shifts)),
            "pos": (sample["pos"][None, :, :] + shifts[:, None, :]).reshape(-1, 3),
            "cell": cell * np.array(repeats, dtype=np.float64)[:, None], "pbc": sample["pbc"]}


def test_sum_readout_of_total_energy_is_exact_for_a_2x2x1_supercell() -> None:
    """The default readout of energy (sum) gives the supercell four times the cell's energy to 1e-10;
    band gap (mean) stays; energy forced to mean would not scale (why totals must never default to mean)."""
    from matsciml.tasks import PropertyRegressionTask

    torch.manual_seed(0)
    task = PropertyRegressionTask(RadialBackbone(), targets=["energy", "band_gap"], head_hidden_dim=16)
    assert task.readout == {"energy": "sum", "band_gap": "mean"}
    task = task.double().eval()
    task.target_mean.copy_(torch.tensor([-3.7, 1.1], dtype=torch.float64))  # per atom for the sum readout
    task.target_std.copy_(torch.tensor([0.4, 0.6], dtype=torch.float64))
    cell = _cell()
    supercell = _tile(cell, (2, 2, 1))
    assert len(supercell["atomic_numbers"]) == 12
    one_batch, four_batch = _collate([cell]), _collate([supercell])
    with torch.no_grad():
        # the backbone sees the same environment for every copy of an atom
        one_features = task.features(one_batch).atom_features
        four_features = task.features(four_batch).atom_features
        assert torch.allclose(four_features, one_features.repeat(4, 1), rtol=0, atol=1e-12)
        one, four = task.predict(one_batch), task.predict(four_batch)
        both = task.predict(_collate([cell, supercell]))
    energy = float(one["energy"])
    assert abs(energy) > 1.0
    assert abs(float(four["energy"]) - 4 * energy) <= 1e-10 * abs(4 * energy)
    assert abs(float(both["energy"][1]) - 4 * float(both["energy"][0])) <= 1e-10 * abs(4 * energy)
    assert abs(float(four["band_gap"]) - float(one["band_gap"])) <= 1e-10 * abs(float(one["band_gap"]))

    torch.manual_seed(0)
    pooled = PropertyRegressionTask(RadialBackbone(), targets=["energy"], readout={"energy": "mean"},
                                    head_hidden_dim=16).double().eval()
    with torch.no_grad():
        one, four = pooled.predict(one_batch), pooled.predict(four_batch)
    assert float(four["energy"]) == pytest.approx(float(one["energy"]), rel=1e-10)  # not extensive


# ------------------------------------------------------------------ declared at conversion
@pytest.fixture
def extxyz(tmp_path: Path) -> Path:
    """Copper cells of 1..4 layers with a total (my_total), an intensive value (my_gap) and an undeclared one."""
    pytest.importorskip("ase")
    from ase.build import bulk
    from ase.io import write

    images = []
    for layers in range(1, 5):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, layers))
        atoms.rattle(0.02, seed=layers)
        atoms.info["my_total"] = -3.5 * len(atoms) + 0.01 * layers
        atoms.info["my_gap"] = 0.1 * layers
        atoms.info["my_other"] = 2.0 + layers
        images.append(atoms)
    path = tmp_path / "cu.extxyz"
    write(path, images, format="extxyz")
    return path


def _convert(source: Path, out: Path, *options: str) -> int:
    from matsciml.cli import main

    return main(["data", "convert", str(source), "-o", str(out), "--quiet",
                 *[item for option in options for item in ("--field", option)]])


def test_field_extensive_at_conversion_makes_the_readout_sum(extxyz: Path, tmp_path: Path, toy_registry,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`--field my_total=extensive` is recorded in the metadata and gives the regression readout sum with
    no readout in the config; `--field my_gap=target,intensive` gives mean; the undeclared key gets mean with
    one note, and resolving the resolved config again says nothing."""
    from matsciml.data.dataset import LMDBDataset
    from matsciml.training.config import build_config
    from matsciml.training.run import resolve_config

    out = tmp_path / "cu.lmdb"
    assert _convert(extxyz, out, "my_total=extensive", "my_gap=target,intensive") == 0
    capsys.readouterr()
    # nothing of the dataset is declared in this process until the config is resolved
    config = resolve_config(build_config(overrides=[
        "model.name=toy-mlp", "task.name=regression", f"dataset.name={out}",
        "task.targets=[my_total,my_gap,my_other]"]), toy_registry)
    assert config["task"]["readout"] == {"my_total": "sum", "my_gap": "mean", "my_other": "mean"}
    err = capsys.readouterr().err
    assert err.count(_NOTE) == 1 and "task target 'my_other'" in err, err
    assert resolve_config(config, toy_registry) == config  # a printed config reads back unchanged
    assert _NOTE not in capsys.readouterr().err

    keys = LMDBDataset(out).metadata["keys"]
    assert (keys["my_total"]["extensive"], keys["my_total"]["arity"], keys["my_total"]["arity_from"]) == (
        True, "structure", "declared")
    assert (keys["my_gap"]["extensive"], keys["my_gap"]["role"]) == (False, "target")
    assert "extensive" not in keys["my_other"] and "extensive" not in keys["pos"]


def test_print_config_shows_the_datasets_declared_readout(extxyz: Path, tmp_path: Path, toy_site: Path) -> None:
    out = tmp_path / "cu.lmdb"
    assert _convert(extxyz, out, "my_total=extensive") == 0
    done = subprocess.run([sys.executable, "-m", "matsciml", "train", "--print-config", "--model", "toy-mlp",
                           "--task", "regression", "--dataset", str(out), "task.targets=[my_total,my_gap]"],
                          capture_output=True, text=True, env=environment(toy_site), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "  readout:\n    my_total: sum\n    my_gap: mean\n" in done.stdout, done.stdout
    assert done.stderr.count(_NOTE) == 1 and "task target 'my_gap'" in done.stderr, done.stderr


@pytest.mark.parametrize("options, fragments", [
    (["band_gap=extensive"], ["'band_gap' is declared extensive", "registered field",
                              "intensive (electronic band gap)"]),
    (["charges=intensive"], ["'charges' is declared intensive", "registered field", "per-atom target in e"]),
    (["my_gap=atom,intensive"], ["'my_gap' is declared intensive and per atom", "only a per-structure value"]),
    (["my_gap=huge"], ["--field 'my_gap=huge'", "'huge' is not a role or an arity, nor extensive or intensive"]),
    (["my_gap=extensive,intensive"], ["--field 'my_gap=extensive,intensive' gives two extents"]),
    (["my_gap=extensive", "my_gap=intensive"], ["my_gap was declared extensive by an earlier --field"]),
])
def test_conflicting_or_bad_words_are_one_line_errors(extxyz: Path, tmp_path: Path, options: list[str],
                                                      fragments: list[str], capsys) -> None:
    out = tmp_path / "bad.lmdb"
    capsys.readouterr()
    assert _convert(extxyz, out, *options) == 1
    err = capsys.readouterr().err
    assert err.startswith("matsciml: error: ") and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()


# ------------------------------------------------------------------ helpers
def _metadata(**keys: bool | str | None) -> dict[str, Any]:
    """A dataset's metadata declaring custom keys: True extensive, False intensive, None neither, "atom"."""
    records: dict[str, Any] = {}
    for name, how in keys.items():
        record: dict[str, Any] = {"dtype": "float64", "role": "target",
                                  "arity": "atom" if how == "atom" else "structure"}
        record["shape"] = ["N"] if how == "atom" else []
        if isinstance(how, bool):
            record["extensive"] = how
        records[name] = record
    return {"name": "mine", "keys": records}
