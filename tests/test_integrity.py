"""Nothing damaged goes unnoticed: checksums, truncated files, old layouts, failed writes, stale files.

Each test first makes the damage real (a bit flipped in the file on disk, a
file cut short, a forged record, a file-size limit, a folder the writer may
not write to) and shows what it does without the protection where that can
be shown (a schema check passes the flipped value, raw LMDB dies of SIGBUS),
then checks that matsciml names the file, the sample and the problem in one
line and goes on where it should.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import lmdb
import numpy as np
import pytest

from matsciml.cli import main
from matsciml.data.dataset import LMDBDataset
from matsciml.data.inspect import validate_all
from matsciml.data.schema import validate_sample
from matsciml.data.storage import (
    METADATA_KEY,
    DatasetFile,
    DatasetWriteError,
    DatasetWriter,
    check_lmdb_file,
    decode_sample,
    sample_key,
)
from matsciml.datasets import DEVSETS, devset_path
from matsciml.errors import DatasetFormatError, MatscimlError

DAMAGED_FIX = "restore the file or convert the source again"


def energy_of(index: int) -> float:
    """A distinct energy per sample, so its 8 bytes occur once in the file."""
    return -150.0 - 1.0123456789 * index


def make_sample(index: int, natoms: int = 4) -> dict:
    rng = np.random.default_rng(index)
    return {
        "atomic_numbers": np.full(natoms, 29, dtype=np.int64),
        "pos": rng.uniform(0.0, 6.0, (natoms, 3)),
        "cell": np.eye(3) * 7.0,
        "pbc": np.array([True, True, True]),
        "energy": np.float64(energy_of(index)),
        "forces": rng.normal(0.0, 0.1, (natoms, 3)),
        "label": f"frame {index}",
    }


def write(path: Path, count: int, invalid: dict[int, dict] | None = None) -> Path:
    """``count`` valid samples; ``invalid`` replaces some, written unvalidated as a buggy tool would."""
    invalid = invalid or {}
    with DatasetWriter(path, name=path.stem) as writer:
        for index in range(count):
            if index in invalid:
                writer.append(invalid[index], validate=False)
            else:
                writer.append(make_sample(index), index=index)
    return path


def flip_bit_of_value(path: Path, value: float, bit: int = 0) -> float:
    """Flip one bit of the float64 ``value`` where the file stores it; return the damaged value."""
    data = bytearray(path.read_bytes())
    needle = np.float64(value).tobytes()
    assert data.count(needle) == 1, "the value must occur exactly once in the file"
    at = data.find(needle)
    data[at + bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))
    return float(np.frombuffer(bytes(data[at:at + 8]), dtype=np.float64)[0])


def put_raw(path: Path, key: bytes, value: bytes) -> None:
    """Replace one raw LMDB value (a forged or damaged record), before any reader opens the file."""
    env = lmdb.open(str(path), subdir=False, lock=False)
    try:
        with env.begin(write=True) as txn:
            txn.put(key, value)
    finally:
        env.close()


def framed(body: bytes) -> bytes:
    """A record with a valid checksum: magic, CRC32 of the body, body."""
    return b"MSMC" + zlib.crc32(body).to_bytes(4, "little") + body


def sample_body(entries: list, payload: bytes) -> bytes:
    header = json.dumps({"k": entries}).encode()
    return len(header).to_bytes(4, "little") + header + payload


def one_line(message: str) -> str:
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------- flipped bits
def test_flipped_bit_in_a_stored_float_names_the_sample(tmp_path):
    """One flipped bit in a stored energy: read(3) and dataset[3] raise naming the file, index and checksum."""
    path = write(tmp_path / "data.lmdb", 6)
    damaged = flip_bit_of_value(path, energy_of(3))

    # The damage is silent at the value level: a plausible, finite energy that the schema accepts.
    assert damaged != energy_of(3) and abs(damaged - energy_of(3)) < 1e-9
    validate_sample({**make_sample(3), "energy": np.float64(damaged)})

    file = DatasetFile(path)
    with pytest.raises(DatasetFormatError) as info:
        file.read(3)
    message = one_line(str(info.value))
    assert message.startswith(f"sample 3 of {path}: checksum mismatch (stored 0x")
    assert ", computed 0x" in message and message.endswith(DAMAGED_FIX)
    with pytest.raises(DatasetFormatError, match="sample 3 of .*: checksum mismatch"):
        file.read(3, keys=["pos"])  # the whole record is verified, whatever keys are asked for
    for index in (0, 1, 2, 4, 5):
        assert float(file.read(index)["energy"]) == energy_of(index)

    dataset = LMDBDataset(path)
    for index in (3, -3):
        with pytest.raises(DatasetFormatError, match=r"sample 3 of .*data.lmdb: checksum mismatch"):
            dataset[index]


def test_flipped_bit_in_the_second_file_names_that_file_and_its_index(tmp_path):
    """In a dataset of two files, the error names the second file and the index within it."""
    first = write(tmp_path / "a.lmdb", 4)
    second = write(tmp_path / "b.lmdb", 4)
    flip_bit_of_value(second, energy_of(2), bit=13)
    dataset = LMDBDataset([first, second])
    with pytest.raises(DatasetFormatError, match=rf"^sample 2 of {re.escape(str(second))}: checksum mismatch"):
        dataset[4 + 2]
    assert [(bad.file, bad.index, bad.dataset_index) for bad in validate_all(dataset)] == [(str(second), 2, 6)]


def test_inspect_validate_lists_every_bad_sample_and_goes_on(tmp_path, capsys):
    """--validate lists a flipped bit, an undecodable header and a NaN label, each with its index; exit 1."""
    nan_energy = {**make_sample(6), "energy": np.float64(np.nan)}
    path = write(tmp_path / "bad.lmdb", 8, invalid={6: nan_energy})
    flip_bit_of_value(path, energy_of(1), bit=3)
    put_raw(path, sample_key(4), framed(b"\x05\x00\x00\x00{\"k\":"))  # valid checksum, broken JSON header

    assert main(["data", "inspect", str(path), "--validate"]) == 1
    captured = capsys.readouterr()
    lines = [line.strip() for line in captured.err.splitlines()]
    assert lines[0] == "INVALID samples: 3"
    assert lines[1].startswith(f"sample 1 of {path}: checksum mismatch")
    assert lines[2].startswith(f"sample 4 of {path}: the record header is not valid JSON")
    assert lines[3].startswith(f"sample 6 of {path}: energy is nan, not a finite number")
    assert len(lines) == 4
    assert "samples     8" in captured.out  # the summary is still printed

    assert main(["data", "inspect", str(path), "--validate", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(bad["file"], bad["index"]) for bad in report["invalid"]] == [(str(path), 1), (str(path), 4),
                                                                          (str(path), 6)]
    assert "checksum mismatch" in report["invalid"][0]["reason"]


# ---------------------------------------------------------------- damaged or forged records
def _record_cases() -> dict[str, tuple[bytes, str]]:
    energy = np.float64(-1.5).tobytes()
    good_header = [["energy", "<f8", [], 0, 8]]
    return {
        "raw byte damage in the header": (None, "checksum mismatch (stored 0x"),
        "too short": (b"MSM", "too short for a matsciml record header"),
        "foreign magic": (b"PK\x03\x04" + bytes(20), "bad magic bytes b'PK\\x03\\x04'"),
        "older layout": (b"MSML" + sample_body(good_header, energy), "written by an older matsciml"),
        "header length past the end": (framed((10 ** 6).to_bytes(4, "little") + b"{}"), "reaches past the end"),
        "header not JSON": (framed(b"\x05\x00\x00\x00{\"k\":"), "the record header is not valid JSON"),
        "header not UTF-8": (framed(b"\x02\x00\x00\x00\xff\xfe"), "the record header is not valid JSON"),
        "header without keys": (framed(b"\x02\x00\x00\x00[]"), "the record header has no list of keys"),
        "entry not a list": (framed(sample_body([5], b"")),
                             "a header entry is not [key, dtype, shape, offset, length]: 5"),
        "byte range outside": (framed(sample_body([["energy", "<f8", [], 4, 8]], energy)),
                               "key 'energy': its byte range (4, length 8) lies outside the payload of 8 bytes"),
        "negative offset": (framed(sample_body([["energy", "<f8", [], -8, 8]], energy)),
                            "its byte range (-8, length 8) is not a pair of non-negative integers"),
        "unknown dtype": (framed(sample_body([["energy", "<zz", [], 0, 8]], energy)), "is not a numpy dtype"),
        "object dtype": (framed(sample_body([["energy", "|O", [], 0, 8]], energy)), "which matsciml never writes"),
        "shape against length": (framed(sample_body([["energy", "<f8", [2, 3], 0, 8]], energy)),
                                 "shape [2, 3] of float64 needs 48 bytes, but the record holds 8"),
        "negative shape": (framed(sample_body([["energy", "<f8", [-1], 0, 8]], energy)),
                           "shape [-1] has a negative size"),
        "more dimensions than numpy allows": (framed(sample_body([["energy", "<f8", [1] * 70, 0, 8]], energy)),
                                              "undecodable record (ValueError: "),
        "text not UTF-8": (framed(sample_body([["label", "utf8", [], 0, 2]], b"\xff\xfe")),
                           "key 'label': its text is not valid UTF-8"),
    }


@pytest.mark.parametrize("case", list(_record_cases()))
def test_undecodable_record_names_file_sample_and_problem(tmp_path, case):
    """Every way a record can fail to decode is one DatasetFormatError naming file, sample 1 and the problem."""
    record, expected = _record_cases()[case]
    path = write(tmp_path / "forged.lmdb", 3)
    if record is None:  # damage on disk: one byte of sample 1's JSON header
        data = bytearray(path.read_bytes())
        at = data.find(np.float64(energy_of(1)).tobytes())
        header_at = data.rfind(b'[["atomic_numbers"', 0, at)
        assert header_at > 0
        data[header_at + 3] ^= 0x20
        path.write_bytes(bytes(data))
    else:
        put_raw(path, sample_key(1), record)

    file = DatasetFile(path)
    with pytest.raises(DatasetFormatError) as info:
        file.read(1)
    message = one_line(str(info.value))
    assert message.startswith(f"sample 1 of {path}: "), message
    assert expected in message, message
    assert float(file.read(0)["energy"]) == energy_of(0) and float(file.read(2)["energy"]) == energy_of(2)
    bad = list(validate_all(LMDBDataset(path)))
    assert [(b.index, b.reason) for b in bad] == [(1, message)]


def test_decode_sample_names_its_source():
    """decode_sample without a file says 'record'; with source= it names what the caller passes."""
    with pytest.raises(DatasetFormatError, match=r"^record: checksum mismatch"):
        decode_sample(b"MSMC" + bytes(4) + b"\x02\x00\x00\x00{}")
    with pytest.raises(DatasetFormatError, match=r"^sample 9 of x.lmdb: bad magic"):
        decode_sample(b"ABCD" + bytes(8), source="sample 9 of x.lmdb")


def test_lmdb_error_while_reading_a_sample_is_translated(tmp_path):
    """A damaged LMDB page (wrong page type) gives a DatasetFormatError naming the sample, not lmdb.Error."""
    path = write(tmp_path / "pages.lmdb", 200)
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[40:44], sys.byteorder)
    page = data.find(np.float64(energy_of(50)).tobytes()) // page_size
    first_page = data.find(np.float64(energy_of(0)).tobytes()) // page_size
    assert page != first_page
    data[page * page_size + 10:page * page_size + 12] = bytes(2)  # mp_flags: neither branch nor leaf
    path.write_bytes(bytes(data))

    file = DatasetFile(path)
    with pytest.raises(DatasetFormatError) as info:
        file.read(50)
    message = one_line(str(info.value))
    assert message.startswith(f"sample 50 of {path}: LMDB cannot read the record (")
    assert "MDB_CORRUPTED" in message and isinstance(info.value.__cause__, lmdb.Error)
    assert float(file.read(0)["energy"]) == energy_of(0)
    assert 50 in [bad.index for bad in validate_all(LMDBDataset(path))]


# ---------------------------------------------------------------- metadata
def test_damaged_metadata_is_refused_at_open(tmp_path):
    """A changed letter in the metadata (still valid JSON, so plausible) fails its checksum at open."""
    path = write(tmp_path / "meta.lmdb", 5)
    data = path.read_bytes()
    assert data.count(b'"name": "meta"') == 1
    path.write_bytes(data.replace(b'"name": "meta"', b'"name": "mete"'))
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        body = txn.get(METADATA_KEY)[8:]
    env.close()
    assert json.loads(body)["name"] == "mete"  # without the checksum this would be believed

    with pytest.raises(DatasetFormatError) as info:
        DatasetFile(path)
    message = one_line(str(info.value))
    assert message.startswith(f"{path}: the metadata record is damaged (checksum mismatch (stored 0x")
    assert message.endswith(DAMAGED_FIX)


# ---------------------------------------------------------------- older layout
def _write_old_layout(source: Path, target: Path) -> None:
    """The same dataset in the layout before checksums: b"MSML" records and plain-JSON metadata."""
    reader = lmdb.open(str(source), subdir=False, readonly=True, lock=False)
    with reader.begin() as txn:
        records = list(txn.cursor())
    reader.close()
    writer = lmdb.open(str(target), subdir=False, lock=False, map_size=1 << 24)
    with writer.begin(write=True) as txn:
        for key, value in records:
            txn.put(key, value[8:] if key == METADATA_KEY else b"MSML" + value[8:])
    writer.close()


def test_older_layout_without_checksums_is_refused_at_open(tmp_path, capsys):
    """A file of the older layout is refused in one line: written by an older matsciml, convert again."""
    new = write(tmp_path / "new.lmdb", 3)
    old = tmp_path / "old.lmdb"
    _write_old_layout(new, old)
    with pytest.raises(DatasetFormatError) as info:
        DatasetFile(old)
    message = one_line(str(info.value))
    assert message.startswith(f"{old}: it was written by an older matsciml, in a layout without checksums")
    assert "converted again with `matsciml data convert`" in message

    assert main(["data", "inspect", str(old)]) == 1
    err = capsys.readouterr().err
    assert err == f"matsciml: error: {message}\n"


# ---------------------------------------------------------------- truncated and foreign files
def test_truncated_file_is_refused_at_open_instead_of_sigbus(tmp_path):
    """A file cut short kills a raw LMDB reader with SIGBUS; DatasetFile refuses it first, in one line."""
    path = write(tmp_path / "cut.lmdb", 200)
    full_size = path.stat().st_size
    os.truncate(path, full_size // 2 + 123)

    raw_reader = ("import lmdb, sys\n"
                  "env = lmdb.open(sys.argv[1], subdir=False, readonly=True, lock=False)\n"
                  "with env.begin() as txn:\n"
                  "    print(sum(len(value) for _, value in txn.cursor()))\n")
    crashed = subprocess.run([sys.executable, "-c", raw_reader, str(path)], capture_output=True, timeout=60)
    assert crashed.returncode == -signal.SIGBUS, crashed

    expected = (f"{path}: the file is truncated ({full_size // 2 + 123} bytes, but its LMDB index reaches "
                f"{full_size} bytes): it was cut short in a copy or download; copy it again or convert the "
                f"source again")
    with pytest.raises(DatasetFormatError) as info:
        DatasetFile(path)
    assert str(info.value) == expected
    with pytest.raises(DatasetFormatError, match="the file is truncated"):
        LMDBDataset(tmp_path)


def test_truncated_file_in_the_cli_is_one_line(tmp_path):
    """`matsciml data inspect` and `--validate` on a truncated file: exit 1, one error line, no traceback."""
    path = write(tmp_path / "cut.lmdb", 200)
    os.truncate(path, path.stat().st_size - 3 * 4096)
    commands = [[sys.executable, "-m", "matsciml", "data", "inspect", str(path)],
                [sys.executable, "-m", "matsciml", "data", "inspect", str(path), "--validate"]]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for command in commands]  # together: each pays the start-up of torch
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 1, (process.returncode, err)
        assert err.count("\n") == 1 and err.startswith(f"matsciml: error: {path}: the file is truncated ("), err
        assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("cut", ["inside the first meta page", "inside the second meta page",
                                 "just after the meta pages"])
def test_file_cut_inside_its_meta_pages(tmp_path, cut):
    """Cut in the first meta page: not an LMDB file; later cuts: truncated, naming both sizes."""
    path = write(tmp_path / "short.lmdb", 20)
    full_size = path.stat().st_size
    size = {"inside the first meta page": 100, "inside the second meta page": 4096 + 50,
            "just after the meta pages": 2 * 4096}[cut]
    os.truncate(path, size)
    with pytest.raises(DatasetFormatError) as info:
        check_lmdb_file(path)
    message = one_line(str(info.value))
    if size < 152:
        assert message == (f"{path}: not an LMDB dataset file ({size} bytes, too small for the LMDB meta pages); "
                           f"convert your data with `matsciml data convert`")
        return
    reached = re.fullmatch(rf"{re.escape(str(path))}: the file is truncated \({size} bytes, but its LMDB index "
                           rf"reaches (\d+) bytes\): it was cut short in a copy or download; copy it again or "
                           rf"convert the source again", message)
    assert reached, message
    if size >= 2 * 4096:  # both meta pages readable: the newer one tells the full size
        assert int(reached[1]) == full_size
    else:  # only the first (older) meta page: it reaches at least past both meta pages
        assert size < int(reached[1]) <= full_size


def test_file_without_lmdb_magic_is_not_an_lmdb_file(tmp_path):
    """A file of zeros as long as an LMDB file is refused as not an LMDB dataset file."""
    path = tmp_path / "zeros.lmdb"
    path.write_bytes(bytes(3 * 4096))
    with pytest.raises(DatasetFormatError) as info:
        DatasetFile(path)
    assert str(info.value) == (f"{path}: not an LMDB dataset file (no LMDB magic number at its start); "
                               f"convert your data with `matsciml data convert`")


# ---------------------------------------------------------------- shipped devsets
@pytest.mark.parametrize("name", sorted(DEVSETS))
def test_shipped_devsets_read_and_validate_cleanly(name):
    """The shipped devsets are in the checksummed layout: every sample reads and validates."""
    path = devset_path(name)
    check_lmdb_file(path)
    file = DatasetFile(path)
    assert file.metadata["name"] == name and file.metadata["description"] and file.metadata["provenance"]
    assert list(validate_all(LMDBDataset(path))) == []
    assert len(file) > 100


# ---------------------------------------------------------------- failed writes
def test_output_under_a_file_fails_in_one_line_and_leaves_nothing(tmp_path):
    """An output path through a regular file (fails even for root): one line, no file or folder made."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    path = blocker / "sub" / "out.lmdb"
    with pytest.raises(DatasetWriteError) as info:
        with DatasetWriter(path) as writer:
            writer.append(make_sample(0))
    assert str(info.value) == (f"cannot write {path}: Not a directory; a part of the output path is a file, "
                               f"not a folder; choose another output path (-o)")
    assert info.value.errno == errno.ENOTDIR and isinstance(info.value, MatscimlError)
    assert os.listdir(tmp_path) == ["not-a-folder"]


def test_cli_convert_to_an_unwritable_path_is_one_line(tmp_path, capsys):
    """`matsciml data convert -o` through a file: exit 1 and one `matsciml: error:` line."""
    pytest.importorskip("ase")
    structures = tmp_path / "two.extxyz"
    frame = ('2\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 energy=-1.5 pbc="T T T"\n'
             'Cu 0.0 0.0 0.0\nCu 1.8 1.8 0.0\n')
    structures.write_text(frame * 2)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    output = blocker / "out.lmdb"
    assert main(["data", "convert", str(structures), "-o", str(output), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"matsciml: error: cannot write {output}: Not a directory;")
    assert sorted(os.listdir(tmp_path)) == ["blocker", "two.extxyz"]


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from matsciml.data.storage import DatasetWriter
    from matsciml.errors import MatscimlError

    def sample(i):
        rng = np.random.default_rng(i)
        return {"atomic_numbers": np.full(6, 29), "pos": rng.uniform(0, 5, (6, 3)), "cell": np.eye(3) * 6.0,
                "pbc": np.ones(3, bool), "energy": np.float64(i), "forces": rng.normal(size=(6, 3))}

    try:
        with DatasetWriter(sys.argv[1]) as writer:
            for i in range(int(sys.argv[2])):
                writer.append(sample(i))
    except MatscimlError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    print("written")
""")


def _file_size_limit() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing


def test_file_size_limit_during_a_write_is_one_line_and_leaves_nothing(tmp_path):
    """A 32 KiB file-size limit (as a full disk would) ends the write in one line; nothing is left behind."""
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "big.lmdb"
    result = subprocess.run([sys.executable, "-c", WRITER, str(path), "300"], capture_output=True, text=True,
                            preexec_fn=_file_size_limit, timeout=120)
    assert result.returncode == 1, result
    assert result.stderr == (f"cannot write {path}: File too large; the file system or a file-size limit "
                             f"(ulimit -f) caps the file size; raise the limit or choose another output "
                             f"folder (-o)\n")
    assert os.listdir(folder) == []


def _drop_root_override() -> None:
    """In the child: make root obey file permissions (drop CAP_DAC_OVERRIDE from what exec grants)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_capbset_drop, cap_dac_override = 24, 1
        if libc.prctl(pr_capbset_drop, cap_dac_override, 0, 0, 0) != 0:
            os._exit(77)


def test_read_only_folder_is_one_line_and_leaves_nothing(tmp_path):
    """A folder without write permission: one line naming the path and the fix; nothing is left behind.

    The tests run as root, whom permissions do not stop; the writer runs in a
    child process that has given up CAP_DAC_OVERRIDE, so a mode-555 folder is
    read-only to it as to any user.
    """
    folder = tmp_path / "read-only"
    folder.mkdir()
    path = folder / "x.lmdb"
    folder.chmod(0o555)
    try:
        result = subprocess.run([sys.executable, "-c", WRITER, str(path), "20"], capture_output=True, text=True,
                                preexec_fn=_drop_root_override, timeout=120)
        if result.returncode == 77:
            pytest.skip("cannot drop CAP_DAC_OVERRIDE here, so root would write into a read-only folder")
        assert result.returncode == 1, result
        assert result.stderr == (f"cannot write {path}: Permission denied; choose an output folder you can "
                                 f"write to (-o), or change its permissions\n")
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


# ---------------------------------------------------------------- stale temporary files
def test_stale_temporary_files_of_any_name_are_removed(tmp_path):
    """Partial files of exited processes go at the next write to ANY name; live or foreign ones stay."""
    write(tmp_path / "kept.lmdb", 2)
    exited = subprocess.Popen([sys.executable, "-c", ""])
    exited.wait()
    stale = [tmp_path / f".lips.lmdb.partial-{exited.pid}", tmp_path / f".other.lmdb.partial-{exited.pid}"]
    live = tmp_path / f".busy.lmdb.partial-{os.getpid()}"
    foreign = [tmp_path / ".notes.partial-draft", tmp_path / "visible.partial-1"]
    for file in [*stale, live, *foreign]:
        file.write_bytes(b"half a dataset")

    # Never read as datasets: skipped in a folder, refused when named.
    assert [f.path.name for f in LMDBDataset(tmp_path).files] == ["kept.lmdb"]
    with pytest.raises(DatasetFormatError) as info:
        DatasetFile(stale[0])
    assert one_line(str(info.value)) == (
        f"{stale[0]}: this is the temporary file of a conversion to lips.lmdb that did not finish "
        f"(process {exited.pid}), not a dataset; run the conversion again")

    write(tmp_path / "new.lmdb", 2)
    left = sorted(os.listdir(tmp_path))
    assert left == sorted(["kept.lmdb", "new.lmdb", live.name, *(f.name for f in foreign)])
