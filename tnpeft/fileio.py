"""Safe, atomic, bounded file helpers shared by every floor that writes or reads files.

Writes go to a temporary file in the target's folder, are flushed to disk, then renamed over the
target, so a crash mid-write never leaves a half-written file where a good one was. Written files
get the permissions the umask allows (``0o666 & ~umask``, like ``open()``), not the ``0600`` of a
bare temporary file. A path that cannot be written (a file where a folder must be, a folder where
a file must be, no permission, a full disk) raises :class:`~tnpeft.errors.WriteError` naming it.

Reads are bounded: only regular files are opened (never a device such as ``/dev/zero``, a FIFO or
a socket, and without blocking on one), their size is checked against a cap before a byte is read,
and JSON nesting is limited (:data:`MAX_JSON_DEPTH`). Tensors are read through safetensors only
(never pickle). Every failure becomes an :class:`~tnpeft.errors.AdapterFileError` (or the error
the caller names) naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from tnpeft.errors import AdapterFileError, WriteError

#: the largest JSON file (adapter config, graph, checkpoint state) tnpeft reads
MAX_JSON_BYTES = 64 << 20
#: the deepest nesting of arrays and objects a JSON file may have
MAX_JSON_DEPTH = 64
#: the largest weights file read when the caller gives no tighter bound
MAX_WEIGHTS_BYTES = 64 << 30

ErrorFactory = Callable[[str], Exception]


# ------------------------------------------------------------------------------------------ writing
def current_umask() -> int:
    """The process's umask (read from ``/proc`` where available, so no other thread sees it change)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The permissions of files tnpeft writes: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def ensure_dir(directory: str | os.PathLike[str], what: str = "folder") -> Path:
    """Create ``directory`` (and its parents) if needed; :class:`WriteError` if a file is in the way."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise WriteError(f"{what} {str(d)!r} is a file, not a folder; choose another path", path=str(d))
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"cannot create {what} {str(d)!r}: {e.strerror or e} (is a parent a file?)",
                         path=str(d)) from None
    return d


def _write_temp(directory: Path, name: str, data: bytes) -> str:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise WriteError(f"cannot write into folder {str(directory)!r}: {e.strerror or e}", path=str(directory)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), file_mode())   # mkstemp creates 0600: give the umask's permissions
            os.fsync(f.fileno())
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError):
            raise WriteError(f"cannot write {str(directory / name)!r}: {e.strerror or e}",
                             path=str(directory / name)) from None
        raise
    return tmp


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise WriteError(f"{str(path)!r} is a folder; cannot write a file there", path=str(path))


def _replace(src: str, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as e:
        raise WriteError(f"cannot write {str(dst)!r}: {e.strerror or e}", path=str(dst)) from None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename), with the umask's permissions."""
    path = Path(path)
    ensure_dir(path.parent)
    _check_target(path)
    tmp = _write_temp(path.parent, path.name, data)
    try:
        _replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_pair(directory: str | os.PathLike[str], weights_name: str, weights: bytes, config_name: str,
                      config: Any) -> None:
    """Replace a weights file and the config that records its checksum so that a crash at any point
    leaves a loadable pair: both files are written to temporary names first; the old weights are
    kept as ``<weights>.prev`` until the new config is in place (:func:`read_safetensors` falls back
    to it when the config still describes the previous weights)."""
    d = ensure_dir(directory, "adapter folder")
    w, prev, c = d / weights_name, d / (weights_name + ".prev"), d / config_name
    for p in (w, prev, c):
        _check_target(p)
    tmp_w = _write_temp(d, weights_name, weights)
    try:
        tmp_c = _write_temp(d, config_name, (json.dumps(config, indent=2) + "\n").encode())
    except BaseException:
        os.unlink(tmp_w)
        raise
    try:
        if w.exists():
            _replace(str(w), prev)
        _replace(tmp_w, w)
        _replace(tmp_c, c)
    except BaseException:
        for t in (tmp_w, tmp_c):
            if os.path.exists(t):
                os.unlink(t)
        raise
    try:
        prev.unlink()
    except FileNotFoundError:
        pass


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialize tensors with safetensors (contiguous CPU copies)."""
    from safetensors.torch import save

    return save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------ reading
def read_regular_bytes(path: str | os.PathLike[str], what: str, max_bytes: int,
                       error: ErrorFactory = AdapterFileError) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``max_bytes`` bytes.

    Devices (``/dev/zero``), FIFOs and sockets — also behind a symbolic link — are refused without
    blocking and without reading; the size is checked before reading, and a file that grows while
    it is read is refused too. ``error`` builds the exception (default :class:`AdapterFileError`).
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist") from None
    except OSError as e:
        raise error(f"{what} {str(path)!r} cannot be read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a plain file")
            raise error(f"{what} {str(path)!r} is {kind}; expected a regular file")
        if st.st_size > max_bytes:
            raise error(f"{what} {str(path)!r} has {st.st_size:,} bytes; the limit is {max_bytes:,}")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 24, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise error(f"{what} {str(path)!r} grew past the limit of {max_bytes:,} bytes while it was read")
        return b"".join(chunks)
    except OSError as e:
        raise error(f"{what} {str(path)!r} cannot be read: {e.strerror or e}") from None
    finally:
        os.close(fd)


def json_depth(obj: Any) -> int:
    """The nesting depth of arrays and objects in a parsed JSON value (a scalar has depth 0)."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, dict):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in x.values())
        elif isinstance(x, list):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in x)
    return depth


def parse_json(text: str | bytes, where: str, max_depth: int = MAX_JSON_DEPTH,
               error: ErrorFactory = AdapterFileError) -> Any:
    """Parse JSON text; malformed text, or arrays and objects nested deeper than ``max_depth``, raise
    ``error`` (default :class:`AdapterFileError`) naming ``where``."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{where} is not valid JSON ({e}); the file may be truncated") from None
    except RecursionError:
        raise error(f"{where} nests arrays or objects deeper than {max_depth} levels") from None
    except (ValueError, TypeError, UnicodeDecodeError) as e:   # e.g. an integer of more than 4300 digits
        raise error(f"{where} is not valid JSON ({e})") from None
    if json_depth(obj) > max_depth:
        raise error(f"{where} nests arrays or objects deeper than {max_depth} levels")
    return obj


def read_json(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_JSON_BYTES,
              error: ErrorFactory = AdapterFileError) -> Any:
    """Parse a JSON file (a regular file of at most ``max_bytes``, nested at most
    :data:`MAX_JSON_DEPTH` deep); anything else raises ``error`` (default :class:`AdapterFileError`)."""
    data = read_regular_bytes(path, what, max_bytes, error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {str(path)!r} cannot be read: it is not UTF-8 text ({e})") from None
    return parse_json(text, f"{what} {str(path)!r}", error=error)


def read_safetensors(path: str | os.PathLike[str], expected_sha256: str | None = None,
                     max_bytes: int = MAX_WEIGHTS_BYTES) -> dict[str, torch.Tensor]:
    """Load every tensor of a safetensors file (no pickle; a regular file of at most ``max_bytes``),
    checking its checksum when one is given. When the checksum does not match and
    ``<file>.prev`` does (a save was interrupted, or is under way), the previous weights are read."""
    path = Path(path)
    what = "weights file"
    data = None
    try:
        data = read_regular_bytes(path, what, max_bytes)
    except AdapterFileError:
        if path.exists() or path.is_symlink():
            raise
    if expected_sha256 is not None and (data is None or sha256(data) != expected_sha256):
        prev = path.with_name(path.name + ".prev")  # the config still describes the previous weights
        try:
            old = read_regular_bytes(prev, what, max_bytes)
        except AdapterFileError:
            old = None          # no previous weights (or a concurrent save removed them just now)
        if old is not None and sha256(old) == expected_sha256:
            data = old
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
