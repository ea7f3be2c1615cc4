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


def _write_temp(directory: Path, name: str, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_pair(directory: str | os.PathLike, weights_name: str, weights: bytes, config_name: str,
                      config: Any) -> None:
    """Replace a weights file and the config that records its checksum so that a crash at any point
    leaves a loadable pair: both files are written to temporary names first; the old weights are
    kept as ``<weights>.prev`` until the new config is in place (:func:`read_safetensors` falls back
    to it when the config still describes the previous weights)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp_w = _write_temp(d, weights_name, weights)
    try:
        tmp_c = _write_temp(d, config_name, (json.dumps(config, indent=2) + "\n").encode())
    except BaseException:
        os.unlink(tmp_w)
        raise
    w, prev = d / weights_name, d / (weights_name + ".prev")
    try:
        if w.exists():
            os.replace(w, prev)
        os.replace(tmp_w, w)
        os.replace(tmp_c, d / config_name)
    except BaseException:
        for t in (tmp_w, tmp_c):
            if os.path.exists(t):
                os.unlink(t)
        raise
    if prev.exists():
        prev.unlink()


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
    data = None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise AdapterFileError(f"weights file {str(path)!r} cannot be read: {e}") from None
    if expected_sha256 is not None and (data is None or sha256(data) != expected_sha256):
        prev = path.with_name(path.name + ".prev")  # a save was interrupted: the config still describes these
        if prev.exists() and sha256(prev.read_bytes()) == expected_sha256:
            data = prev.read_bytes()
    if data is None:
        raise AdapterFileError(f"weights file {str(path)!r} does not exist")
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
