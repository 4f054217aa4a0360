"""Import of structures from any format ASE reads (extxyz, VASP, CIF, ASE db...).

Why ASE: it is the field's common reader of atomic-structure files, so one
converter covers every format a user brings. It is an optional extra of the
core (``pip install matsciml[ase]``): training never needs it.

Every numeric calculator result attached to a structure becomes a property
of the sample under ASE's name for it: energy, forces, stress (Voigt
notation turned into a 3 x 3 matrix), free energy, and also partial charges,
magnetic moments, dipoles... ASE moves per-atom ``charges`` and ``magmoms``
columns of an extended XYZ file into the calculator results, so keeping only
some results would drop them without a word. Every other entry of
``atoms.info`` and ``atoms.arrays`` that is a number, boolean, numeric array
or string becomes a property too. What each key is (role, per atom or per
structure, unit) comes from :mod:`matsciml.fields`, recorded in the
dataset's metadata at conversion.

Input is read frame by frame (:func:`iter_frames`), so one frame that ASE
cannot parse costs that frame only: it is reported with its file and index,
like a structure that breaks the schema, and every other frame is still
converted. Memory stays flat in the size of the input (except for CIF
files, which ASE parses whole).
"""
from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from matsciml.data.schema import Sample, validate_sample
from matsciml.data.storage import DatasetWriter
from matsciml.errors import InvalidSampleError, MatscimlError
from matsciml.fields import REGISTERED_FIELDS, check_declaration

# atoms.arrays entries that are structure, not properties
_STRUCTURAL_ARRAYS = {"numbers", "positions", "tags"}


def _import_ase() -> Any:
    try:
        import ase.io  # noqa: F401
    except ImportError as exc:
        raise MatscimlError(
            "reading structure files needs ASE, which is not installed; "
            "install it with `pip install 'matsciml[ase]'` (or `pip install ase`)"
        ) from exc
    import ase

    return ase


def atoms_to_sample(atoms: Any) -> Sample:
    """One ``ase.Atoms`` as a sample (not yet validated).

    Structure from the atoms (numbers, positions, cell, pbc, tags, FixAtoms
    constraints), then every numeric calculator result, then the numeric and
    text entries of ``atoms.arrays`` and ``atoms.info`` whose names are not
    taken yet.
    """
    from ase.constraints import FixAtoms

    sample: Sample = {
        "atomic_numbers": np.asarray(atoms.numbers, dtype=np.int64),
        "pos": np.asarray(atoms.positions, dtype=np.float64),
        "pbc": np.asarray(atoms.pbc, dtype=bool),
    }
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    if atoms.pbc.any() or np.abs(cell).sum() > 0:
        sample["cell"] = cell
    if "tags" in atoms.arrays:
        sample["tags"] = np.asarray(atoms.arrays["tags"], dtype=np.int64)
    fixed_indices = [index for constraint in atoms.constraints if isinstance(constraint, FixAtoms)
                     for index in constraint.get_indices()]
    if fixed_indices:
        fixed = np.zeros(len(atoms), dtype=bool)
        fixed[np.asarray(fixed_indices, dtype=np.int64)] = True
        sample["fixed"] = fixed

    results = getattr(atoms.calc, "results", None) or {}
    for key, value in results.items():
        converted = _property_value(value)
        if converted is None or isinstance(converted, str) or key in sample:
            continue
        if key == "stress" and converted.shape == (6,):
            converted = _voigt_to_matrix(converted)
        sample[key] = converted

    for key, value in atoms.arrays.items():
        if key not in _STRUCTURAL_ARRAYS and key not in sample:
            converted = _property_value(value)
            if converted is not None:
                sample[key] = converted
    for key, value in atoms.info.items():
        if key not in sample:
            converted = _property_value(value)
            if converted is not None:
                sample[key] = converted
    return sample


def _voigt_to_matrix(voigt: np.ndarray) -> np.ndarray:
    xx, yy, zz, yz, xz, xy = voigt
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]], dtype=np.float64)


def _property_value(value: Any) -> Any:
    """A number, bool, numeric array or string as storable; anything else -> None."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return np.asarray(value, dtype=bool)
    if isinstance(value, (int, np.integer)):
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, (float, np.floating)):
        return np.asarray(value, dtype=np.float64)
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            array = np.asarray(value)
        except ValueError:
            return None
        if array.dtype.kind in "biuf":
            return array
    return None


# ---------------------------------------------------------------- reading frame by frame
# Formats whose files always describe a periodic crystal. ASE turns a CIF with
# zero (or missing) cell lengths into a non-periodic structure whose fractional
# coordinates are taken as Angstrom, and a POSCAR with zero lattice vectors into
# a periodic structure with a zero cell: neither is what the file meant, so a
# frame of these formats without a full, non-degenerate periodic cell is rejected.
_PERIODIC_FORMATS = frozenset({"cif", "res", "vasp", "vasp-out", "vasp-xdatcar", "vasp-xml", "espresso-in",
                               "espresso-out", "castep-cell", "abinit-in", "abinit-out", "struct"})
_CELL_FIX = {
    "cif": "give _cell_length_a/b/c and _cell_angle_alpha/beta/gamma",
    "vasp": "give the three lattice vector lines (and a non-zero scale factor)",
}
_XYZ_FORMATS = frozenset({"extxyz", "xyz"})
_MIN_CELL_LENGTH = 1e-8  # Å; a shorter cell vector is a zero one
_MIN_CELL_FLATNESS = 1e-8  # |det| / product of lengths; below it the vectors are parallel or coplanar
_MAX_DETAIL = 200  # characters of an exception message quoted in a reason


@dataclass
class Frame:
    """One frame of an input file: the structure ASE read, or why there is none.

    ``index`` is the frame's position in its file (0-based), whatever
    ``--index`` selects, so a reported frame can be found in the file (one
    exception: in formats other than XYZ and CIF, an ``--index`` counted from
    the end numbers frames within the selection, as the file's length is not
    known before reading it all).
    """

    source: str
    index: int
    atoms: Any = None
    problem: str | None = None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > _MAX_DETAIL:
        text = text[:_MAX_DETAIL] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _parse_index(index: str) -> slice:
    """An ASE index string (``":"``, ``"3"``, ``"-1"``, ``"10:20:2"``) as a slice."""
    from ase.io.formats import string2index

    hint = "use e.g. ':' (all), '0', '-1' (last), '10:20' or '::2'"
    try:
        part = string2index(index)
    except (ValueError, TypeError) as exc:
        raise MatscimlError(f"--index {index!r} is not an ASE index ({exc}); {hint}") from exc
    if isinstance(part, int):
        return slice(part, part + 1 or None)
    if not isinstance(part, slice):
        raise MatscimlError(f"--index {index!r} is not an ASE index; {hint}")
    if part.step == 0:
        raise MatscimlError(f"--index {index!r}: the step cannot be 0; {hint}")
    return part


def _needs_count(part: slice) -> bool:
    """Whether the selection counts from the end, so the number of frames must be known first."""
    return any(value is not None and value < 0 for value in (part.start, part.stop, part.step))


def _selected(part: slice, count: int | None = None) -> range:
    """Positions in the file that ``part`` selects (``count`` needed only when it counts from the end)."""
    if count is not None:
        return range(count)[part]
    return range(part.start or 0, sys.maxsize if part.stop is None else part.stop, part.step or 1)


def _resolve_format(path: Path, file_format: str | None) -> tuple[str, bool]:
    """The ASE format of ``path`` and whether its name (or the user) says so.

    The second value is False when only the file's contents made ASE guess
    the format: that is the one case where naming it with ``--format`` may be
    the fix for an unreadable file.
    """
    from ase.io.bundletrajectory import BundleTrajectory
    from ase.io.formats import UnknownFileTypeError, filetype, ioformats

    if path.is_dir() and not BundleTrajectory.is_bundle(path):  # the one format that is a folder
        raise MatscimlError(f"{path} is a directory, not a structure file; give the files in it, "
                            f"e.g. {path / '*.extxyz'}")
    if file_format is not None:
        if file_format not in ioformats:
            raise MatscimlError(f"--format {file_format!r}: ASE has no such format; `ase info --formats` "
                                f"lists them (e.g. extxyz, vasp, cif, traj, db)")
        return file_format, True
    try:
        by_name = filetype(str(path), read=False)
    except UnknownFileTypeError:
        by_name = None
    try:
        detected = filetype(str(path), read=True)  # as ase.io.iread guesses it
    except UnknownFileTypeError as exc:
        if path.stat().st_size == 0:
            raise MatscimlError(f"{path}: the file is empty; leave it out of the inputs") from exc
        raise MatscimlError(f"{path}: ASE cannot tell the format of this file from its name or contents; "
                            f"name it with --format (e.g. --format extxyz)") from exc
    if detected not in ioformats:
        raise MatscimlError(f"{path}: ASE does not know the file extension '.{detected}'; "
                            f"name the format with --format (e.g. --format extxyz)")
    return detected, by_name in ioformats


def iter_frames(path: str | os.PathLike[str], index: str = ":",
                file_format: str | None = None) -> Iterator[Frame]:
    """Yield every frame of ``path`` that ``index`` selects, read or with the reason it cannot be.

    A frame that cannot be parsed comes back as a :class:`Frame` with a
    ``problem`` naming the file and the frame, and reading goes on with the
    next frame. Only a file ASE cannot read at all raises: its format is not
    known, or its first frame fails and nothing but its contents told the
    format (then the message suggests ``--format``).

    Args:
        path: a structure file (compressed .gz/.bz2/.xz too, where ASE reads them).
        index: ASE index string selecting frames (``":"`` = all).
        file_format: ASE format name when the extension does not tell it.

    Raises:
        MatscimlError: the file cannot be read at all, or ``index`` is not an index.
        FileNotFoundError: ``path`` does not exist.
    """
    _import_ase()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such input file")
    part = _parse_index(index)
    fmt, named = _resolve_format(path, file_format)
    if fmt in _XYZ_FORMATS:
        frames = _iter_xyz_frames(path, fmt, part)
    elif fmt == "cif":
        frames = _iter_cif_frames(path, part)
    else:
        frames = _iter_ase_frames(path, fmt, part, index)
    first = True
    for frame in frames:
        if first and frame.problem is not None and not named:
            raise MatscimlError(f"{frame.problem}; ASE guessed the format {fmt} from the contents of "
                                f"{path.name}, so if it is in another format name that with --format")
        first = False
        if frame.atoms is not None and fmt in _PERIODIC_FORMATS:
            problem = _periodic_cell_problem(frame.atoms.cell, frame.atoms.pbc)
            if problem is not None:
                frame = Frame(frame.source, frame.index, problem=_not_periodic(path, frame.index, fmt, problem))
        yield frame


def _not_periodic(path: Path, index: int, fmt: str, problem: str) -> str:
    fix = _CELL_FIX.get(fmt, "give the structure's lattice vectors")
    return (f"frame {index} of {path}: a {fmt} file describes a periodic crystal, but this structure's cell "
            f"{problem}; {fix}, or delete the structure")


def _periodic_cell_problem(cell: Any, pbc: Any) -> str | None:
    """What keeps a structure with this cell and pbc from being a periodic crystal, or None."""
    cell = np.asarray(cell[:], dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    lengths = np.linalg.norm(cell, axis=1)
    shown = ", ".join(f"{length:.6g}" for length in lengths)
    became = "" if pbc.any() else ", which ASE turned into a non-periodic structure"
    if (lengths < _MIN_CELL_LENGTH).any():
        return f"has zero-length vectors (lengths {shown} Å){became}"
    if abs(np.linalg.det(cell)) < _MIN_CELL_FLATNESS * float(np.prod(lengths)):
        return f"vectors are parallel or coplanar (lengths {shown} Å, no volume){became}"
    if not pbc.all():
        along = ", ".join("abc"[axis] for axis in range(3) if pbc[axis])
        return f"is read by ASE as periodic only along {along}"
    return None


# Why extended XYZ is split into frames here and not left to ase.io.iread
# (ASE 3.29, checked when this was written): iread first scans the whole file
# for frame offsets, then parses the frames one after the other. So
# - a frame that fails to parse (an unknown element symbol raises KeyError:
#   'Xx') ends the iteration: every later frame is lost with it;
# - a truncated last frame raises XYZError ("Frame has 2 atoms, expected 4")
#   only when it is reached, with no line number;
# - one extra atom line anywhere makes the offset scan itself fail ("Expected
#   xyz header"), before the first frame: nothing at all is readable;
# - a blank line between frames ends the scan silently: the frames after it
#   are dropped without a word.
# The scan below finds frame boundaries from the text alone (atom-count line,
# comment line, that many atom lines, optional VEC lines), keeping one frame in
# memory, and hands each frame's text to ASE: a broken frame costs only itself,
# and each report can name the frame's lines.

@dataclass
class _TextFrame:
    number: int
    first_line: int
    last_line: int
    text: str | None = None
    problem: str | None = None


class _Lines:
    """Lines of a text file, with line numbers and one line of push-back."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self._held: str | None = None
        self.number = 0  # 1-based number of the last line read

    def next(self) -> str:
        """The next line ('' at the end of the file)."""
        if self._held is not None:
            line, self._held = self._held, None
        else:
            line = self._handle.readline()
        if line:
            self.number += 1
        return line

    def push_back(self, line: str) -> None:
        self._held = line
        self.number -= 1

    def skip_to_count_line(self) -> int:
        """Skip lines up to the next atom-count line; the number of the last line skipped."""
        while True:
            line = self.next()
            if not line:
                return self.number
            if _atom_count(line) is not None:
                self.push_back(line)
                return self.number


def _atom_count(line: str) -> int | None:
    """The number of atoms if ``line`` is an XYZ atom-count line (as ASE tests it), else None."""
    try:
        count = int(line)
    except ValueError:
        return None
    return count if count >= 0 else None


def _split_xyz(handle: IO[str]) -> Iterator[_TextFrame]:
    """Cut an (extended) XYZ text into frames without parsing them.

    An atom line never is a lone integer (it holds at least a symbol and three
    coordinates), so such a line among a frame's atom lines is taken as the
    next frame's atom-count line: the frame is shorter than its count says.
    Lines after a frame that start no new frame make that frame's count
    disagree with its lines; they are skipped up to the next count line.
    """
    lines = _Lines(handle)
    number = 0
    while True:
        line = lines.next()
        if not line:
            return
        if not line.strip():
            continue  # blank lines between frames (ASE would stop reading here)
        first = lines.number
        count = _atom_count(line)
        if count is None:
            last = lines.skip_to_count_line()
            shown = " ".join(line.split())[:40]
            yield _TextFrame(number, first, last, problem=(
                f"line {first} should hold the frame's number of atoms but reads {shown!r} "
                f"(lines {first}-{last} skipped); correct or delete those lines"))
            number += 1
            continue
        comment = lines.next()
        if not comment:
            yield _TextFrame(number, first, first, problem=(
                f"truncated: the file ends after the atom-count line {first} of this frame; "
                f"complete or delete the frame"))
            return
        text = [line, comment]
        problem = None
        for read in range(count):
            atom_line = lines.next()
            if not atom_line:
                yield _TextFrame(number, first, lines.number, problem=(
                    f"truncated: the file ends after {read} of its {count} atom lines (lines {first}-"
                    f"{lines.number}); complete or delete the frame"))
                return
            if _atom_count(atom_line) is not None:
                lines.push_back(atom_line)
                problem = (f"its count (line {first}) says {count} atoms but only {read} atom lines follow "
                           f"(lines {first}-{lines.number}); correct the count or the atom lines")
                break
            text.append(atom_line)
        else:
            following = lines.next()
            while following.lstrip().startswith("VEC"):  # cell vectors of the VEC1..VEC3 convention
                text.append(following)
                following = lines.next()
            if following.strip() and _atom_count(following) is None:
                last = lines.skip_to_count_line()
                problem = (f"its count (line {first}) says {count} atoms but more lines follow before the "
                           f"next frame (lines {first}-{last}); correct the count or the atom lines")
            elif following:
                lines.push_back(following)
        yield _TextFrame(number, first, lines.number, text=None if problem else "".join(text), problem=problem)
        number += 1


def _open_text(path: Path) -> IO[str]:
    from ase.io.formats import open_with_compression

    return open_with_compression(str(path), "r")


def _iter_xyz_frames(path: Path, fmt: str, part: slice) -> Iterator[Frame]:
    import ase.io

    count = None
    if _needs_count(part):
        with _open_text(path) as handle:
            count = sum(1 for _ in _split_xyz(handle))
    wanted = _selected(part, count)
    if not wanted:
        return
    last_wanted = wanted[0] if wanted.step < 0 else wanted[-1]  # O(1), unlike max() of a range
    with _open_text(path) as handle:
        for text_frame in _split_xyz(handle):
            number = text_frame.number
            if number > last_wanted:
                return
            if number not in wanted:
                continue
            where = f"frame {number} of {path}"
            if text_frame.problem is not None:
                yield Frame(str(path), number, problem=f"{where}: {text_frame.problem}")
                continue
            try:
                atoms = ase.io.read(io.StringIO(text_frame.text), index=0, format=fmt)
            except Exception as exc:  # noqa: BLE001 - ASE raises many types for a malformed frame
                yield Frame(str(path), number, problem=(
                    f"{where}: cannot be parsed ({_one_line(exc)}): lines {text_frame.first_line}-"
                    f"{text_frame.last_line}; correct or delete the frame"))
                continue
            yield Frame(str(path), number, atoms=atoms)


def _iter_cif_frames(path: Path, part: slice) -> Iterator[Frame]:
    """Frames of a CIF: its data blocks that hold a structure, each built on its own.

    ASE's own CIF reader builds every block before it returns the first, so
    one broken block (e.g. one zero cell length) would lose the whole file;
    here each block is turned into atoms by ASE separately. (ASE reads a CIF
    file into memory at once; CIF files are small.)
    """
    from ase.io.cif import parse_cif
    from ase.io.formats import open_with_compression

    blocks: list[tuple[Any, Exception | None]] = []  # blocks that hold a structure, or fail to say
    syntax_error = None
    with open_with_compression(str(path), "rb") as handle:
        try:
            for block in parse_cif(handle):
                try:
                    if block.has_structure():
                        blocks.append((block, None))
                except Exception as exc:  # noqa: BLE001 - a block too broken to tell
                    blocks.append((block, exc))
        except Exception as exc:  # noqa: BLE001 - the CIF syntax breaks here
            syntax_error = exc
    wanted = _selected(part, len(blocks))
    for number, (block, error) in enumerate(blocks):
        if number not in wanted:
            continue
        try:
            if error is not None:
                raise error
            # ASE fails with a bare AssertionError on a cell with one or two zero lengths
            problem = _periodic_cell_problem(block.get_cell(), (True, True, True))
            if problem is not None:
                yield Frame(str(path), number, problem=_not_periodic(path, number, "cif", problem))
                continue
            atoms = block.get_atoms()
        except Exception as exc:  # noqa: BLE001 - ASE raises many types for a malformed block
            yield Frame(str(path), number, problem=(
                f"frame {number} of {path}: cannot be parsed ({_one_line(exc)}): data block "
                f"'data_{block.name}'; correct or delete the block"))
            continue
        yield Frame(str(path), number, atoms=atoms)
    number = len(blocks)
    if syntax_error is not None and (part.stop is None or part.stop < 0 or part.stop > number):
        yield Frame(str(path), number, problem=(
            f"frames from {number} on of {path}: cannot be parsed ({_one_line(syntax_error)}): the CIF "
            f"syntax breaks {f'after {number} structure block(s)' if number else 'before the first data block'} "
            f"and ASE reads nothing after that; correct the file there"))


def _iter_ase_frames(path: Path, fmt: str, part: slice, index: str) -> Iterator[Frame]:
    """Frames of any other format through ``ase.io.iread``, resuming after a frame that raises.

    After frame k raises, reading resumes at k + 1 (``iread(index=slice(k + 1,
    ...))``). Formats that parse the whole file before the first frame (or
    that cannot start in the middle) fail again at once; then the rest of the
    file is reported as unreadable, and the frames read before are kept.
    """
    import ase.io
    from ase.io.formats import get_ioformat

    single = get_ioformat(fmt).single
    if single and (part.start or 0) > 0:
        return  # a one-structure format has no frame 1
    if _needs_count(part):
        # counting from the end needs the number of frames, which only a full
        # read gives; ASE selects, and frames are numbered within the selection
        number = 0
        try:
            for atoms in ase.io.iread(str(path), index=part, format=fmt, do_not_split_by_at_sign=True):
                yield Frame(str(path), number, atoms=atoms)
                number += 1
        except Exception as exc:  # noqa: BLE001
            yield Frame(str(path), number, problem=(
                f"frame {number} (counted within --index {index}) of {path}, and any after it: cannot be "
                f"parsed ({_one_line(exc)}); correct the file, or give an --index counted from the start "
                f"to read on past the broken frame"))
        return
    # steps are applied here, not by ASE: some readers (ase.db) refuse them
    start, stop, step = part.start or 0, part.stop, part.step or 1
    position = start
    failed_at = None
    while stop is None or position < stop:
        read_any = False
        try:
            reader = ase.io.iread(str(path), index=slice(position, stop), format=fmt,
                                  do_not_split_by_at_sign=True)
            for atoms in reader:
                read_any = True
                if (position - start) % step == 0:
                    yield Frame(str(path), position, atoms=atoms)
                position += 1
            return
        except Exception as exc:  # noqa: BLE001 - ASE raises many types for a malformed frame
            if failed_at is not None and not read_any:
                yield Frame(str(path), position, problem=(
                    f"frames from {position} on of {path}: cannot be read: ASE cannot go on reading this "
                    f"{fmt} file after frame {failed_at} ({_one_line(exc)}); the frames before it were read; "
                    f"correct the file or convert it to extended XYZ"))
                return
            if (position - start) % step == 0:
                yield Frame(str(path), position, problem=(
                    f"frame {position} of {path}: cannot be parsed ({_one_line(exc)}); correct or delete "
                    f"the frame"))
            if single:
                return
            failed_at = position
            position += 1


# ---------------------------------------------------------------- conversion
GROUP_BY_FILE_KEY = "source_file"
"""The key ``group_by="file"`` (``--group-by file``) gives each structure: its input file, as given."""


def _group_key(group_by: str | None, fields: dict[str, Mapping[str, str]]) -> str | None:
    """The key that groups structures, declared in ``fields`` as a per-structure annotation (not a target)."""
    if group_by is None:
        return None
    if not isinstance(group_by, str) or not group_by.strip():
        raise MatscimlError(f"--group-by {group_by!r}: give an atoms.info key (a system or trajectory id), "
                            f"or 'file' to group the structures of each input file")
    key = GROUP_BY_FILE_KEY if group_by == "file" else group_by
    registered = REGISTERED_FIELDS.get(key)
    if registered is not None and (registered.role, registered.arity) != ("structure", "structure"):
        raise MatscimlError(f"--group-by {group_by}: {key!r} is a {registered.describe()}, not a system or "
                            f"trajectory id; give the atoms.info key that names each structure's system")
    declared = dict(fields.get(key, {}))
    if declared.get("role", "structure") != "structure" or declared.get("arity", "structure") != "structure":
        raise MatscimlError(f"--group-by {group_by}: {key!r} is also declared {declared} (--field), but a group "
                            f"key is a per-structure annotation; drop that --field {key}=... option")
    # text is always per structure; a number is one value per structure when it is a scalar (checked per frame)
    fields[key] = {**declared, "role": "structure"}
    return key


def _check_group_value(sample: Sample, key: str, frame: Frame) -> None:
    """A structure's group id: present, and one number or string (else nothing is written)."""
    where = f"frame {frame.index} of {frame.source}"
    if key not in sample:
        raise MatscimlError(f"--group-by {key}: {where} has no {key!r} in atoms.info, and every structure needs "
                            f"its group; add it to that frame, or group with --group-by file (nothing written)")
    value = sample[key]
    if not isinstance(value, str) and np.asarray(value).ndim != 0:
        raise MatscimlError(f"--group-by {key}: {key!r} of {where} has shape {np.shape(value)}, not one number "
                            f"or string per structure; give a system or trajectory id (nothing written)")


@dataclass
class ConversionReport:
    """What a conversion did: samples written, frames rejected (invalid or unreadable) and why."""

    output: Path
    written: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    num_rejected: int = 0


def _refuse_writing_over_inputs(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str]) -> None:
    """Raise if ``output`` is one of ``inputs``, under any spelling (./x, a symlink, a hard link)."""
    target = Path(output)
    resolved = target.resolve()
    for source in inputs:
        same = Path(source).resolve() == resolved
        if not same and target.exists():
            try:
                same = os.path.samefile(source, target)
            except OSError:
                same = False
        if same:
            other = target.with_suffix(".lmdb") if target.suffix != ".lmdb" else target.with_name(
                f"{target.stem}-converted.lmdb")
            raise MatscimlError(f"output {os.fspath(output)} is the input file {os.fspath(source)}: writing the "
                                f"dataset there would destroy the structures it is read from; choose another -o, "
                                f"e.g. -o {other}")


def convert(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], *,
            name: str | None = None, description: str = "", units: Mapping[str, str] | None = None,
            index: str = ":", file_format: str | None = None, overwrite: bool = False,
            strict: bool = False, progress: bool = True,
            fields: Mapping[str, Mapping[str, str]] | None = None,
            group_by: str | None = None) -> ConversionReport:
    """Convert structure files into one matsciml dataset file at ``output``.

    Frames are read one at a time (:func:`iter_frames`). A frame that cannot
    be parsed, or whose structure breaks the schema, is left out and recorded
    in the report and in the metadata's ``rejected`` list with its file, its
    index in the file and the reason; the other frames are converted.

    Args:
        inputs: files any ASE reader understands.
        output: the dataset file to write (atomically); never one of ``inputs``.
        name, description: recorded in the metadata.
        units: units of properties the schema does not know (``{"band_gap": "eV"}``).
        index: ASE index string selecting structures of each file (``":"`` = all).
        file_format: ASE format name when the extension does not tell it.
        overwrite: replace an existing dataset at ``output`` (never an input file).
        strict: fail on the first invalid or unreadable frame, writing nothing
            (an existing dataset at ``output`` is left as it was).
        progress: show a progress bar on stderr.
        fields: role and/or arity of keys the field registry does not know
            (``{"q": {"role": "input", "arity": "atom"}}``, the ``--field``
            option); see :mod:`matsciml.fields`. Undeclared keys are targets,
            per atom when they have one row per atom in every structure.
        group_by: the ``atoms.info`` key (a system or trajectory id) whose
            values group the structures, recorded per structure with role
            ``structure`` and as the metadata's ``group_key``, so that splits
            keep a group in one part; every structure must have it (else
            nothing is written). ``"file"`` instead gives each structure the
            key ``source_file``, the input file as given, and groups by it.

    Raises:
        MatscimlError: ``output`` is an input, an input cannot be read at all,
            no frame is valid, (``strict``) a frame is invalid or unreadable,
            a declaration contradicts a registered field, a declared key is
            in no structure, or (``group_by``) a structure lacks the group key.
    """
    from tqdm.auto import tqdm

    ase = _import_ase()
    sources = [Path(p) for p in inputs]
    for source in sources:
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such input file")
    _refuse_writing_over_inputs(inputs, output)
    _parse_index(index)  # a bad --index or an unknown format fails before anything is written
    for source in sources:
        _resolve_format(source, file_format)
    provenance = {
        "sources": [str(source.resolve()) for source in sources],
        "reader": f"ase {ase.__version__}",
        "command": " ".join(sys.argv) if sys.argv else "",
        "index": index,
    }
    fields = dict(fields or {})
    group_key = _group_key(group_by, fields)
    if group_key is not None:
        units = {group_key: "", **(units or {})}  # an id has no unit (unless one is given)
    for key, declaration in fields.items():  # a contradiction fails before anything is read
        check_declaration(key, declaration)
    seen_keys: set[str] = set()
    report = ConversionReport(output=Path(output))
    # the bar is closed (its line ended) before an error leaves the block, so the error stays one line
    with DatasetWriter(output, name=name, description=description, units=units, provenance=provenance,
                       overwrite=overwrite, fields=fields, group_key=group_key) as writer, \
            tqdm(desc=f"converting to {Path(output).name}", unit=" structures", disable=not progress,
                 file=sys.stderr) as bar:
        for given, source in zip(inputs, sources):
            for frame in iter_frames(source, index=index, file_format=file_format):
                bar.update(1)
                try:
                    if frame.problem is not None:
                        raise InvalidSampleError(frame.problem)
                    sample = atoms_to_sample(frame.atoms)
                    if group_by == "file":
                        sample[group_key] = os.fspath(given)  # type: ignore[index]
                    sample = validate_sample(sample, index=frame.index, source=frame.source,
                                             declared=writer.declared_fields)
                except InvalidSampleError as exc:
                    if strict:
                        raise MatscimlError(f"{exc} (--strict: no dataset written)") from exc
                    writer.reject(index=frame.index, source=frame.source, reason=str(exc))
                    continue
                if group_key is not None:
                    _check_group_value(sample, group_key, frame)
                writer.append(sample, validate=False)
                seen_keys.update(sample)
        if writer.count == 0:
            raise MatscimlError(
                f"none of the {writer.num_rejected} structures in {', '.join(map(str, inputs))} is valid; "
                f"first reason: {writer.rejected[0]['reason'] if writer.rejected else 'no structures found'}"
            )
        absent = sorted(set(fields) - seen_keys)
        if absent:
            raise MatscimlError(
                f"--field {absent[0]}: no structure written from {', '.join(map(str, inputs))} has a key "
                f"{absent[0]!r} (they have {', '.join(sorted(seen_keys))}); correct the name or drop the "
                f"declaration (nothing written)")
    report.written = writer.count
    report.rejected = writer.rejected
    report.num_rejected = writer.num_rejected
    return report
