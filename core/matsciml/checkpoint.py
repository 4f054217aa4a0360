"""The one reader of checkpoints: tensors and plain data, never code.

A PyTorch checkpoint is a pickle inside a zip archive, and unpickling an
arbitrary file can run arbitrary code (a checkpoint with an added
``os.system`` payload ran it and then evaluated normally). Every command and
function of matsciml that opens a checkpoint calls :func:`read_checkpoint`.

Why ``torch.load(weights_only=True)`` and not safetensors beside a JSON
record: Lightning writes and resumes ``.ckpt`` files itself (weights,
optimiser, schedulers, callback and loop states), so keeping its format
keeps resume, callbacks and the field's tooling working, while torch's
restricted unpickler, maintained with torch, rebuilds only tensors,
storages, dtypes, ``OrderedDict`` and plain containers of strings and
numbers. That allow-list is exactly what a matsciml checkpoint holds: the
run record is plain data (the resolved config and the split), and a test
reads a real checkpoint back on both tested torch releases. Anything else in
a file (a class, a function, ``os.system``) is refused before it is built.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from matsciml.errors import MatscimlError

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = 0x80  # the legacy (non-zip) torch.save format starts with a pickle PROTO opcode


class CheckpointError(MatscimlError):
    """A file given as a checkpoint is not one, is damaged, or holds more than data."""


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The contents of a Lightning checkpoint, loaded on the CPU without running code.

    Raises:
        CheckpointError: one line naming the file and what it is not: missing,
            empty, not a PyTorch checkpoint, truncated or damaged, holding
            objects other than tensors and plain data, or not a Lightning
            checkpoint (no ``state_dict``).
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file; give a .ckpt file such as RUN/checkpoints/last.ckpt")
    _check_container(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_refusal(path, str(exc))) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path} is damaged or truncated ({type(exc).__name__}: {_first_line(exc)}); "
            f"copy it again, or use another checkpoint of the run (RUN/checkpoints/)") from None
    except Exception as exc:  # noqa: BLE001 - torch's unpickler raises many types on hostile input
        raise CheckpointError(f"{path} cannot be read as a checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a Lightning checkpoint "
                              f"(a dictionary with a state_dict); give a checkpoint written by `matsciml train`")
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} is a PyTorch file but not a Lightning checkpoint (it has no state_dict; keys: "
                              f"{', '.join(map(str, list(checkpoint)[:8])) or 'none'}); "
                              f"give a checkpoint written by `matsciml train`")
    return checkpoint


def _check_container(path: Path) -> None:
    """Refuse files that are not even a torch.save archive, with what they are instead."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint; it was cut short while written or copied")
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path} is truncated or damaged (its zip archive has no central directory); "
                                  f"copy it again, or use another checkpoint of the run (RUN/checkpoints/)")
        return
    if head[0] == _PICKLE_PROTOCOL_OPCODE:
        return  # torch's legacy format; the restricted unpickler checks the rest
    raise CheckpointError(f"{path} is not a PyTorch checkpoint (it starts with {head!r}, not a zip archive); "
                          f"give a .ckpt file written by `matsciml train`")


def _refusal(path: Path, message: str) -> str:
    found = re.search(r"(?:GLOBAL|global|class|function)\s+([\w.]+)", message)
    what = f" ({found.group(1)})" if found else ""
    if "weights only" in message.lower() or found:
        return (f"{path} holds Python objects other than tensors and plain data{what}; opening it could run code, "
                f"so matsciml refuses it. Checkpoints written by `matsciml train` hold none: the file was altered "
                f"or written by another program")
    return f"{path} is damaged: its pickle cannot be read ({_first_line_of(message)})"


def _first_line(exc: BaseException) -> str:
    return _first_line_of(str(exc))


def _first_line_of(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else "no detail"


__all__ = ["CheckpointError", "read_checkpoint"]
