"""The conformance kit: does a backbone keep the platform's contract and the physics it promises?

A backbone plugin is trained by tasks it has never seen, on structures its
author may not have tried (slabs, molecules, supercells, mixed batches).
:func:`check_backbone` builds a registered model from its spec, builds the
representation it consumes, and runs it on tiny random structures in
float64, so one line in a plugin's tests (``check_backbone("my-net").raise_for_failures()``)
says whether it will work with every task:

=====================================  ===================================================
check                                  what must hold (float64 tolerance)
=====================================  ===================================================
``build``                              model and representation build from their specs;
                                       ``collate`` returns a :class:`~matsciml.batch.Batch`
``output-contract``                    ``forward`` returns a :class:`BackboneOutput`;
                                       ``atom_features`` ``[N, embedding_dim]``, in the
                                       model's dtype; ``structure_features``
                                       ``[B, structure_embedding_dim]`` exactly when that
                                       is declared; ``model.representation`` is the spec's
``finite-outputs``                     no NaN or infinity in the outputs
``finite-gradients``                   the energy reaches ``batch.pos``; its gradients
                                       w.r.t. positions and parameters, and the parameter
                                       gradients of a force loss (S2EF training), are finite
``rotation-invariance[KIND]``          per-atom energies unchanged when the structure (and
                                       its cell) is rotated: 1e-8 relative
``translation-invariance[KIND]``       ... when every atom is moved by one vector: 1e-8
``permutation-invariance[KIND]``       ... permuted with the atoms: 1e-8
``forces-finite-difference[KIND]``     -dE/dpos by autograd equals central differences of
                                       E (step 1e-4 Å, the representation rebuilt at each
                                       displaced geometry): 1e-5 relative to max |F|
``supercell-extensivity[KIND]``        through the S2EF task: E(2x1x1 supercell) = 2 E(cell)
                                       and the forces repeat: 1e-8 relative
``batch-isolation``                    each structure's outputs are the same alone and
                                       batched with structures of other sizes: 1e-8
``state-dict-round-trip``              a freshly built model (another seed) loaded with the
                                       saved state dict (``weights_only``) gives the same
                                       outputs: 1e-12
=====================================  ===================================================

KIND is ``periodic`` (a skewed cell, pbc T,T,T), ``slab`` (pbc T,T,F) and
``molecule`` (no cell); supercells need a cell, so they exist for the first
two. The "energy" of the invariance, finite-difference and gradient checks
is a fixed random linear readout, ``E = sum_i w . h_i + sum_b v . s_b``
(``h``: atom features, ``s``: structure features when the model has them):
any invariant or smooth model keeps every such readout so, and a random one
misses a broken feature with probability zero. Extensivity goes through the
S2EF task's own energy head, as training does. Relative deviations are taken
against the largest magnitude compared (per-atom energies, forces,
features), so tolerances do not depend on a model's output scale. Models run
in eval mode (no dropout; batch-norm uses its running statistics).

Nothing is skipped silently: a check not selected with ``checks=``, or that
cannot run, is listed as skipped with the reason. A representation that
declares ``supports_periodic = False`` (an attribute of the built object)
skips the periodic and slab rows, and the checks of the whole model run on
three molecules instead; after a failed build or output contract every
later check is skipped, naming it. A check whose code raises is a failure
that quotes the exception.
"""
from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from matsciml.batch import Batch
from matsciml.data.schema import Sample
from matsciml.interfaces import BackboneOutput, output_problems
from matsciml.specs import ComponentSpec, ModelSpec, RepresentationSpec
from matsciml.testing.physics import (
    finite_difference_forces,
    make_supercell,
    permute_sample,
    random_rotation,
    rotate_sample,
    translate_sample,
)
from matsciml.testing.structures import random_molecule_sample, random_periodic_sample

__all__ = ["CHECKS", "STRUCTURE_KINDS", "TOLERANCES", "CheckResult", "ConformanceReport", "Tolerances",
           "check_backbone"]

STRUCTURE_KINDS: tuple[str, ...] = ("periodic", "slab", "molecule")
"""The structures every check that depends on geometry runs on."""

_PERIODIC_KINDS = ("periodic", "slab")
_SYMMETRIES = ("rotation", "translation", "permutation")

CHECKS: tuple[str, ...] = (
    "build",
    "output-contract",
    "finite-outputs",
    "finite-gradients",
    *(f"{symmetry}-invariance[{kind}]" for symmetry in _SYMMETRIES for kind in STRUCTURE_KINDS),
    *(f"forces-finite-difference[{kind}]" for kind in STRUCTURE_KINDS),
    *(f"supercell-extensivity[{kind}]" for kind in _PERIODIC_KINDS),
    "batch-isolation",
    "state-dict-round-trip",
)
"""Every check in the order it runs; ``checks=`` takes these names or a family (``"rotation-invariance"``)."""

_ALWAYS_RUN = ("build", "output-contract")  # every other check needs a built model and a usable output

PASSED, FAILED, SKIPPED = "passed", "FAILED", "skipped"


@dataclass(frozen=True)
class Tolerances:
    """How far a check may deviate, relative to the largest magnitude compared.

    Attributes:
        invariance: per-atom energies under rotation, translation and permutation.
        finite_difference: autograd forces against central differences, relative to max |F|.
        finite_difference_step: the displacement of the central differences, Å.
        extensivity: supercell energy and forces against the cell's, through the S2EF task.
        isolation: outputs alone against outputs in a mixed batch.
        round_trip: outputs of a model loaded from the state dict against the original's.
    """

    invariance: float
    finite_difference: float
    finite_difference_step: float
    extensivity: float
    isolation: float
    round_trip: float


TOLERANCES: dict[torch.dtype, Tolerances] = {
    # float64: round-off is ~1e-16 relative, so 1e-8 leaves eight decades of room
    # and still catches any real symmetry breaking; central differences with a
    # 1e-4 Å step are exact to ~1e-8 (truncation) and ~1e-12 (round-off).
    torch.float64: Tolerances(invariance=1e-8, finite_difference=1e-5, finite_difference_step=1e-4,
                              extensivity=1e-8, isolation=1e-8, round_trip=1e-12),
    # float32: a smoke test only; round-off alone reaches ~1e-6 relative.
    torch.float32: Tolerances(invariance=1e-4, finite_difference=2e-2, finite_difference_step=1e-2,
                              extensivity=1e-4, isolation=1e-4, round_trip=1e-6),
}
"""The tolerances per dtype of the check (float64 is the default and the one to trust)."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one named check.

    Attributes:
        name: the check (see :data:`CHECKS`).
        status: ``"passed"``, ``"FAILED"`` or ``"skipped"``.
        detail: one line: the largest deviation against its tolerance, or why it failed or was skipped.
    """

    name: str
    status: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def skipped(self) -> bool:
        return self.status == SKIPPED


@dataclass
class ConformanceReport:
    """What :func:`check_backbone` found: one :class:`CheckResult` per check, in order.

    ``str(report)`` is a table; :meth:`raise_for_failures` turns failures into
    one ``AssertionError`` listing each, so a plugin's test is one line.
    """

    model: str
    representation: str
    dtype: torch.dtype
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No check failed (skipped checks do not fail a report; the table lists them)."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if result.failed]

    @property
    def skipped(self) -> list[CheckResult]:
        return [result for result in self.results if result.skipped]

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r} in this report; checks: {', '.join(r.name for r in self.results)}")

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self.results)

    def summary(self) -> str:
        """``backbone 'egnn' on 'dgl-graph' (float64): 17 passed, 0 failed, 2 skipped``."""
        counts = {status: sum(result.status == status for result in self.results)
                  for status in (PASSED, FAILED, SKIPPED)}
        return (f"backbone {self.model!r} on {self.representation!r} ({_dtype_name(self.dtype)}): "
                f"{counts[PASSED]} passed, {counts[FAILED]} failed, {counts[SKIPPED]} skipped")

    def __str__(self) -> str:
        from matsciml.cli.output import format_table

        rows = [(result.name, result.status, result.detail) for result in self.results]
        return self.summary() + "\n" + format_table(("check", "result", "detail"), rows, indent=2)

    def raise_for_failures(self) -> ConformanceReport:
        """Raise an ``AssertionError`` listing every failed check; return the report when none failed."""
        if self.passed:
            return self
        listed = "\n".join(f"  {result.name}: {result.detail}" for result in self.failures)
        raise AssertionError(f"{self.summary()}; failed:\n{listed}\n\n{self}")


# ------------------------------------------------------------------ public entry point
def check_backbone(model: str | ModelSpec, *, registry: Any = None, params: Mapping[str, Any] | None = None,
                   preset: str | None = None, representation_params: Mapping[str, Any] | None = None,
                   dtype: torch.dtype = torch.float64,
                   seed: int = 0, checks: Iterable[str] | None = None,
                   raise_on_failure: bool = False) -> ConformanceReport:
    """Run the conformance checks (module docstring) on one backbone and report each.

    Args:
        model: a registered model name, or a :class:`~matsciml.specs.ModelSpec`
            (its factory may be a callable: nothing needs installing).
        registry: where the model (when named) and its representation are
            looked up: a :class:`~matsciml.registry.Registry` or any object
            with ``model(name)`` and ``representation(name)``, or a list of
            specs; None uses the installed plugins.
        params: model hyper-parameters over the spec's defaults (keep the model
            small: the kit runs it about 130 times).
        preset: one of the spec's ``presets`` (``"small"``) under ``params``.
        representation_params: representation hyper-parameters over its
            defaults. Tied hyper-parameters are kept equal as in training:
            the spec's ``tied_params``, or, when it declares none,
            ``cutoff_radius`` if model and representation both have one.
            A representation with a ``dtype`` hyper-parameter is asked for
            ``dtype``'s name (``"float64"``).
        dtype: the float type of model and batches; float64 (default) or float32.
        seed: seeds the structures, the model's initialisation and the readout.
        checks: names from :data:`CHECKS` or families (``"rotation-invariance"``);
            None runs all. ``build`` and ``output-contract`` always run.
        raise_on_failure: call :meth:`ConformanceReport.raise_for_failures` before returning.

    Raises:
        matsciml.errors.ComponentNotFoundError: ``model`` names no registered model.
        ValueError: an unknown check name, an unsupported dtype, or a tied
            hyper-parameter given twice with two values.
    """
    if dtype not in TOLERANCES:
        raise ValueError(f"check_backbone runs in {' or '.join(_dtype_name(d) for d in TOLERANCES)}, "
                         f"not {dtype}")
    selected = _select(checks)
    lookup = _as_lookup(registry)
    model_spec = model if isinstance(model, ModelSpec) else lookup.model(str(model))
    if not isinstance(model_spec, ModelSpec):
        raise TypeError(f"check_backbone needs a model name or a ModelSpec, got {type(model_spec).__name__}")
    params = {**model_spec.preset_params(preset), **dict(params or {})}
    report = ConformanceReport(model=model_spec.name, representation=model_spec.representation, dtype=dtype)
    threads = torch.get_num_threads()
    try:
        # Structures of a dozen atoms: a thread pool costs more than the work,
        # and on a busy machine its spinning makes each call ten times slower.
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            _run(report, model_spec, lookup, params, dict(representation_params or {}), dtype, seed,
                 selected)
    finally:
        torch.set_num_threads(threads)
    if raise_on_failure:
        report.raise_for_failures()
    return report


def _run(report: ConformanceReport, model_spec: ModelSpec, lookup: Any, params: dict[str, Any],
         representation_params: dict[str, Any], dtype: torch.dtype, seed: int, selected: set[str]) -> None:
    def record(name: str, status: str, detail: str) -> None:
        report.results.append(CheckResult(name, status, _one_line(detail)))

    try:
        subject, built = _Subject.build(model_spec, lookup, params, representation_params, dtype, seed)
    except _CheckFailed as failure:
        record("build", FAILED, str(failure))
        for name in CHECKS[1:]:
            record(name, SKIPPED, "needs a built model and representation (build failed)")
        return
    record("build", PASSED, built)

    try:
        status, detail, usable = _output_contract(subject)
    except Exception as exc:  # noqa: BLE001 - a plugin's forward may raise anything
        status, detail, usable = FAILED, _raised("forward", exc), False
    record("output-contract", status, detail)

    for name, check in _checks():
        if name not in selected:
            record(name, SKIPPED, "not selected (checks=...)")
            continue
        if not usable:
            record(name, SKIPPED, "needs a BackboneOutput with atom_features [N, D] (see output-contract)")
            continue
        kind = name.partition("[")[2].rstrip("]")
        if kind in _PERIODIC_KINDS and not subject.supports_periodic:
            record(name, SKIPPED, f"representation {subject.representation_spec.name!r} declares "
                                  f"supports_periodic = False")
            continue
        try:
            passed, detail = check(subject)
        except _CheckFailed as failure:
            passed, detail = False, str(failure)
        except Exception as exc:  # noqa: BLE001 - whatever the backbone raises is the finding
            passed, detail = False, _raised(name, exc)
        record(name, PASSED if passed else FAILED, detail)


# ------------------------------------------------------------------ the model under test
class _CheckFailed(Exception):
    """A check's own verdict, with the one-line reason."""


@dataclass
class _Subject:
    """The model, its representation and the structures it is checked on."""

    model_spec: ModelSpec
    representation_spec: ComponentSpec
    params: dict[str, Any]
    model: torch.nn.Module
    representation: Any
    dtype: torch.dtype
    tolerances: Tolerances
    seed: int
    structures: dict[str, Sample]
    rng: np.random.Generator
    mixed: dict[str, Sample] = field(default_factory=dict)
    atom_readout: torch.Tensor | None = None
    structure_readout: torch.Tensor | None = None
    _task: Any = None

    @property
    def supports_periodic(self) -> bool:
        return bool(getattr(self.representation, "supports_periodic", True))

    @classmethod
    def build(cls, model_spec: ModelSpec, lookup: Any, params: dict[str, Any],
              representation_params: dict[str, Any], dtype: torch.dtype, seed: int) -> tuple[_Subject, str]:
        try:
            representation_spec = lookup.representation(model_spec.representation)
        except Exception as exc:  # noqa: BLE001 - not installed, broken plugin...
            raise _CheckFailed(f"representation {model_spec.representation!r} of model {model_spec.name!r}: "
                               f"{exc}") from exc
        _tie_params(model_spec, representation_spec, params, representation_params)
        if ("dtype" in representation_spec.defaults and "dtype" not in representation_params
                and representation_spec.accepts("dtype", _dtype_name(dtype))):
            representation_params["dtype"] = _dtype_name(dtype)
        model_params = model_spec.resolve_params(params)  # a wrong hyper-parameter is the caller's error: raise
        try:
            torch.manual_seed(seed)
            model = model_spec.build(**params)
        except Exception as exc:  # noqa: BLE001
            raise _CheckFailed(_raised(f"building model {model_spec.name!r}", exc)) from exc
        if not isinstance(model, torch.nn.Module):
            raise _CheckFailed(f"model {model_spec.name!r}: its factory returned {type(model).__name__}, "
                               f"not a torch.nn.Module")
        try:
            representation = representation_spec.build(**representation_params)
        except Exception as exc:  # noqa: BLE001
            raise _CheckFailed(_raised(f"building representation {representation_spec.name!r}", exc)) from exc
        rng = np.random.default_rng(seed)
        subject = cls(model_spec=model_spec, representation_spec=representation_spec, params=model_params,
                      model=model.to(dtype).eval(), representation=representation, dtype=dtype,
                      tolerances=TOLERANCES[dtype], seed=seed, structures=_structures(rng), rng=rng)
        subject.mixed = _mixed(subject.structures, rng, subject.supports_periodic)
        subject.batch(list(subject.mixed.values()))  # fails here when collate gives no Batch
        sizes = ", ".join(f"{kind} ({len(s['atomic_numbers'])} atoms)" for kind, s in subject.mixed.items())
        representation_text = _params_text(representation_spec.resolve_params(representation_params))
        built = (f"model {model_spec.name!r} {_params_text(model_params)}, representation "
                 f"{representation_spec.name!r} {representation_text}; structures {sizes}")
        return subject, built

    # -------------------------------------------------------------- batches and energies
    def batch(self, samples: Sequence[Sample]) -> Batch:
        """The representation's batch of ``samples`` in the check's dtype, positions a fresh autograd leaf."""
        name = self.representation_spec.name
        try:
            batch = self.representation.collate([self.representation(sample) for sample in samples])
        except Exception as exc:  # noqa: BLE001
            raise _CheckFailed(_raised(f"representation {name!r}", exc)) from exc
        if not isinstance(batch, Batch):
            raise _CheckFailed(f"representation {name!r}: collate returned {type(batch).__name__}, not a "
                               f"matsciml.batch.Batch (build it with matsciml.batch.collate_structures)")
        num_atoms = sum(len(sample["atomic_numbers"]) for sample in samples)
        if tuple(batch.pos.shape) != (num_atoms, 3):
            raise _CheckFailed(f"representation {name!r}: batch.pos has shape {tuple(batch.pos.shape)} for "
                               f"{len(samples)} structures of {num_atoms} atoms; expected ({num_atoms}, 3)")
        return dataclasses.replace(
            batch,
            inputs=_cast_floats(batch.inputs, self.dtype),
            pos=batch.pos.detach().to(self.dtype).requires_grad_(True),
            cell=batch.cell.to(self.dtype),
            targets={key: _cast_floats(value, self.dtype) for key, value in batch.targets.items()},
            input_fields={key: _cast_floats(value, self.dtype) for key, value in batch.input_fields.items()},
        )

    def forward(self, samples: Sequence[Sample], model: torch.nn.Module | None = None,
                grad: bool = True) -> tuple[Batch, BackboneOutput]:
        """The model's output on a batch of ``samples``; with ``grad``, differentiable even if the caller is not."""
        batch = self.batch(samples)
        with torch.set_grad_enabled(grad):
            output = (model or self.model)(batch)
        return batch, output

    def energies(self, batch: Batch, output: BackboneOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom ``w . h_i`` [N] and per-structure ``v . s_b`` [B] (zeros without structure features)."""
        atom = output.atom_features @ self.atom_readout
        if output.structure_features is None or self.structure_readout is None:
            structure = atom.new_zeros(batch.num_structures)
        else:
            structure = output.structure_features @ self.structure_readout
        return atom, structure

    def total_energy(self, samples: Sequence[Sample], grad: bool = True) -> tuple[torch.Tensor, Batch]:
        batch, output = self.forward(samples, grad=grad)
        atom, structure = self.energies(batch, output)
        return atom.sum() + structure.sum(), batch

    def task(self) -> Any:
        """The S2EF task around the model (its energy head seeded, in the check's dtype)."""
        if self._task is None:
            from matsciml.tasks.s2ef import S2EFTask

            torch.manual_seed(self.seed + 2)
            self._task = S2EFTask(self.model).to(self.dtype).eval()
        return self._task


def _structures(rng: np.random.Generator) -> dict[str, Sample]:
    """One tiny structure of each kind, of three sizes (a few Li/P/S or H/C/N/O atoms)."""
    periodic = random_periodic_sample(rng, num_atoms=4, cell_length=4.5)
    slab = random_periodic_sample(rng, num_atoms=5, cell_length=4.5)
    slab["pbc"] = np.array([True, True, False])
    molecule = random_molecule_sample(rng, num_atoms=6)
    return {"periodic": periodic, "slab": slab, "molecule": molecule}


def _mixed(structures: dict[str, Sample], rng: np.random.Generator, periodic: bool) -> dict[str, Sample]:
    """The structures batched together by the checks of the whole model: one of each kind, or,
    for a representation without periodic support, molecules of three sizes."""
    if periodic:
        return dict(structures)
    return {"molecule": structures["molecule"],
            "molecule B": random_molecule_sample(rng, num_atoms=4),
            "molecule C": random_molecule_sample(rng, num_atoms=5)}


# ------------------------------------------------------------------ the checks
def _output_contract(subject: _Subject) -> tuple[str, str, bool]:
    """(status, detail, usable): usable means the other checks can read the output."""
    samples = list(subject.mixed.values())
    batch, output = subject.forward(samples)
    num_atoms, num_structures = int(batch.pos.shape[0]), batch.num_structures
    if not isinstance(output, BackboneOutput):
        return FAILED, "; ".join(output_problems(subject.model, output, num_atoms, num_structures)) + (
            "; return BackboneOutput(atom_features=[N, D] tensor, structure_features=[B, Ds] or None)"), False
    atom, structure = output.atom_features, output.structure_features
    usable = (isinstance(atom, torch.Tensor) and atom.is_floating_point() and atom.ndim == 2
              and atom.shape[0] == num_atoms
              and (structure is None or (isinstance(structure, torch.Tensor) and structure.is_floating_point()
                                         and structure.ndim == 2 and structure.shape[0] == num_structures)))
    model = subject.model
    problems: list[str] = []
    declared = getattr(model, "representation", None)
    if declared != subject.model_spec.representation:
        problems.append(f"model.representation is {declared!r} but its spec names "
                        f"{subject.model_spec.representation!r}")
    embedding_dim = getattr(model, "embedding_dim", None)
    if not isinstance(embedding_dim, int) or isinstance(embedding_dim, bool) or embedding_dim < 1:
        problems.append(f"model.embedding_dim is {embedding_dim!r}, not a positive integer "
                        f"(the width of atom_features)")
    problems += output_problems(model, output, num_atoms, num_structures)
    for name, value in (("atom_features", atom), ("structure_features", structure)):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != subject.dtype:
            problems.append(f"{name} has dtype {value.dtype} from a model cast to {subject.dtype}; compute in "
                            f"the parameters' dtype")
    if usable:
        generator = torch.Generator().manual_seed(subject.seed + 1)
        width = int(atom.shape[1])
        subject.atom_readout = (torch.randn(width, generator=generator, dtype=torch.float64)
                                .to(atom.dtype) / math.sqrt(width))
        if structure is not None:
            width = int(structure.shape[1])
            subject.structure_readout = (torch.randn(width, generator=generator, dtype=torch.float64)
                                         .to(structure.dtype) / math.sqrt(width))
    if problems:
        return FAILED, "; ".join(problems), usable
    shown = "none" if structure is None else _describe(structure)
    return PASSED, (f"BackboneOutput: atom_features {_describe(atom)}, structure_features {shown}; "
                    f"representation {declared!r}"), usable


def _finite_outputs(subject: _Subject) -> tuple[bool, str]:
    _, output = subject.forward(list(subject.mixed.values()))
    problems, shown = [], []
    for name, value in (("atom_features", output.atom_features), ("structure_features", output.structure_features)):
        if value is None:
            continue
        value = value.detach()
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            rows = torch.nonzero(bad.reshape(value.shape[0], -1).any(dim=1)).flatten().tolist()
            problems.append(f"{name} has {int(bad.sum())} non-finite entries (rows {_first(rows)})")
        else:
            shown.append(f"{name} {_describe(value)} finite, max |value| {_number(value.abs().max())}")
    if problems:
        return False, "; ".join(problems)
    return True, "; ".join(shown)


def _finite_gradients(subject: _Subject) -> tuple[bool, str]:
    energy, batch = subject.total_energy(list(subject.mixed.values()))
    if not energy.requires_grad:
        raise _CheckFailed("the outputs carry no gradient at all (computed without autograd, or detached); "
                           "compute them from batch.pos and the parameters")
    named = [(name, p) for name, p in subject.model.named_parameters() if p.requires_grad]
    parameters = [p for _, p in named]
    gradients = torch.autograd.grad(energy, [batch.pos, *parameters], allow_unused=True, create_graph=True)
    position_gradient, parameter_gradients = gradients[0], gradients[1:]
    if position_gradient is None:
        raise _CheckFailed("no gradient reaches batch.pos: the outputs do not depend on it; compute every "
                           "geometric quantity from batch.pos so that tasks get forces by autograd")
    problems = []
    if not bool(torch.isfinite(position_gradient).all()):
        atoms = torch.nonzero(~torch.isfinite(position_gradient).all(dim=1)).flatten().tolist()
        problems.append(f"dE/dpos is not finite for atoms {_first(atoms)}")
    bad = _non_finite(named, parameter_gradients)
    if bad:
        problems.append(f"dE/dparameters is not finite for {_first(bad)}")
    unused = sum(g is None for g in parameter_gradients)
    if not parameters:
        problems.append("the model has no trainable parameters")
    elif position_gradient.grad_fn is None:
        problems.append("the forces -dE/dpos do not depend on the parameters, so a force loss cannot train them")
    else:
        force_loss = (position_gradient ** 2).sum()
        try:
            second = torch.autograd.grad(force_loss, parameters, allow_unused=True)
        except RuntimeError as exc:
            raise _CheckFailed(_raised("differentiating a force loss w.r.t. the parameters (S2EF training "
                                       "needs it)", exc)) from exc
        bad = _non_finite(named, second)
        if bad:
            problems.append(f"the force loss's gradient is not finite for {_first(bad)}")
    if problems:
        return False, "; ".join(problems)
    used = len(parameters) - unused
    return True, (f"dE/dpos and dE/dparameters ({used} of {len(parameters)} tensors reached) finite; "
                  f"the force loss's parameter gradients finite")


def _non_finite(named: Sequence[tuple[str, torch.Tensor]], gradients: Sequence[torch.Tensor | None]) -> list[str]:
    """Names of the parameters whose gradient holds a NaN or infinity."""
    return [name for (name, _), gradient in zip(named, gradients)
            if gradient is not None and not bool(torch.isfinite(gradient).all())]


def _invariance(symmetry: str, kind: str) -> Callable[[_Subject], tuple[bool, str]]:
    def check(subject: _Subject) -> tuple[bool, str]:
        sample = subject.structures[kind]
        reference = _per_atom_energies(subject, sample)
        rng = np.random.default_rng([subject.seed, _SYMMETRIES.index(symmetry), STRUCTURE_KINDS.index(kind)])
        order = None
        if symmetry == "rotation":
            moved = rotate_sample(sample, random_rotation(rng))
            what = "rotated (cell too)" if "cell" in sample else "rotated"
        elif symmetry == "translation":
            shift = rng.normal(scale=3.0, size=3)
            moved, what = translate_sample(sample, shift), f"translated by {_vector(shift)} Å"
        else:
            count = len(sample["atomic_numbers"])
            order = rng.permutation(count)
            if np.array_equal(order, np.arange(count)):
                order = np.roll(order, 1)
            moved, what = permute_sample(sample, order), "with its atoms permuted"
        transformed = _per_atom_energies(subject, moved)
        expected = reference if order is None else (reference[0][order], reference[1])
        return _compare(f"per-atom energies of the {kind} structure {what}", transformed, expected,
                        subject.tolerances.invariance)
    return check


def _per_atom_energies(subject: _Subject, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    batch, output = subject.forward([sample])
    atom, structure = subject.energies(batch, output)
    return atom.detach().cpu().double().numpy(), structure.detach().cpu().double().numpy()


def _finite_difference(kind: str) -> Callable[[_Subject], tuple[bool, str]]:
    def check(subject: _Subject) -> tuple[bool, str]:
        sample = subject.structures[kind]
        energy, batch = subject.total_energy([sample])
        gradient = None
        if energy.requires_grad:
            (gradient,) = torch.autograd.grad(energy, batch.pos, allow_unused=True)
        if gradient is None:  # the energy ignores batch.pos: autograd forces are zero (finite-gradients says why)
            gradient = torch.zeros_like(batch.pos)
        forces = -gradient.detach().cpu().double().numpy()

        def energy_at(pos: np.ndarray) -> float:
            displaced = dict(sample)
            displaced["pos"] = pos
            return float(subject.total_energy([displaced], grad=False)[0])

        step = subject.tolerances.finite_difference_step
        numerical = finite_difference_forces(energy_at, np.asarray(sample["pos"], dtype=np.float64), step=step)
        scale = max(float(np.abs(forces).max()), float(np.abs(numerical).max()))
        if scale == 0.0:
            return True, (f"forces of the {kind} structure are zero by autograd and by differences: the "
                          f"energy does not depend on positions here (nothing else to compare)")
        deviation = np.abs(forces - numerical)
        atom = int(np.unravel_index(np.argmax(deviation), deviation.shape)[0])
        relative = float(deviation.max()) / scale
        passed = relative <= subject.tolerances.finite_difference
        where = "" if passed else (f" (worst: atom {atom}, autograd {_vector(forces[atom])} vs differences "
                                   f"{_vector(numerical[atom])})")
        return passed, (f"{kind}: max |F_autograd - F_differences| = {_number(deviation.max())}, relative to max "
                        f"|F| = {_number(scale)}: {_number(relative)} {'<=' if passed else '>'} tolerance "
                        f"{_number(subject.tolerances.finite_difference)} (step {step} Å){where}")
    return check


def _extensivity(kind: str) -> Callable[[_Subject], tuple[bool, str]]:
    def check(subject: _Subject) -> tuple[bool, str]:
        task = subject.task()
        sample = subject.structures[kind]
        repeats = (2, 1, 1)
        cells = int(np.prod(repeats))
        results = []
        for structure in (sample, make_supercell(sample, repeats)):
            batch = subject.batch([structure])
            with torch.enable_grad():
                prediction = task.predict(batch)
            results.append((_numpy(prediction["energy"]).reshape(-1), _numpy(prediction["forces"])))
        (energy, forces), (energy_super, forces_super) = results
        tolerance = subject.tolerances.extensivity
        energy_error = float(np.abs(energy_super - cells * energy).max())
        energy_relative = energy_error / max(float(np.abs(cells * energy).max()), _TINY)
        force_scale = max(float(np.abs(forces).max()), _TINY)
        force_relative = float(np.abs(forces_super - np.tile(forces, (cells, 1))).max()) / force_scale
        passed = energy_relative <= tolerance and force_relative <= tolerance
        hint = "" if passed else ("; the copies of an atom in the supercell do not get the same features: look "
                                  "for absolute positions, or for a dependence on the cell or the atom count")
        return passed, (f"{kind}, S2EF task: E(2x1x1) = {float(energy_super[0]):.10g}, 2 E(cell) = "
                        f"{float(cells * energy[0]):.10g}, relative difference {_number(energy_relative)}; forces "
                        f"repeated to {_number(force_relative)}; tolerance {_number(tolerance)}{hint}")
    return check


def _batch_isolation(subject: _Subject) -> tuple[bool, str]:
    kinds = list(subject.mixed)
    mixed = [kinds[1], kinds[2], kinds[0]]  # not the order of the other checks, and three sizes
    _, together = subject.forward([subject.mixed[kind] for kind in mixed])
    sizes = [len(subject.mixed[kind]["atomic_numbers"]) for kind in mixed]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    tolerance = subject.tolerances.isolation
    worst = (0.0, "", 0.0)
    for position, kind in enumerate(mixed):
        _, alone = subject.forward([subject.mixed[kind]])
        pairs = [(alone.atom_features, together.atom_features[starts[position]:starts[position + 1]])]
        if alone.structure_features is not None and together.structure_features is not None:
            pairs.append((alone.structure_features, together.structure_features[position:position + 1]))
        for single, batched in pairs:
            single, batched = single.detach().double(), batched.detach().double()
            error = float((single - batched).abs().max())
            relative = error / max(float(single.abs().max()), _TINY)
            if not math.isfinite(relative):  # a NaN must not compare its way to a pass
                relative = math.inf
            if relative >= worst[0]:
                worst = (relative, kind, error)
    relative, kind, error = worst
    others = " and ".join(k for k in mixed if k != kind)
    passed = relative <= tolerance
    return passed, (f"outputs of each structure alone vs batched with structures of other sizes ({sizes} atoms): "
                    f"worst the {kind} structure, max |difference| {_number(error)}, relative "
                    f"{_number(relative)} {'<=' if passed else '>'} tolerance {_number(tolerance)}"
                    + ("" if passed else f"; its outputs change when batched with the {others} structures: "
                                         f"something mixes structures (a batch-wide mean, norm or padding)"))


def _state_dict_round_trip(subject: _Subject) -> tuple[bool, str]:
    buffer = io.BytesIO()
    torch.save(subject.model.state_dict(), buffer)
    buffer.seek(0)
    try:
        state = torch.load(buffer, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise _CheckFailed(_raised("reading the state dict back with torch.load(weights_only=True) (how "
                                   "checkpoints are read without running code)", exc)) from exc
    torch.manual_seed(subject.seed + 3)  # another initialisation: only the state dict can make them equal
    fresh = subject.model_spec.build(**subject.params).to(subject.dtype).eval()
    try:
        fresh.load_state_dict(state)
    except RuntimeError as exc:
        raise _CheckFailed(_raised("loading the state dict into a freshly built model", exc)) from exc
    samples = list(subject.mixed.values())
    _, original = subject.forward(samples)
    _, loaded = subject.forward(samples, model=fresh)
    return _compare("outputs of a fresh model loaded with the state dict",
                    (_numpy(loaded.atom_features), _numpy(loaded.structure_features)),
                    (_numpy(original.atom_features), _numpy(original.structure_features)),
                    subject.tolerances.round_trip, consequence="state that state_dict() misses (a tensor that is "
                                                               "not a parameter or buffer)")


def _checks() -> list[tuple[str, Callable[[_Subject], tuple[bool, str]]]]:
    table: dict[str, Callable[[_Subject], tuple[bool, str]]] = {
        "finite-outputs": _finite_outputs,
        "finite-gradients": _finite_gradients,
        "batch-isolation": _batch_isolation,
        "state-dict-round-trip": _state_dict_round_trip,
    }
    for symmetry in _SYMMETRIES:
        for kind in STRUCTURE_KINDS:
            table[f"{symmetry}-invariance[{kind}]"] = _invariance(symmetry, kind)
    for kind in STRUCTURE_KINDS:
        table[f"forces-finite-difference[{kind}]"] = _finite_difference(kind)
    for kind in _PERIODIC_KINDS:
        table[f"supercell-extensivity[{kind}]"] = _extensivity(kind)
    return [(name, table[name]) for name in CHECKS if name not in _ALWAYS_RUN]


# ------------------------------------------------------------------ helpers
_TINY = 1e-300


def _compare(what: str, actual: tuple[np.ndarray, ...], expected: tuple[np.ndarray, ...], tolerance: float,
             consequence: str | None = None) -> tuple[bool, str]:
    """Largest deviation over paired arrays, relative to the largest expected magnitude."""
    pairs = [(a, e) for a, e in zip(actual, expected) if a is not None and e is not None and np.size(e)]
    scale = max(float(np.abs(e).max()) for _, e in pairs)
    error = max(float(np.abs(np.asarray(a) - np.asarray(e)).max()) for a, e in pairs)
    relative = error / max(scale, _TINY)
    passed = relative <= tolerance
    detail = (f"{what}: max |difference| {_number(error)}, relative to max |value| {_number(scale)}: "
              f"{_number(relative)} {'<=' if passed else '>'} tolerance {_number(tolerance)}")
    if not passed and consequence:
        detail += f"; look for {consequence}"
    return passed, detail


def _tie_params(model_spec: ModelSpec, representation_spec: ComponentSpec, params: dict[str, Any],
                representation_params: dict[str, Any]) -> None:
    """Make tied hyper-parameters equal, as training does (in place).

    The ties are the spec's ``tied_params`` (``{model key: representation
    key}``) when it declares any; a spec that declares none gets
    ``cutoff_radius`` tied when both components have one, so the model's
    envelope ends where the neighbour search ends. Setting either key sets
    both; setting both to different values raises ``ValueError``.
    """
    ties = dict(getattr(model_spec, "tied_params", None) or {})
    if not ties and "cutoff_radius" in model_spec.defaults and "cutoff_radius" in representation_spec.defaults:
        ties = {"cutoff_radius": "cutoff_radius"}
    for model_key, representation_key in ties.items():
        if model_key in params and representation_key in representation_params:
            if not _same_value(params[model_key], representation_params[representation_key]):
                raise ValueError(f"params {model_key}={params[model_key]} and representation_params "
                                 f"{representation_key}={representation_params[representation_key]} differ; model "
                                 f"{model_spec.name!r} ties them, give one of them")
        elif representation_key in representation_params:
            params[model_key] = representation_params[representation_key]
        if model_key in params or model_key in model_spec.defaults:
            representation_params[representation_key] = params.get(model_key, model_spec.defaults.get(model_key))


def _same_value(first: Any, second: Any) -> bool:
    if isinstance(first, (int, float)) and isinstance(second, (int, float)):
        return float(first) == float(second)
    return bool(first == second)


def _select(checks: Iterable[str] | None) -> set[str]:
    if checks is None:
        return set(CHECKS)
    if isinstance(checks, str):
        checks = [checks]
    selected: set[str] = set(_ALWAYS_RUN)
    for wanted in checks:
        matches = [name for name in CHECKS if name == wanted or name.partition("[")[0] == wanted]
        if not matches:
            families = sorted({name.partition("[")[0] for name in CHECKS})
            raise ValueError(f"no conformance check named {wanted!r}; checks: {', '.join(families)} "
                             f"(a family such as 'rotation-invariance', or one member such as "
                             f"'rotation-invariance[slab]')")
        selected.update(matches)
    return selected


class _SpecList:
    """A list of specs that answers ``model(name)`` and ``representation(name)`` like a registry."""

    def __init__(self, specs: Iterable[ComponentSpec]) -> None:
        self.specs = list(specs)
        for spec in self.specs:
            if not isinstance(spec, ComponentSpec):
                raise TypeError(f"registry= takes a Registry or a list of specs, got {_describe(spec)} in the list")

    def _get(self, kind: type, name: str) -> ComponentSpec:
        from matsciml.errors import ComponentNotFoundError
        from matsciml.registry import normalize_name

        found = [spec for spec in self.specs
                 if isinstance(spec, kind) and normalize_name(spec.name) == normalize_name(name)]
        if not found:
            known = ", ".join(spec.name for spec in self.specs if isinstance(spec, kind)) or "none"
            raise ComponentNotFoundError(f"no {kind.kind} named {name!r} among the specs given "
                                         f"(given: {known})")
        return found[0]

    def model(self, name: str) -> ComponentSpec:
        return self._get(ModelSpec, name)

    def representation(self, name: str) -> ComponentSpec:
        return self._get(RepresentationSpec, name)


def _as_lookup(registry: Any) -> Any:
    if registry is None:
        from matsciml.registry import get_registry

        return get_registry()
    if hasattr(registry, "model") and hasattr(registry, "representation"):
        return registry
    if isinstance(registry, Iterable) and not isinstance(registry, (str, bytes, Mapping)):
        return _SpecList(registry)
    raise TypeError(f"registry= takes a Registry (or an object with model(name) and representation(name)) "
                    f"or a list of specs, got {_describe(registry)}")


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """Floating tensors in ``value`` (a tensor, or a dict/list/tuple of them) cast to ``dtype``; the rest as is."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, Mapping):
        return {key: _cast_floats(item, dtype) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_cast_floats(item, dtype) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_floats(item, dtype) for item in value)
    return value


def _numpy(value: torch.Tensor | None) -> np.ndarray | None:
    return None if value is None else value.detach().cpu().double().numpy()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{list(value.shape)} {_dtype_name(value.dtype)}"
    return type(value).__name__


def _number(value: Any) -> str:
    return f"{float(value):.3g}"


def _vector(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _first(items: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _params_text(params: Mapping[str, Any]) -> str:
    return "(" + ", ".join(f"{key}={value!r}" for key, value in params.items()) + ")"


def _raised(where: str, exc: BaseException) -> str:
    return _one_line(f"{where} raised {type(exc).__name__}: {exc}", limit=400)


def _one_line(text: str, limit: int = 600) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."
