"""The backbone contract (matsciml.interfaces), checked when a run is built, and a backbone that keeps it.

In-process: hand-made backbones that break one promise each are refused by
:func:`matsciml.training.run.check_backbone_contract` with one line naming
the model, its distribution and what is wrong, and a task never meets them
with a cryptic error. Through installed entry points: the toy plugin
(tests/plugins/matsciml_toyplugin), written from the README's contract with
the core's DGL-free building blocks, trains end to end through `matsciml
train`, learns, and evaluates back to the same metrics; its `toy-tensor`
model, whose forward returns a bare tensor, stops the run before it starts.
None of it needs DGL: it runs in the current-torch environment too.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from installed_plugins import environment
from torch import nn

from matsciml.batch import Batch, collate_structures
from matsciml.errors import IncompatibleComponentsError, MatscimlError
from matsciml.interfaces import BackboneOutput
from matsciml.specs import ModelSpec
from matsciml.training.run import check_backbone_contract

README_POINTER = "see README 'Writing a plugin'"


# ------------------------------------------------------------------ in-process: one broken promise each
class GoodNet(nn.Module):
    """Keeps the contract: invariant per-atom features from distances to the structure's centroid."""

    representation = "toy-points"
    embedding_dim = 4
    structure_embedding_dim: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(119, 4)
        self.radial = nn.Linear(1, 4)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, batch: Batch) -> Any:
        centroid = torch.zeros(batch.num_structures, 3, dtype=batch.pos.dtype).index_add_(
            0, batch.structure_index, batch.pos) / batch.num_atoms[:, None].to(batch.pos.dtype)
        distance = torch.linalg.vector_norm(batch.pos - centroid[batch.structure_index], dim=-1, keepdim=True)
        if self.training:
            self.calls += 1  # a state change the check must not cause (it runs in eval mode)
        return BackboneOutput(atom_features=self.embed(batch.atomic_numbers) + self.radial(distance))


class ReturnsTensor(GoodNet):
    def forward(self, batch: Batch) -> Any:
        return super().forward(batch).atom_features


class PerStructureRows(GoodNet):
    def forward(self, batch: Batch) -> Any:
        return BackboneOutput(atom_features=super().forward(batch).atom_features[: batch.num_structures])


class WrongWidth(GoodNet):
    embedding_dim = 5


class IntegerFeatures(GoodNet):
    def forward(self, batch: Batch) -> Any:
        return BackboneOutput(atom_features=super().forward(batch).atom_features.round().long())


class UndeclaredStructureFeatures(GoodNet):
    def forward(self, batch: Batch) -> Any:
        return BackboneOutput(super().forward(batch).atom_features, torch.zeros(batch.num_structures, 3))


class MissingStructureFeatures(GoodNet):
    structure_embedding_dim = 3


class StructureFeaturesPerAtom(GoodNet):
    structure_embedding_dim = 3

    def forward(self, batch: Batch) -> Any:
        atoms = super().forward(batch).atom_features
        return BackboneOutput(atoms, torch.zeros(atoms.shape[0], 3))


class WithStructureFeatures(GoodNet):
    structure_embedding_dim = 3

    def forward(self, batch: Batch) -> Any:
        return BackboneOutput(super().forward(batch).atom_features, torch.zeros(batch.num_structures, 3))


class OtherRepresentation(GoodNet):
    representation = "dgl-graph"


class NoEmbeddingDim(GoodNet):
    embedding_dim = None  # type: ignore[assignment]


class Raises(GoodNet):
    def forward(self, batch: Batch) -> Any:
        raise TypeError("expected a DGLGraph, got NoneType")


def _spec(cls: type) -> ModelSpec:
    return ModelSpec(name="my-net", summary="s", factory=cls, representation="toy-points").with_distribution(
        "my-backbone")


def _batch() -> Batch:
    rng = np.random.default_rng(0)
    samples = [{"atomic_numbers": np.array(numbers), "pos": rng.normal(size=(len(numbers), 3)),
                "pbc": np.zeros(3, dtype=bool)} for numbers in ([1, 8], [6, 1, 1])]
    return collate_structures(samples)


@pytest.mark.parametrize("cls, problem", [
    (ReturnsTensor, "forward returned a Tensor, not matsciml.interfaces.BackboneOutput"),
    (PerStructureRows, "forward returned atom_features of shape [2, 4] for this batch, expected "
                       "[num_atoms_total, embedding_dim] = [5, 4]"),
    (WrongWidth, "forward returned atom_features of shape [5, 4] for this batch, expected "
                 "[num_atoms_total, embedding_dim] = [5, 5]"),
    (IntegerFeatures, "forward returned atom_features of dtype torch.int64, not floating point"),
    (UndeclaredStructureFeatures, "forward returned structure_features but the model declares no "
                                  "structure_embedding_dim; set it to their width"),
    (MissingStructureFeatures, "the model declares structure_embedding_dim=3 but forward returned no structure_features"),
    (StructureFeaturesPerAtom, "forward returned structure_features of shape [5, 3] for this batch, expected "
                               "[num_structures, structure_embedding_dim] = [2, 3]"),
    (OtherRepresentation, "the built model declares representation 'dgl-graph' but its spec says 'toy-points'"),
    (NoEmbeddingDim, "backbone NoEmbeddingDim has no attribute 'embedding_dim': it must declare the width D of "
                     "the atom_features [num_atoms, D] its forward returns as a positive integer"),
    (Raises, "forward failed on a batch of 2 structures of the run's data (TypeError: expected a DGLGraph, "
             "got NoneType)"),
])
def test_a_broken_promise_is_one_line_naming_the_model(cls: type, problem: str) -> None:
    """Each way of breaking the contract: one line with the model, its distribution, the problem and the README."""
    with pytest.raises(IncompatibleComponentsError) as info:
        check_backbone_contract(cls(), _spec(cls), _batch())
    message = str(info.value)
    assert message.startswith(f"model 'my-net' (my-backbone): {problem}"), message
    assert message.endswith(README_POINTER) and "\n" not in message


@pytest.mark.parametrize("cls", [GoodNet, WithStructureFeatures])
def test_a_backbone_that_keeps_the_contract_passes_unchanged(cls: type) -> None:
    """The check passes a good backbone and leaves it as it was: training mode, buffers, no gradients."""
    model = cls().train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    check_backbone_contract(model, _spec(cls), _batch())
    assert model.training
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_tasks_name_what_a_backbone_lacks() -> None:
    """A task given a backbone without embedding_dim, or one whose forward returns a tensor, says so in one line."""
    from matsciml.tasks.s2ef import S2EFTask

    with pytest.raises(MatscimlError, match=rf"backbone NoEmbeddingDim has no attribute 'embedding_dim'.*"
                                            rf"{README_POINTER}"):
        S2EFTask(NoEmbeddingDim())
    task = S2EFTask(ReturnsTensor())
    with pytest.raises(MatscimlError, match=rf"backbone ReturnsTensor: forward returned Tensor, not "
                                            rf"matsciml.interfaces.BackboneOutput.*{README_POINTER}"):
        task.energy(_batch())


# ------------------------------------------------------------------ the toy plugin, installed
def _matsciml(site: Path, *arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "matsciml", *arguments], capture_output=True, text=True,
                          env=environment(site), timeout=600, cwd=cwd)


TOY_RUN = ["--model", "toy-mlp", "--dataset", "toy-dataset", "dataset.options.num_samples=64",
           "dataset.options.seed=1", "dataset.split=[0.7,0.3,0.0]", "model.hidden_dim=8", "model.num_layers=1",
           "task.head_hidden_dim=16", "optimizer.lr=0.01", "trainer.max_epochs=3", "trainer.accelerator=cpu",
           "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def test_the_toy_plugin_trains_through_the_cli_without_dgl(toy_site: Path, tmp_path: Path) -> None:
    """`matsciml train --model toy-mlp`: S2EF on the toy molecules beats the zero-force baseline, and
    `matsciml evaluate` of the best checkpoint gives the same metrics."""
    done = _matsciml(toy_site, "train", "--json", *TOY_RUN, f"run.dir={tmp_path}", "run.name=toy")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    metrics, baseline = result["metrics"], result["baselines"]["mean"]
    assert metrics["force_mae"] < 0.85 * baseline["force_mae"], (metrics, baseline)
    assert metrics["energy_mae"] < baseline["energy_mae"], (metrics, baseline)
    assert metrics["force_cosine"] > 0.5, metrics
    again = _matsciml(toy_site, "evaluate", result["best_checkpoint"], "--json")
    assert again.returncode == 0, again.stderr
    for name, value in metrics.items():
        assert json.loads(again.stdout)["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_a_model_that_breaks_the_contract_stops_before_training(toy_site: Path, tmp_path: Path) -> None:
    """`--model toy-tensor` (forward returns a tensor): exit 1, one line naming model and distribution, no run."""
    done = _matsciml(toy_site, "train", "--model", "toy-tensor", "--dataset", "toy-dataset",
                     f"run.dir={tmp_path / 'runs'}")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "matsciml: error: model 'toy-tensor' (matsciml-toyplugin 0.3.1): forward returned a Tensor, not "
        "matsciml.interfaces.BackboneOutput; see README 'Writing a plugin'"), done.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_third_party_model_ties_its_cutoff_by_declaration(toy_registry) -> None:
    """toy-mlp declares tied_params: setting the representation's cutoff sets the model's, and back."""
    from matsciml.training.config import build_config
    from matsciml.training.run import resolve_config

    config = resolve_config(build_config(overrides=["model.name=toy-mlp", "representation.cutoff_radius=3.5"]),
                            toy_registry)
    assert config["model"]["cutoff_radius"] == 3.5 == config["representation"]["cutoff_radius"]
    config = resolve_config(build_config(overrides=["model.name=toy-mlp", "model.cutoff_radius=3.0"]), toy_registry)
    assert config["representation"]["cutoff_radius"] == 3.0
    with pytest.raises(IncompatibleComponentsError, match="model.cutoff_radius=3.0 and representation.cutoff_radius"
                                                          "=3.5 differ"):
        resolve_config(build_config(overrides=["model.name=toy-mlp", "model.cutoff_radius=3.0",
                                               "representation.cutoff_radius=3.5"]), toy_registry)


def test_a_preset_is_checked_recorded_and_written_out_in_the_resolved_config(toy_registry) -> None:
    """model.preset=NAME: an unknown name is one line listing the presets; the resolved config keeps the name
    and every value, so it rebuilds the same model; only models have presets."""
    from matsciml.training.config import build_config
    from matsciml.training.run import resolve_config

    with pytest.raises(MatscimlError) as raised:
        resolve_config(build_config(overrides=["model.name=toy-mlp", "model.preset=huge"]), toy_registry)
    assert str(raised.value).startswith("model.preset='huge' is not valid: expected one of 'default'")
    config = resolve_config(build_config(overrides=["model.name=toy-mlp", "model.preset=default"]), toy_registry)
    assert config["model"]["preset"] == "default"
    assert resolve_config(config, toy_registry) == config
    with pytest.raises(MatscimlError, match=r"^task.preset='small': only models have presets"):
        resolve_config(build_config(overrides=["model.name=toy-mlp", "task.preset=small"]), toy_registry)


# ------------------------------------------------------------------ the README's backbone
def _readme_plugin(root: Path) -> Path:
    """The plugin of README "Writing a plugin", written out file by file from its code blocks."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Writing a plugin"):readme.index("### Checking a backbone")]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    project = root / "my_backbone"
    (project / "my_backbone").mkdir(parents=True)
    (project / "my_backbone" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(next(text for language, text in blocks if language == "toml"))
    written = []
    for language, text in blocks:
        first = text.splitlines()[0]
        if language == "python" and first.startswith("# my_backbone/"):
            (project / first[2:]).write_text(text)
            written.append(first[2:])
    assert sorted(written) == ["my_backbone/model.py", "my_backbone/plugin.py"], written
    return project


@pytest.mark.dgl
def test_a_backbone_written_from_the_readme_alone_trains(tmp_path: Path) -> None:
    """The README's plugin, installed with pip as it says, trains through `matsciml train` (S2EF, forces
    by autograd through its geometry) and ties its cutoff to the graph's."""
    project = _readme_plugin(tmp_path)
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--no-index", "--disable-pip-version-check", "--target", str(site), str(project)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    printed = _matsciml(site, "train", "--print-config", "--model", "my-backbone", "representation.cutoff_radius=5.0")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.count("cutoff_radius: 5.0") == 2
    done = _matsciml(site, "train", "--json", "--model", "my-backbone", "model.hidden_dim=8", "model.num_layers=1",
                     "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.accelerator=cpu",
                     "trainer.enable_progress_bar=false", f"run.dir={tmp_path / 'runs'}")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["metrics"]
    assert {"energy_mae", "force_mae", "force_cosine"} <= set(metrics)
    assert all(np.isfinite(value) for value in metrics.values())
