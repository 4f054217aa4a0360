"""The plugin contract (DESIGN.md rules 3-5) with real installed distributions.

Five tiny third-party projects under ``tests/plugins/`` are installed with
pip into a temporary folder; every test then runs matsciml in a fresh
subprocess with that folder on ``PYTHONPATH``. Discovery therefore goes
through the entry points of installed distributions, exactly as after a
``pip install`` by a user: nothing here patches the registry or fakes
entry points.

- matsciml-toyplugin: model toy-mlp, model toy-tensor (breaks the backbone
  contract), model needs-missing (its representation is not installed),
  representation toy-points, dataset toy-dataset, task toy-task;
- matsciml-brokenplugin: entry point ``broken`` whose module raises on import;
- matsciml-dupplugin: model toy-mlp again (a clash) and dataset dup-only-dataset;
- matsciml-faultyplugin: one entry point per way a hook can fail (it raises,
  returns the wrong spec class, an int, None; ``sys.exit`` at import), named
  after the component it would have provided, and ``sibling``, which works;
- matsciml-raiseplugin: loads, but the factories of model toy-raise and
  dataset toy-raise-dataset raise when built.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import importlib_metadata
import pytest
from installed_plugins import environment, install_plugins

PLUGIN_PROJECTS = ("matsciml_toyplugin", "matsciml_brokenplugin", "matsciml_dupplugin", "matsciml_faultyplugin",
                   "matsciml_raiseplugin")
BUILTIN_DATASETS = ("slab-emt-s2ef", "slab-emt-is2re")
TOY_NAMES = ("toy-mlp", "toy-tensor", "needs-missing", "toy-points", "toy-dataset", "toy-task", "dup-only-dataset",
             "faulty-sibling-dataset", "toy-raise", "toy-raise-dataset")
BROKEN_CAUSE = "simulated import failure in broken plugin"
# entry point of matsciml-faultyplugin -> the error its plugin record carries
HOOK_FAILURES = {
    "hook-raises": "RuntimeError: simulated failure inside the hook matsciml_models",
    "hook-wrong-type": "TypeError: hook matsciml_models returned DatasetSpec",
    "hook-not-iterable": "TypeError: hook matsciml_datasets returned int (42); it must return a list of DatasetSpec",
    "hook-returns-none": "TypeError: hook matsciml_tasks returned NoneType (None); it must return a list of TaskSpec",
    "exits-at-import": "SystemExit: simulated sys.exit at import",
}
FAILED_PLUGINS = 1 + len(HOOK_FAILURES)  # matsciml-brokenplugin and the faulty entry points
RAISE_MODEL_FAILURE = ("model 'toy-raise' from matsciml-raiseplugin failed to build with "
                       "{'hidden_dim': 16, 'dropout': 0.1}: ValueError: simulated factory failure: "
                       "hidden_dim=16 is not supported; check the hyper-parameters or report it to "
                       "that plugin's authors")

# ToyBackbone(hidden_dim=h, num_layers=L, num_radial=K): ElementEmbedding (118 * h) + filter Linear(K, h)
# + L * Linear(h, h).
TOY_PARAMETERS = 118 * 16 + (8 * 16 + 16) + 2 * (16 * 16 + 16)


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the test distributions with pip into a fresh target folder."""
    try:
        return install_plugins(PLUGIN_PROJECTS, tmp_path_factory.mktemp("matsciml-plugins"))
    except RuntimeError as exc:
        pytest.fail(str(exc))


def _environment(site: Path | None) -> dict[str, str]:
    return environment(site)


def _run(site: Path | None, arguments: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(arguments, capture_output=True, text=True, env=_environment(site), timeout=120)


@pytest.fixture(scope="session")
def cli(plugin_site: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m matsciml ARGS`` with the test plugins installed (results cached per argument list)."""
    cache: dict[tuple[str, ...], subprocess.CompletedProcess[str]] = {}

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        if arguments not in cache:
            cache[arguments] = _run(plugin_site, [sys.executable, "-m", "matsciml", *arguments])
        return cache[arguments]

    return run


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return json.loads(done.stdout)


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``matsciml: error:`` line of a failure (exit 1, no traceback)."""
    assert done.returncode == 1, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{done.stderr}"
    assert lines[0].startswith("matsciml: error: "), lines[0]
    return lines[0]


# The Python API, exercised in a subprocess so that it too discovers the
# installed distributions through importlib_metadata from a clean start.
API_PROBE = r"""
import json
from matsciml.data.schema import validate_sample
from matsciml.registry import Registry
from matsciml.specs import KINDS

registry = Registry()

def outcome(call):
    try:
        return {"ok": True, "value": call()}
    except Exception as exc:
        return {"ok": False, "type": type(exc).__name__,
                "bases": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}

def spec_of(kind, name):
    spec = registry.get(kind, name)
    return {"name": spec.name, "distribution": spec.distribution}

def end_to_end():
    dataset = registry.dataset("toy-dataset").build(num_samples=3)
    task_spec = registry.task("toy-task")
    samples = [validate_sample(dataset[i], index=i, source="toy-dataset",
                               required=task_spec.required_targets) for i in range(len(dataset))]
    representation = registry.representation("toy-points").build()
    batch = representation.collate([representation(s) for s in samples])
    toy = [s for s in registry.list("model") if s.name == "toy-mlp" and s.distribution == "matsciml-toyplugin"]
    model = toy[0].build(hidden_dim=8)
    output = model(batch)
    # TaskSpec.build() accepts hyper-parameters only, so the backbone goes to the factory directly.
    task = task_spec.load_factory()("the-backbone", **task_spec.resolve_params({"loss": "l1"}))
    return {"num_samples": len(dataset), "num_atoms": int(batch.atomic_numbers.shape[0]),
            "batch": type(batch).__module__ + "." + type(batch).__name__,
            "output": type(output).__module__ + "." + type(output).__name__,
            "embeddings": list(output.atom_features.shape), "model_representation": model.representation,
            "task": task}

report = {
    "plugins": [record.as_dict() for record in registry.plugins()],
    "conflicts": {kind: {name: sorted(s.distribution for s in specs)
                         for name, specs in registry.conflicts(kind).items()} for kind in KINDS},
    "broken": outcome(lambda: spec_of("model", "broken")),
    "toy_mlp": outcome(lambda: spec_of("model", "toy-mlp")),
    "dup_only": outcome(lambda: {**spec_of("dataset", "dup-only-dataset"),
                                 "length": len(registry.dataset("dup-only-dataset").build())}),
    "needs_missing": outcome(lambda: spec_of("model", "needs-missing")),
    "case": outcome(lambda: spec_of("dataset", "TOY-Dataset")),
    "underscore": outcome(lambda: spec_of("representation", "Toy_Points")),
    "typo": outcome(lambda: spec_of("dataset", "toy-datset")),
    "unknown": outcome(lambda: spec_of("task", "zzz-qqq")),
    "end_to_end": outcome(end_to_end),
    "other_group": {kind: [s.name for s in Registry(group="matsciml-no-such-group").list(kind)] for kind in KINDS},
    "hook_failures": {name: outcome(lambda name=name: spec_of(kind, name)) for name, kind in [
        ("hook-raises", "model"), ("hook-wrong-type", "model"), ("hook-not-iterable", "dataset"),
        ("hook-returns-none", "task"), ("exits-at-import", "model")]},
    "sibling": outcome(lambda: {**spec_of("dataset", "faulty-sibling-dataset"),
                                "length": len(registry.dataset("faulty-sibling-dataset").build())}),
    "raise_model": outcome(lambda: registry.model("toy-raise").build()),
    "raise_dataset": outcome(lambda: registry.dataset("toy-raise-dataset").build(size=5)),
    "raise_range": outcome(lambda: registry.model("toy-raise").build(dropout=1.0)),
}
print(json.dumps(report))
"""


@pytest.fixture(scope="session")
def api(plugin_site: Path) -> dict[str, Any]:
    """What ``matsciml.registry.Registry`` reports and raises with the test plugins installed."""
    done = _run(plugin_site, [sys.executable, "-c", API_PROBE])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _plugin(records: list[dict[str, Any]], distribution: str) -> dict[str, Any]:
    found = [r for r in records if r["distribution"] == distribution]
    assert len(found) == 1, f"{distribution} listed {len(found)} times in {records}"
    return found[0]


# ------------------------------------------------------------------ discovery
def test_plugins_lists_builtins_and_third_party_with_versions(cli) -> None:
    """`matsciml plugins` shows matsciml's built-ins and each installed plugin with its version and components."""
    done = cli("plugins")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert re.search(r"^matsciml\s+0\.1\.0\s+matsciml-builtins\s+ok\s+datasets: slab-emt-s2ef, slab-emt-is2re",
                     rows["matsciml"]), rows["matsciml"]
    toy = rows["matsciml-toyplugin"]
    assert re.search(r"^matsciml-toyplugin\s+0\.3\.1\s+toyplugin\s+ok\s", toy), toy
    for provided in ("models: toy-mlp, toy-tensor, needs-missing", "datasets: toy-dataset",
                     "representations: toy-points", "tasks: toy-task"):
        assert provided in toy
    assert re.search(r"^matsciml-dupplugin\s+1\.0\.0\s+dupplugin\s+ok\s", rows["matsciml-dupplugin"])


def test_plugins_json_matches_the_table(cli) -> None:
    """`matsciml plugins --json` parses and carries the same facts."""
    records = _json(cli("plugins", "--json"))["plugins"]
    builtins = _plugin(records, "matsciml")
    assert builtins["status"] == "ok" and builtins["error"] is None
    assert sorted(builtins["provides"]["dataset"]) == sorted(BUILTIN_DATASETS)
    toy = _plugin(records, "matsciml-toyplugin")
    assert (toy["version"], toy["entry_point"], toy["module"], toy["status"]) == (
        "0.3.1", "toyplugin", "matsciml_toyplugin.plugin", "ok")
    assert toy["provides"] == {"model": ["toy-mlp", "toy-tensor", "needs-missing"], "representation": ["toy-points"],
                               "dataset": ["toy-dataset"], "task": ["toy-task"]}
    dup = _plugin(records, "matsciml-dupplugin")
    assert dup["provides"] == {"model": ["toy-mlp"], "dataset": ["dup-only-dataset"]}


def test_models_lists_the_plugin_models(cli) -> None:
    """`matsciml models` lists the plugin's models with their representation, status and provider."""
    done = cli("models")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^needs-missing\s+missing-rep\s+unavailable\s+matsciml-toyplugin\s", done.stdout, re.M)
    assert re.search(r"^toy-mlp \(conflict\)\s+toy-points\s+ok\s+matsciml-toyplugin\s", done.stdout, re.M)
    assert "  needs-missing: its representation 'missing-rep' is not installed" in done.stdout
    entries = _json(cli("models", "--json"))
    assert {(e["name"], e["distribution"]) for e in entries} >= {
        ("toy-mlp", "matsciml-toyplugin"), ("toy-mlp", "matsciml-dupplugin"), ("needs-missing", "matsciml-toyplugin")}
    toy = next(e for e in entries if e["name"] == "toy-mlp" and e["distribution"] == "matsciml-toyplugin")
    assert toy["representation"] == "toy-points"
    assert [p["name"] for p in toy["hyperparameters"]] == ["hidden_dim", "num_layers", "cutoff_radius", "num_radial"]
    assert toy["tied_params"] == {"cutoff_radius": "cutoff_radius"}


def test_datasets_lists_plugin_and_builtin_datasets(cli) -> None:
    """`matsciml datasets` (table and JSON) shows the built-ins beside the plugins' datasets."""
    done = cli("datasets")
    assert done.returncode == 0, done.stderr
    for name, provider in [("toy-dataset", "matsciml-toyplugin"), ("dup-only-dataset", "matsciml-dupplugin"),
                           *[(name, "matsciml") for name in BUILTIN_DATASETS]]:
        assert re.search(rf"^{name}\s.*\s{provider}\s", done.stdout, re.M), f"{name} from {provider}:\n{done.stdout}"
    entries = {e["name"]: e for e in _json(cli("datasets", "--json"))}
    assert entries["toy-dataset"]["targets"] == ["energy", "forces"]
    assert entries["toy-dataset"]["distribution"] == "matsciml-toyplugin"
    assert entries["slab-emt-s2ef"]["targets"] == ["energy", "forces"]
    assert entries["slab-emt-is2re"]["targets"] == ["relaxed_energy"]
    assert all(entries[name]["distribution"] == "matsciml" for name in BUILTIN_DATASETS)
    assert not any(e["conflict"] for e in entries.values())


def test_representations_and_tasks_are_listed(cli) -> None:
    """The other two kinds are discovered the same way."""
    representations = {e["name"]: e for e in _json(cli("representations", "--json"))}
    assert representations["toy-points"]["distribution"] == "matsciml-toyplugin"
    tasks = {e["name"]: e for e in _json(cli("tasks", "--json"))}
    assert tasks["toy-task"]["required_targets"] == ["energy"]
    done = cli("tasks")
    assert re.search(r"^toy-task\s+energy\s+ok\s+matsciml-toyplugin\s", done.stdout, re.M), done.stdout


def test_builtins_come_through_the_matsciml_entry_point(cli, api) -> None:
    """The core's datasets arrive by the entry point `matsciml-builtins` of distribution `matsciml`
    (the third parties' path); a registry reading another group has none of them."""
    entry_points = importlib_metadata.distribution("matsciml").entry_points.select(group="matsciml")
    assert {(ep.name, ep.value) for ep in entry_points} == {("matsciml-builtins", "matsciml.builtins")}
    builtins = _plugin(_json(cli("plugins", "--json"))["plugins"], "matsciml")
    assert (builtins["entry_point"], builtins["module"]) == ("matsciml-builtins", "matsciml.builtins")
    assert api["other_group"] == {"dataset": [], "representation": [], "model": [], "task": []}


def test_discovery_is_by_installation(plugin_site: Path) -> None:
    """Without the test plugins on the path none of their components exist; the built-ins remain."""
    listing = {}
    for command in ("plugins", "models", "datasets", "representations", "tasks"):
        done = _run(None, [sys.executable, "-m", "matsciml", command, "--json"])
        assert done.returncode == 0, done.stderr
        listing[command] = done.stdout
        assert not any(name in done.stdout for name in TOY_NAMES), f"{command}: {done.stdout}"
        for distribution in ("brokenplugin", "dupplugin", "faultyplugin", "raiseplugin"):
            assert distribution not in done.stdout, f"{command}: {done.stdout}"
    datasets = {e["name"]: e["distribution"] for e in json.loads(listing["datasets"])}
    assert {name: datasets.get(name) for name in BUILTIN_DATASETS} == {n: "matsciml" for n in BUILTIN_DATASETS}
    missing = _run(None, [sys.executable, "-m", "matsciml", "info", "toy-dataset"])
    assert "toy-dataset" in _error_line(missing)


# ------------------------------------------------------------------ isolation
def test_broken_plugin_is_listed_with_its_cause_and_the_others_load(cli) -> None:
    """A plugin that fails to import is shown as an error with its cause; every other plugin is ok."""
    done = cli("plugins")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("matsciml-brokenplugin"))
    assert re.search(rf"0\.0\.7\s+broken\s+ERROR RuntimeError: {BROKEN_CAUSE}", row), row
    records = _json(cli("plugins", "--json"))["plugins"]
    broken = _plugin(records, "matsciml-brokenplugin")
    assert broken["status"] == "error" and broken["provides"] == {}
    assert broken["error"] == f"RuntimeError: {BROKEN_CAUSE}"
    statuses = {r["distribution"]: r["status"] for r in records if r is not broken}
    assert statuses.items() >= {"matsciml": "ok", "matsciml-toyplugin": "ok", "matsciml-dupplugin": "ok"}.items()
    assert f"{FAILED_PLUGINS} plugin(s) failed to load" in cli("models").stdout


def test_asking_for_the_broken_component_fails_with_its_cause(cli, api) -> None:
    """`matsciml info broken` exits 1 and Registry.get raises PluginLoadError, both with the cause and a pip fix."""
    line = _error_line(cli("info", "broken"))
    assert BROKEN_CAUSE in line and "matsciml-brokenplugin" in line
    assert "pip install --force-reinstall matsciml-brokenplugin" in line
    line = _error_line(cli("info", "broken", "--kind", "model"))
    assert "model 'broken'" in line and BROKEN_CAUSE in line
    result = api["broken"]
    assert not result["ok"] and result["type"] == "PluginLoadError"
    assert "MatscimlError" in result["bases"]
    assert BROKEN_CAUSE in result["message"]
    assert "pip install --force-reinstall matsciml-brokenplugin" in result["message"]


def test_components_of_working_plugins_resolve_beside_the_broken_one(api) -> None:
    """With a broken plugin installed, the toy plugin's components build and work together."""
    assert api["needs_missing"] == {"ok": True, "value": {"name": "needs-missing", "distribution": "matsciml-toyplugin"}}
    result = api["end_to_end"]
    assert result["ok"], result
    value = result["value"]
    assert value["num_samples"] == 3
    assert value["num_atoms"] == 2 + 3 + 4  # ToyDataset gives sample i 2 + i % 4 atoms
    assert value["embeddings"] == [value["num_atoms"], 8]  # hidden_dim=8 overrides the default 16
    assert (value["batch"], value["output"]) == ("matsciml.batch.Batch", "matsciml.interfaces.BackboneOutput")
    assert value["model_representation"] == "toy-points"
    assert value["task"] == {"task": "toy-task", "backbone": "the-backbone", "loss": "l1", "learning_rate": 1e-3}


# ------------------------------------------------------------------ failing hooks
def test_each_failing_hook_is_listed_with_its_cause(cli) -> None:
    """A hook that raises, returns the wrong spec class, an int or None, and a module that calls
    sys.exit at import: each entry point is listed as an error with its distribution and cause."""
    records = _json(cli("plugins", "--json"))["plugins"]
    faulty = {r["entry_point"]: r for r in records if r["distribution"] == "matsciml-faultyplugin"}
    assert set(faulty) == {*HOOK_FAILURES, "sibling"}
    for entry_point, cause in HOOK_FAILURES.items():
        record = faulty[entry_point]
        assert record["status"] == "error" and record["provides"] == {}, record
        assert record["error"].startswith(cause), (entry_point, record["error"])
        assert record["version"] == "0.2.0"
    assert faulty["sibling"]["status"] == "ok"
    assert faulty["sibling"]["provides"] == {"dataset": ["faulty-sibling-dataset"]}
    table = cli("plugins")
    assert table.returncode == 0, table.stderr
    for entry_point, cause in HOOK_FAILURES.items():
        assert re.search(rf"^matsciml-faultyplugin\s+0\.2\.0\s+{entry_point}\s+ERROR {re.escape(cause)}",
                         table.stdout, re.M), f"{entry_point}:\n{table.stdout}"


def test_failing_hooks_never_break_the_other_plugins(cli, api) -> None:
    """Every other distribution loads, including the working entry point of the same distribution."""
    records = _json(cli("plugins", "--json"))["plugins"]
    for distribution in ("matsciml", "matsciml-toyplugin", "matsciml-dupplugin", "matsciml-raiseplugin"):
        assert _plugin(records, distribution)["status"] == "ok", distribution
    assert api["sibling"] == {"ok": True, "value": {"name": "faulty-sibling-dataset",
                                                    "distribution": "matsciml-faultyplugin", "length": 1}}
    assert api["end_to_end"]["ok"], api["end_to_end"]
    listing = cli("datasets")
    assert listing.returncode == 0 and "faulty-sibling-dataset" in listing.stdout


@pytest.mark.parametrize("arguments, entry_point", [
    (["info", "hook-raises"], "hook-raises"),
    (["info", "hook-wrong-type", "--kind", "model"], "hook-wrong-type"),
    (["data", "inspect", "hook-not-iterable"], "hook-not-iterable"),
    (["train", "--model", "needs-missing", "--task", "hook-returns-none", "--print-config"], "hook-returns-none"),
    (["train", "--model", "exits-at-import", "--print-config"], "exits-at-import"),
])
def test_asking_for_a_component_of_a_failed_hook_is_one_line(cli, arguments: list[str], entry_point: str) -> None:
    """A request for what a failed entry point would provide exits 1 with one line naming the plugin,
    its distribution and the cause."""
    line = _error_line(cli(*arguments))
    assert f"plugin {entry_point!r} of distribution matsciml-faultyplugin 0.2.0, which failed to load" in line
    assert HOOK_FAILURES[entry_point] in line


def test_registry_raises_plugin_load_error_for_failed_hooks(api) -> None:
    """Registry.get names the failed entry point, its distribution and its cause (PluginLoadError)."""
    for name, result in api["hook_failures"].items():
        assert not result["ok"] and result["type"] == "PluginLoadError", (name, result)
        assert "matsciml-faultyplugin" in result["message"] and HOOK_FAILURES[name] in result["message"]


# ------------------------------------------------------------------ raising factories
def test_a_raising_factory_is_reported_with_component_and_distribution(api) -> None:
    """spec.build() of a factory that raises gives a MatscimlError naming kind, component, distribution,
    the hyper-parameters and the original error."""
    result = api["raise_model"]
    assert not result["ok"] and result["type"] == "MatscimlError", result
    assert result["message"] == RAISE_MODEL_FAILURE
    result = api["raise_dataset"]
    assert not result["ok"] and result["type"] == "MatscimlError", result
    assert result["message"].startswith("dataset 'toy-raise-dataset' from matsciml-raiseplugin failed to build "
                                        "with {'size': 5}: TypeError: simulated factory failure")


def test_declared_ranges_are_enforced_before_the_factory_runs(api, cli) -> None:
    """A value outside a plugin's declared range fails naming it; the factory never runs."""
    result = api["raise_range"]
    assert not result["ok"] and result["type"] == "MatscimlError"
    assert "dropout=1.0 is not valid: expected a number in [0, 1) for model 'toy-raise'" in result["message"]
    assert "simulated factory failure" not in result["message"]
    line = _error_line(cli("train", "--model", "toy-raise", "--task", "toy-task", "--dataset", "toy-dataset",
                           "model.dropout=1.0", "--print-config"))
    assert "model.dropout=1.0 is not valid: expected a number in [0, 1) for model 'toy-raise' from " \
           "matsciml-raiseplugin" in line


def test_training_a_raising_model_is_one_line(cli, tmp_path: Path) -> None:
    """`matsciml train --model toy-raise` exits 1 with one line naming the model and its distribution."""
    line = _error_line(cli("train", "--model", "toy-raise", "--task", "toy-task", "--dataset", "toy-dataset",
                           f"run.dir={tmp_path}"))
    assert line == f"matsciml: error: {RAISE_MODEL_FAILURE}"
    assert not any(tmp_path.iterdir())  # no run directory for a run that never started


def test_inspecting_a_raising_dataset_is_one_line(cli) -> None:
    """`matsciml data inspect toy-raise-dataset` exits 1 naming the dataset and its distribution."""
    line = _error_line(cli("data", "inspect", "toy-raise-dataset"))
    assert "dataset 'toy-raise-dataset' from matsciml-raiseplugin failed to build" in line
    assert "TypeError: simulated factory failure" in line


def test_info_on_a_raising_model_shows_the_build_error_and_ranges(cli) -> None:
    """`matsciml info toy-raise` still describes the model: ranges shown, size unknown with the cause."""
    done = cli("info", "toy-raise")
    assert done.returncode == 0, done.stderr
    assert f"parameters: unknown (cannot build it here: {RAISE_MODEL_FAILURE})" in done.stdout
    assert re.search(r"hidden_dim\s+16\s+>=1\s+width", done.stdout), done.stdout
    assert re.search(r"dropout\s+0\.1\s+\[0,1\)\s+dropout probability", done.stdout), done.stdout
    described = _json(cli("info", "toy-raise", "--json"))
    assert described["build_error"] == RAISE_MODEL_FAILURE and described["parameter_count"] is None
    assert [(p["name"], p["range"]) for p in described["hyperparameters"]] == [
        ("hidden_dim", ">=1"), ("dropout", "[0,1)")]


# ------------------------------------------------------------------ conflicts
def test_requesting_a_clashing_name_fails_naming_both_distributions(api) -> None:
    """Registry.get('model', 'toy-mlp') raises ComponentConflictError naming both providers and a fix."""
    result = api["toy_mlp"]
    assert not result["ok"] and result["type"] == "ComponentConflictError"
    assert "MatscimlError" in result["bases"]
    assert "matsciml-toyplugin" in result["message"] and "matsciml-dupplugin" in result["message"]
    assert "pip uninstall" in result["message"]
    assert api["conflicts"]["model"] == {"toy-mlp": ["matsciml-dupplugin", "matsciml-toyplugin"]}
    assert all(not api["conflicts"][kind] for kind in ("dataset", "representation", "task"))


def test_clash_is_shown_but_does_not_break_listings(cli) -> None:
    """`matsciml models` exits 0 and marks both toy-mlp rows; `matsciml plugins` reports the clash."""
    models = cli("models")
    assert models.returncode == 0, models.stderr
    clashing = [line for line in models.stdout.splitlines() if line.startswith("toy-mlp (conflict)")]
    assert len(clashing) == 2
    assert {line.split()[4] for line in clashing} == {"matsciml-toyplugin", "matsciml-dupplugin"}
    flags = {(e["name"], e["distribution"]): e["conflict"] for e in _json(cli("models", "--json"))}
    assert flags[("toy-mlp", "matsciml-toyplugin")] and flags[("toy-mlp", "matsciml-dupplugin")]
    assert flags[("needs-missing", "matsciml-toyplugin")] is False
    plugins = cli("plugins")
    assert re.search(r"^conflict: model 'toy-mlp' is provided by .*matsciml-dupplugin.*; requests for it fail",
                     plugins.stdout, re.M), plugins.stdout
    assert "matsciml-toyplugin" in plugins.stdout.split("conflict:", 1)[1]
    assert _json(cli("plugins", "--json"))["conflicts"] == {"model": ["toy-mlp"]}


def test_info_on_a_clashing_name_shows_every_provider(cli) -> None:
    """`matsciml info toy-mlp` describes both providers, each marked CONFLICT."""
    done = cli("info", "toy-mlp")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("CONFLICT") == 2
    assert "model toy-mlp  (from matsciml-dupplugin 1.0.0)" in done.stdout
    assert "model toy-mlp  (from matsciml-toyplugin 0.3.1)" in done.stdout


def test_training_a_clashing_model_fails_naming_both_distributions(cli) -> None:
    """`matsciml train --model toy-mlp` exits 1 with one line naming both providers."""
    done = cli("train", "--model", "toy-mlp", "--task", "toy-task", "--dataset", "toy-dataset", "--print-config")
    assert done.returncode == 1
    assert done.stderr.startswith("matsciml: error: model 'toy-mlp' is provided by more than one")
    assert "matsciml-toyplugin" in done.stderr and "matsciml-dupplugin" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_training_a_model_of_a_broken_plugin_reports_its_import_error(cli) -> None:
    """`matsciml train --model broken` exits 1 with the plugin's original error and the fix."""
    done = cli("train", "--model", "broken", "--print-config")
    assert done.returncode == 1
    assert "simulated import failure in broken plugin" in done.stderr
    assert "pip install --force-reinstall matsciml-brokenplugin" in done.stderr


def test_other_components_of_the_clashing_plugin_still_resolve(cli, api) -> None:
    """dup-only-dataset, from the distribution that causes the clash, resolves and builds."""
    assert api["dup_only"] == {"ok": True, "value": {"name": "dup-only-dataset",
                                                     "distribution": "matsciml-dupplugin", "length": 2}}
    description = _json(cli("info", "dup-only-dataset", "--json"))
    assert description["distribution"] == "matsciml-dupplugin"
    assert description["contents"] == {"num_samples": 2} and description["build_error"] is None


# ------------------------------------------------------------------ lookup
@pytest.mark.parametrize("typed, kind, expected", [
    ("TOY-Dataset", "dataset", "toy-dataset"),
    ("toy_dataset", "dataset", "toy-dataset"),
    ("Toy_Points", "representation", "toy-points"),
    ("TOY_TASK", "task", "toy-task"),
    ("Needs_Missing", "model", "needs-missing"),
])
def test_lookup_ignores_case_and_treats_underscore_as_hyphen(cli, typed: str, kind: str, expected: str) -> None:
    """`matsciml info` finds a component however its name is cased or joined."""
    description = _json(cli("info", typed, "--json"))
    assert (description["kind"], description["name"]) == (kind, expected)


def test_api_lookup_ignores_case_and_separators(api) -> None:
    """Registry.get normalises names the same way as the CLI."""
    assert api["case"] == {"ok": True, "value": {"name": "toy-dataset", "distribution": "matsciml-toyplugin"}}
    assert api["underscore"] == {"ok": True, "value": {"name": "toy-points", "distribution": "matsciml-toyplugin"}}


def test_typo_gets_a_did_you_mean_suggestion(cli, api) -> None:
    """A near miss fails (exit 1 / ComponentNotFoundError) and suggests the installed name."""
    line = _error_line(cli("info", "toy-datset"))
    assert "did you mean" in line and "'toy-dataset'" in line
    line = _error_line(cli("info", "toy-datset", "--kind", "dataset"))
    assert "no dataset named 'toy-datset'" in line and "'toy-dataset'" in line
    result = api["typo"]
    assert not result["ok"] and result["type"] == "ComponentNotFoundError"
    assert "did you mean" in result["message"] and "'toy-dataset'" in result["message"]


def test_unknown_name_is_one_error_line(cli, api) -> None:
    """A name like nothing installed exits 1 with one `matsciml: error:` line and no traceback."""
    done = cli("info", "zzz-qqq")
    line = _error_line(done)
    assert "'zzz-qqq'" in line and "Traceback" not in done.stderr and done.stdout == ""
    line = _error_line(cli("info", "zzz-qqq", "--kind", "task"))
    assert "no task named 'zzz-qqq'" in line and "toy-task" in line  # lists what is installed
    assert api["unknown"]["type"] == "ComponentNotFoundError"
    assert "LookupError" in api["unknown"]["bases"]


@pytest.mark.parametrize("arguments", [
    ["nosuchcommand"],
    [],
    ["info"],
    ["info", "toy-mlp", "--kind", "gadget"],
    ["models", "--no-such-flag"],
])
def test_bad_usage_exits_2(cli, arguments: list[str]) -> None:
    """Usage errors are argparse's: exit status 2 and a usage message on stderr."""
    done = cli(*arguments)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "usage: matsciml" in done.stderr


# ------------------------------------------------------------------ info
def test_info_shows_hyperparameters_parameter_count_and_representation(cli) -> None:
    """`matsciml info toy-mlp --kind model` gives defaults with help, the parameter count and what it needs."""
    done = cli("info", "toy-mlp", "--kind", "model")
    assert done.returncode == 0, done.stderr
    toy = done.stdout[done.stdout.index("(from matsciml-toyplugin"):]
    assert "factory: matsciml_toyplugin.model:ToyBackbone" in toy
    assert "needs representation: toy-points (installed)" in toy
    assert f"parameters: {TOY_PARAMETERS:,} (with default hyper-parameters)" in toy
    assert re.search(r"hidden_dim\s+16\s+width of the per-atom embedding", toy)
    assert re.search(r"num_layers\s+2\s+number of hidden layers of the MLP", toy)
    described = _json(cli("info", "toy-mlp", "--kind", "model", "--json"))
    toy_json = next(d for d in described if d["distribution"] == "matsciml-toyplugin")
    assert toy_json["parameter_count"] == TOY_PARAMETERS and toy_json["build_error"] is None
    assert toy_json["hyperparameters"][:2] == [
        {"name": "hidden_dim", "default": 16, "help": "width of the per-atom embedding", "range": None,
         "choices": None},
        {"name": "num_layers", "default": 2, "help": "number of hidden layers of the MLP", "range": None,
         "choices": None},
    ]
    assert [p["name"] for p in toy_json["hyperparameters"][2:]] == ["cutoff_radius", "num_radial"]
    assert toy_json["representation_installed"] is True and toy_json["distribution_version"] == "0.3.1"


def test_info_names_the_package_of_a_missing_representation(cli) -> None:
    """`matsciml info needs-missing` says its representation is not installed and what to pip install."""
    done = cli("info", "needs-missing")
    assert done.returncode == 0, done.stderr
    assert "needs representation: missing-rep (NOT installed: pip install matsciml-missing-rep)" in done.stdout
    assert f"parameters: {TOY_PARAMETERS:,}" in done.stdout
    described = _json(cli("info", "needs-missing", "--json"))
    assert described["representation_installed"] is False
    assert described["representation_distribution"] == "matsciml-missing-rep"


def test_info_describes_a_task(cli) -> None:
    """`matsciml info toy-task` shows the targets the task needs and its hyper-parameters."""
    done = cli("info", "toy-task")
    assert done.returncode == 0, done.stderr
    assert "task toy-task  (from matsciml-toyplugin 0.3.1)" in done.stdout
    assert "needs targets: energy" in done.stdout
    assert re.search(r"learning_rate\s+0\.001\s+optimiser step size", done.stdout)


def test_info_describes_an_in_memory_dataset(cli) -> None:
    """`matsciml info toy-dataset` (a plugin dataset with no on-disk metadata) prints its size and targets."""
    done = cli("info", "toy-dataset")
    assert done.returncode == 0, done.stderr
    assert "dataset toy-dataset  (from matsciml-toyplugin 0.3.1)" in done.stdout
    assert "targets: energy, forces" in done.stdout
    assert re.search(r"samples:\s*4\b", done.stdout), done.stdout


@pytest.mark.dgl
@pytest.mark.parametrize("module", ["matsciml_dgl.plugin", "matsciml_egnn.plugin", "matsciml_megnet.plugin"])
def test_first_party_plugin_modules_import_neither_torch_nor_dgl(module: str) -> None:
    """Listing components stays cheap: a plugin module names its factories by string and imports no torch."""
    code = (f"import sys, {module} as p; [getattr(p, hook)() for hook in dir(p) if hook.startswith('matsciml_')]; "
            "print(sorted(m for m in ('torch', 'dgl') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
