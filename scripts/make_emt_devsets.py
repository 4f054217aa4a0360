"""Generate the OC20-style devsets shipped with matsciml, using ASE's EMT.

Why this script exists: the Open Catalyst (OC20) data cannot be shipped in
the package (it is tens of gigabytes and has its own licence), yet the whole
pipeline -- reading a dataset, building graphs, training on S2EF and IS2RE,
evaluating -- should run on a laptop with no downloads. These two small
devsets have the same structure as OC20 (adsorbates on fcc metal slabs,
periodic cells with vacuum, OC20 tags, fixed subsurface atoms, energies,
forces and relaxed energies) but their labels come from ASE's Effective
Medium Theory (EMT) calculator. EMT is a cheap empirical potential, not DFT:
the numbers are a stand-in for testing code, not for science.

It writes two files (matsciml LMDB format, see matsciml.data.storage):

* ``slab-emt-is2re.lmdb``: one sample per system, the initial structure
  with ``relaxed_energy`` (EMT energy after a BFGS relaxation) and the
  initial ``energy``.
* ``slab-emt-s2ef.lmdb``: frames sampled from the relaxation trajectories
  of a second, disjoint set of systems, with the EMT ``energy`` and raw
  ``forces`` of each frame.

Every sample carries its ``system_id`` (and ``metal``, ``facet``, ``adsorbate``,
``site``; S2EF frames their ``frame``), declared as per-structure annotations,
not targets; both files record ``group_key: system_id``, so that splits keep
the frames of one system in one part.

Everything is drawn from one seed, so rerunning with the same arguments and
the same ASE/numpy versions regenerates the same data. To regenerate the
shipped files, from the repository root::

    pip install -e ".[ase]"        # or: export PYTHONPATH=core
    python scripts/make_emt_devsets.py

Options: ``--output-dir DIR --seed N --num-is2re N --num-s2ef N``.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import ase
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.optimize import BFGS

from matsciml.data.storage import DatasetFile, DatasetWriter
from matsciml.data.schema import ELEMENT_SYMBOLS, Sample

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT_DIR = REPO_ROOT / "core" / "matsciml" / "datasets" / "devsets"
GENERATOR = "scripts/make_emt_devsets.py"
CALCULATOR = "ase.calculators.emt.EMT"
EMT_NOTE = ("EMT (Effective Medium Theory) energies and forces are a cheap empirical stand-in "
            "for DFT, for testing the pipeline only; they are not DFT and not OC20 labels.")

DEFAULT_SEED = 20240607
DEFAULT_NUM_IS2RE = 110
DEFAULT_NUM_S2EF = 900  # 300 systems: fewer left the demo underfitting held-out systems (README "Shipped devsets")

METALS: tuple[str, ...] = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al")
SLAB_BUILDERS = {"111": fcc111, "100": fcc100}
FACETS: tuple[str, ...] = tuple(SLAB_BUILDERS)
SLAB_SIZES: tuple[tuple[int, int, int], ...] = ((2, 2, 4), (3, 3, 3), (3, 3, 4))
"""Surface repeats (a, b) and number of layers: 16, 27 or 36 metal atoms."""
RELAXED_TOP_LAYERS = 2
"""The top two layers relax; the layers below are held fixed (tag 0)."""
VACUUM = 7.0  # Å on each side of the slab

# Adsorbates from the elements EMT has parameters for (H, C, N, O). The first
# atom binds to the surface; the others sit above it along +z.
ADSORBATES: dict[str, tuple[str, list[tuple[float, float, float]]]] = {
    "H": ("H", [(0.0, 0.0, 0.0)]),
    "C": ("C", [(0.0, 0.0, 0.0)]),
    "N": ("N", [(0.0, 0.0, 0.0)]),
    "O": ("O", [(0.0, 0.0, 0.0)]),
    "OH": ("OH", [(0.0, 0.0, 0.0), (0.0, 0.0, 0.97)]),
    "CO": ("CO", [(0.0, 0.0, 0.0), (0.0, 0.0, 1.15)]),
    "NO": ("NO", [(0.0, 0.0, 0.0), (0.0, 0.0, 1.16)]),
    "N2": ("N2", [(0.0, 0.0, 0.0), (0.0, 0.0, 1.10)]),
}
# Distance (Å) from the binding atom to its nearest top-layer metal atom; the
# height above the surface follows from it, so no site starts squashed.
BOND_LENGTH_RANGE: dict[str, tuple[float, float]] = {"H": (1.9, 2.5), "C": (1.9, 2.5), "N": (1.9, 2.5), "O": (1.9, 2.5)}
MIN_HEIGHT = 0.8  # Å, lowest start above the top layer (deep hollows of large metals)
MAX_JITTER = 0.3  # Å, lateral displacement from the ideal site
MAX_TILT = 20.0  # degrees, tilt of molecules away from the surface normal

FMAX = 0.05  # eV/Å
MAX_STEPS = 150
FRAMES_PER_TRAJECTORY = 3


@dataclass(frozen=True)
class SystemSpec:
    """Everything random about one adsorbate+slab system."""

    system_id: int
    metal: str
    facet: str
    size: tuple[int, int, int]
    adsorbate: str
    site: str
    bond_length: float
    jitter: tuple[float, float]
    tilt: float
    tilt_azimuth: float


@dataclass
class Relaxation:
    """A relaxed system and its BFGS trajectory (one frame per EMT call)."""

    spec: SystemSpec
    atoms: Atoms
    tags: np.ndarray
    fixed: np.ndarray
    positions: list[np.ndarray] = field(default_factory=list)
    energies: list[float] = field(default_factory=list)
    forces: list[np.ndarray] = field(default_factory=list)
    converged: bool = False

    @property
    def initial_energy(self) -> float:
        return self.energies[0]

    @property
    def relaxed_energy(self) -> float:
        return self.energies[-1]


# ---------------------------------------------------------------- building
def emt_lattice_constant(metal: str) -> float:
    """The fcc lattice constant (Å) that minimises the EMT bulk energy."""
    reference = bulk(metal, "fcc").cell.cellpar()[0] * np.sqrt(2.0)
    trial = reference * np.linspace(0.95, 1.05, 11)
    energies = []
    for a in trial:
        crystal = bulk(metal, "fcc", a=a)
        crystal.calc = EMT()
        energies.append(crystal.get_potential_energy())
    fit = np.polyfit(trial, energies, 3)
    roots = np.roots(np.polyder(fit))
    roots = roots[np.isreal(roots)].real
    roots = roots[(roots > trial[0]) & (roots < trial[-1])]
    if roots.size != 1:
        raise RuntimeError(f"no unique EMT energy minimum for bulk {metal} near a={reference:.3f} Å")
    return round(float(roots[0]), 4)


def site_names(facet: str) -> tuple[str, ...]:
    slab = SLAB_BUILDERS[facet]("Cu", (1, 1, 2))
    return tuple(slab.info["adsorbate_info"]["sites"])


def draw_system(rng: np.random.Generator, system_id: int) -> SystemSpec:
    facet = str(rng.choice(FACETS))
    adsorbate = str(rng.choice(list(ADSORBATES)))
    binding_element = ADSORBATES[adsorbate][0][0]
    angle = rng.uniform(0.0, 2.0 * np.pi)
    radius = MAX_JITTER * np.sqrt(rng.uniform())
    return SystemSpec(
        system_id=system_id,
        metal=str(rng.choice(METALS)),
        facet=facet,
        size=SLAB_SIZES[rng.integers(len(SLAB_SIZES))],
        adsorbate=adsorbate,
        site=str(rng.choice(site_names(facet))),
        bond_length=float(rng.uniform(*BOND_LENGTH_RANGE[binding_element])),
        jitter=(float(radius * np.cos(angle)), float(radius * np.sin(angle))),
        tilt=float(rng.uniform(0.0, MAX_TILT)),
        tilt_azimuth=float(rng.uniform(0.0, 360.0)),
    )


def adsorbate_molecule(spec: SystemSpec) -> Atoms:
    symbols, positions = ADSORBATES[spec.adsorbate]
    molecule = Atoms(symbols, positions=positions)
    if len(molecule) > 1:
        azimuth = np.radians(spec.tilt_azimuth)
        axis = (-np.sin(azimuth), np.cos(azimuth), 0.0)
        molecule.rotate(spec.tilt, axis, center=molecule.positions[0])
    return molecule


def lateral_distance(slab: Atoms, xy: np.ndarray, mask: np.ndarray) -> float:
    """Smallest in-plane distance (periodic) from ``xy`` to the atoms in ``mask``."""
    surface_cell = slab.cell[:2, :2]
    fractional = np.linalg.solve(surface_cell.T, (slab.positions[mask, :2] - xy).T).T
    fractional -= np.round(fractional)
    return float(np.linalg.norm(fractional @ surface_cell, axis=1).min())


def adsorption_height(slab: Atoms, xy: np.ndarray, top_layer: np.ndarray, bond_length: float) -> float:
    """Height above the top layer that puts the binding atom ``bond_length`` from its nearest neighbour."""
    offset = lateral_distance(slab, xy, top_layer)
    return float(np.sqrt(max(bond_length ** 2 - offset ** 2, MIN_HEIGHT ** 2)))


def build_system(spec: SystemSpec, lattice_constant: float) -> tuple[Atoms, np.ndarray, np.ndarray]:
    """The slab with its adsorbate, fixed bottom layers, and OC20 tags."""
    slab = SLAB_BUILDERS[spec.facet](spec.metal, spec.size, a=lattice_constant, vacuum=VACUUM, periodic=True)
    layer = slab.get_tags()  # ASE numbers layers 1 (top) .. n (bottom)
    fixed = layer > RELAXED_TOP_LAYERS
    info = slab.info["adsorbate_info"]
    site_xy = np.dot(info["sites"][spec.site], info["cell"]) + np.asarray(spec.jitter)
    height = adsorption_height(slab, site_xy, layer == 1, spec.bond_length)
    add_adsorbate(slab, adsorbate_molecule(spec), height, position=tuple(site_xy), mol_index=0)
    num_adsorbate = len(slab) - len(layer)
    fixed = np.concatenate([fixed, np.zeros(num_adsorbate, dtype=bool)])
    tags = np.concatenate([np.where(layer > RELAXED_TOP_LAYERS, 0, 1), np.full(num_adsorbate, 2)]).astype(np.int64)
    slab.set_tags(tags)
    slab.set_constraint(FixAtoms(mask=fixed))
    slab.wrap()
    return slab, tags, fixed


def relax(spec: SystemSpec, lattice_constant: float) -> Relaxation:
    """BFGS relaxation with EMT, recording every frame the optimiser sees."""
    atoms, tags, fixed = build_system(spec, lattice_constant)
    atoms.calc = EMT()
    result = Relaxation(spec=spec, atoms=atoms, tags=tags, fixed=fixed)

    def record_frame() -> None:
        positions = atoms.get_positions()
        if result.positions and np.array_equal(positions, result.positions[-1]):
            return  # ASE versions differ in whether observers see the start
        result.positions.append(positions)
        result.energies.append(float(atoms.get_potential_energy()))
        result.forces.append(atoms.get_forces(apply_constraint=False).copy())

    record_frame()
    optimizer = BFGS(atoms, logfile=None)
    optimizer.attach(record_frame, interval=1)
    optimizer.run(fmax=FMAX, steps=MAX_STEPS)
    free_forces = atoms.get_forces(apply_constraint=True)
    result.converged = bool(np.linalg.norm(free_forces, axis=1).max() <= FMAX)
    return result


# ---------------------------------------------------------------- samples
def structure_keys(relaxation: Relaxation, positions: np.ndarray) -> Sample:
    spec = relaxation.spec
    atoms = relaxation.atoms
    return {
        "atomic_numbers": atoms.get_atomic_numbers().astype(np.int64),
        "pos": np.array(positions, dtype=np.float64),
        "cell": np.array(atoms.get_cell(), dtype=np.float64),
        "pbc": np.array(atoms.get_pbc(), dtype=bool),
        "tags": relaxation.tags.copy(),
        "fixed": relaxation.fixed.copy(),
        "system_id": np.int64(spec.system_id),
        "metal": spec.metal,
        "facet": spec.facet,
        "adsorbate": spec.adsorbate,
        "site": spec.site,
    }


def is2re_sample(relaxation: Relaxation) -> Sample:
    sample = structure_keys(relaxation, relaxation.positions[0])
    sample["energy"] = np.float64(relaxation.initial_energy)
    sample["relaxed_energy"] = np.float64(relaxation.relaxed_energy)
    return sample


def pick_frames(num_frames: int, count: int, rng: np.random.Generator) -> list[int]:
    """Frame 0 (high forces) plus one random frame from each later stretch."""
    if num_frames <= count:
        return list(range(num_frames))
    bounds = np.linspace(1, num_frames, count).astype(int)
    return [0] + [int(rng.integers(lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def s2ef_samples(relaxation: Relaxation, rng: np.random.Generator) -> list[Sample]:
    samples = []
    for frame in pick_frames(len(relaxation.energies), FRAMES_PER_TRAJECTORY, rng):
        sample = structure_keys(relaxation, relaxation.positions[frame])
        sample["energy"] = np.float64(relaxation.energies[frame])
        sample["forces"] = relaxation.forces[frame].astype(np.float64)
        sample["frame"] = np.int64(frame)
        samples.append(sample)
    return samples


# ---------------------------------------------------------------- the two devsets
def make_is2re(num_systems: int, rng: np.random.Generator,
               lattice_constants: dict[str, float]) -> tuple[list[Sample], int]:
    """IS2RE samples from converged relaxations; also returns how many were skipped."""
    samples: list[Sample] = []
    skipped = 0
    system_id = 0
    while len(samples) < num_systems:
        spec = draw_system(rng, system_id)
        system_id += 1
        relaxation = relax(spec, lattice_constants[spec.metal])
        if not relaxation.converged:
            skipped += 1  # its "relaxed" energy would not be one
            continue
        samples.append(is2re_sample(relaxation))
    return samples, skipped


def make_s2ef(num_frames: int, rng: np.random.Generator,
              lattice_constants: dict[str, float]) -> tuple[list[Sample], int]:
    """S2EF frames from relaxation trajectories; also returns the number of systems."""
    samples: list[Sample] = []
    system_id = 0
    while len(samples) < num_frames:
        spec = draw_system(rng, system_id)
        system_id += 1
        samples.extend(s2ef_samples(relax(spec, lattice_constants[spec.metal]), rng))
    return samples[:num_frames], system_id


def check_physics(is2re: list[Sample]) -> None:
    for index, sample in enumerate(is2re):
        if sample["relaxed_energy"] > sample["energy"] + 1e-8:
            raise RuntimeError(f"IS2RE sample {index}: relaxed energy {float(sample['relaxed_energy']):.4f} eV "
                               f"is above the initial energy {float(sample['energy']):.4f} eV")


def provenance(args: argparse.Namespace, lattice_constants: dict[str, float], **extra: object) -> dict[str, object]:
    return {
        "generator": GENERATOR,
        "command": " ".join([GENERATOR, *args.argv]),
        "seed": args.seed,
        "ase_version": ase.__version__,
        "numpy_version": np.__version__,
        "calculator": CALCULATOR,
        "note": EMT_NOTE,
        "metals": list(METALS),
        "facets": list(FACETS),
        "adsorbates": list(ADSORBATES),
        "slab_sizes": [list(size) for size in SLAB_SIZES],
        "relaxed_top_layers": RELAXED_TOP_LAYERS,
        "vacuum_angstrom": VACUUM,
        "emt_lattice_constants_angstrom": lattice_constants,
        "optimizer": "ase.optimize.BFGS",
        "fmax_ev_per_angstrom": FMAX,
        "max_steps": MAX_STEPS,
        **extra,
    }


GROUP_KEY = "system_id"
"""Frames of one system share its id: splits keep a system in one part (metadata ``group_key``)."""
ANNOTATIONS: dict[str, dict[str, str]] = {
    **{key: {"role": "structure", "arity": "structure"} for key in ("system_id", "frame")},
    # text is always per structure (a declared arity would make validation expect numbers)
    **{key: {"role": "structure"} for key in ("metal", "facet", "adsorbate", "site")},
}
"""What each sample says about its system: per-structure descriptions, never targets."""


def write(path: Path, samples: list[Sample], *, name: str, description: str,
          provenance_record: dict[str, object]) -> None:
    fields = {key: declaration for key, declaration in ANNOTATIONS.items() if key in samples[0]}
    units = {key: "" for key in ("system_id", "frame") if key in samples[0]}  # ids and counts: dimensionless
    with DatasetWriter(path, name=name, description=description, provenance=provenance_record, units=units,
                       overwrite=True, fields=fields, group_key=GROUP_KEY) as writer:
        for index, sample in enumerate(samples):
            writer.append(sample, index=index, source=name)


# ---------------------------------------------------------------- summary
def mean_force_magnitude(samples: list[Sample], *, free_only: bool) -> float:
    norms = [np.linalg.norm(s["forces"][~s["fixed"]] if free_only else s["forces"], axis=1) for s in samples]
    return float(np.concatenate(norms).mean())


def describe(path: Path) -> str:
    dataset = DatasetFile(path)
    first = dataset.read(0)
    elements = " ".join(ELEMENT_SYMBOLS[int(z)] for z in dataset.metadata["elements"])
    atoms = dataset.metadata["num_atoms"]
    lines = [f"{path.name}: {len(dataset)} samples, {path.stat().st_size / 1024:.0f} KiB, "
             f"{atoms['min']}-{atoms['max']} atoms, elements {elements}",
             f"  keys: {', '.join(first)}"]
    for key in ("energy", "relaxed_energy"):
        if key in dataset.metadata["statistics"]:
            stats = dataset.metadata["statistics"][key]
            lines.append(f"  {key}: {stats['min']:.3f} .. {stats['max']:.3f} eV (mean {stats['mean']:.3f})")
    dataset.close()
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help="where to write the two .lmdb files (default: the shipped devsets folder)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of every random choice")
    parser.add_argument("--num-is2re", type=int, default=DEFAULT_NUM_IS2RE, help="IS2RE systems (one sample each)")
    parser.add_argument("--num-s2ef", type=int, default=DEFAULT_NUM_S2EF, help="S2EF frames")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.num_is2re < 1 or args.num_s2ef < 1:
        parser.error("--num-is2re and --num-s2ef must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    lattice_constants = {metal: emt_lattice_constant(metal) for metal in METALS}
    is2re_rng, s2ef_rng = (np.random.default_rng(seq) for seq in np.random.SeedSequence(args.seed).spawn(2))

    is2re, skipped = make_is2re(args.num_is2re, is2re_rng, lattice_constants)
    check_physics(is2re)
    s2ef, s2ef_systems = make_s2ef(args.num_s2ef, s2ef_rng, lattice_constants)

    is2re_path = args.output_dir / "slab-emt-is2re.lmdb"
    s2ef_path = args.output_dir / "slab-emt-s2ef.lmdb"
    write(is2re_path, is2re, name="slab-emt-is2re",
          description=("OC20-style IS2RE devset computed with ASE's EMT calculator (not DFT): adsorbates "
                       "(H, C, N, O, OH, CO, NO, N2) on fcc(111)/(100) slabs of Cu, Ag, Au, Ni, Pd, Pt, Al. "
                       "Each sample is the initial structure; 'energy' is its EMT total energy and "
                       "'relaxed_energy' the EMT total energy after BFGS relaxation (fmax 0.05 eV/Å) -- "
                       "total energies, not OC20-style adsorption energies. EMT is crude for H/C/N/O: "
                       "molecules often dissociate on the surface. Systems are disjoint from "
                       "slab-emt-s2ef. A stand-in for OC20 for testing the pipeline without downloads."),
          provenance_record=provenance(args, lattice_constants, task="IS2RE", stream=0,
                                       unconverged_systems_skipped=skipped))
    write(s2ef_path, s2ef, name="slab-emt-s2ef",
          description=("OC20-style S2EF devset computed with ASE's EMT calculator (not DFT): frames of BFGS "
                       "relaxations of adsorbates (H, C, N, O, OH, CO, NO, N2) on fcc(111)/(100) slabs of "
                       "Cu, Ag, Au, Ni, Pd, Pt, Al; up to 3 frames per trajectory (the first frame and one "
                       "from each later half). 'energy' is the EMT total energy and 'forces' the raw EMT "
                       "forces, including on fixed atoms (not zeroed). EMT is crude for H/C/N/O: molecules "
                       "often dissociate on the surface. Systems are disjoint from "
                       "slab-emt-is2re. A stand-in for OC20 for testing the pipeline without downloads."),
          provenance_record=provenance(args, lattice_constants, task="S2EF", stream=1,
                                       frames_per_trajectory=FRAMES_PER_TRAJECTORY, systems=s2ef_systems))

    drops = [float(s["energy"] - s["relaxed_energy"]) for s in is2re]
    print(f"EMT lattice constants (Å): {lattice_constants}")
    print(describe(is2re_path))
    print(f"  relaxation energy drop: {min(drops):.3f} .. {max(drops):.3f} eV; "
          f"{skipped} unconverged system(s) skipped")
    print(describe(s2ef_path))
    print(f"  from {s2ef_systems} trajectories; mean |force| {mean_force_magnitude(s2ef, free_only=False):.3f} eV/Å "
          f"(all atoms), {mean_force_magnitude(s2ef, free_only=True):.3f} eV/Å (free atoms)")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
