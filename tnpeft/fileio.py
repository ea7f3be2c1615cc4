"""Safe, atomic file helpers shared by every floor that writes or reads files.

Writes go to a temporary file in the target's folder, are flushed to disk, then renamed over the
target, so a crash mid-write never leaves a half-written file where a good one was. Reads of
tensors go through safetensors only (never pickle), and every failure becomes an
:class:`~tnpeft.errors.AdapterFileError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from tnpeft.errors import AdapterFileError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialize tensors with safetensors (contiguous CPU copies)."""
    from safetensors.torch import save

    return save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; a missing or malformed file raises :class:`AdapterFileError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AdapterFileError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AdapterFileError(f"{what} {str(path)!r} cannot be read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise AdapterFileError(f"{what} {str(path)!r} is not valid JSON ({e}); the file may be truncated") from None


def read_safetensors(path: str | os.PathLike, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load every tensor of a safetensors file (no pickle), checking its checksum when one is given."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AdapterFileError(f"weights file {str(path)!r} does not exist") from None
    except OSError as e:
        raise AdapterFileError(f"weights file {str(path)!r} cannot be read: {e}") from None
    if expected_sha256 is not None and sha256(data) != expected_sha256:
        raise AdapterFileError(
            f"weights file {str(path)!r} does not match the checksum recorded in its config: it was changed, "
            "truncated, or belongs to another save")
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as e:  # safetensors raises its own SafetensorError and others on corrupt headers
        raise AdapterFileError(f"weights file {str(path)!r} is not a valid safetensors file ({e}); "
                               "it may be truncated or corrupt") from None
