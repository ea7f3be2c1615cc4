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

Checkpoint folders (:func:`checkpoint_folder`): a save holds an advisory lock on the folder
(``fcntl.flock`` on :data:`LOCK_NAME` inside it), so saves to one folder run one after the other and
the last one wins whole; it removes the temporary files of saves that were killed, and refuses to
write into a folder that holds a checkpoint of another kind (a tnpeft adapter, a peft LoRA
checkpoint, a model, a graph) unless told to overwrite — then that checkpoint's files go first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from tnpeft.errors import AdapterFileError, WriteError

#: the largest JSON file (adapter config, graph, checkpoint state) tnpeft reads
MAX_JSON_BYTES = 64 << 20
#: the deepest nesting of arrays and objects a JSON file may have
MAX_JSON_DEPTH = 64
#: the largest weights file read when the caller gives no tighter bound
MAX_WEIGHTS_BYTES = 64 << 30

ErrorFactory = Callable[[str], Exception]
#: called with the name of each step of a checkpoint save (tests use it to interleave saves); None normally
save_step_hook: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if save_step_hook is not None:
        save_step_hook(name)


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
        _step("temporary files written")
        if w.exists():
            _replace(str(w), prev)
        _step("previous weights kept")
        _replace(tmp_w, w)
        _step("weights in place")
        _replace(tmp_c, c)
    except BaseException:
        for t in (tmp_w, tmp_c):
            if os.path.exists(t):
                os.unlink(t)
        raise
    prev.unlink(missing_ok=True)


# ------------------------------------------------------------------------------- checkpoint folders
#: the lock file a save holds in the folder it writes (empty but for the holder's process id)
LOCK_NAME = ".tnpeft-save.lock"
#: how long a save waits for another save to the same folder to finish, in seconds
LOCK_TIMEOUT = 600.0
#: the format field of a tnpeft adapter config (``tnpeft.storage.adapter_folder.FORMAT``)
TNPEFT_ADAPTER_FORMAT = "tnpeft.adapter"
TNPEFT_ADAPTER, PEFT_ADAPTER, MODEL, GRAPH = "tnpeft adapter", "peft adapter checkpoint", "model", "graph"
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.safetensors.prev")
_MODEL_WEIGHTS = re.compile(r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?")
_TEMP = re.compile(r"\.(adapter_config\.json|adapter_model\.safetensors|model\.safetensors|config\.json|"
                   r"graph\.json|graph\.safetensors)\.\w+\.tmp")


def checkpoint_kinds(directory: str | os.PathLike[str]) -> dict[str, list[str]]:
    """The checkpoints a folder holds, ``{kind: [file names]}``: :data:`TNPEFT_ADAPTER`, :data:`PEFT_ADAPTER`
    or another adapter format (by ``adapter_config.json``), :data:`MODEL` (weights, ``config.json``), :data:`GRAPH`."""
    d = Path(directory)
    try:
        names = sorted(p.name for p in d.iterdir() if p.is_file())
    except OSError:
        return {}
    out: dict[str, list[str]] = {}
    adapter = [n for n in names if n in _ADAPTER_FILES]
    if adapter:
        kind = "adapter weights without a config"
        if "adapter_config.json" in names:
            try:
                cfg = read_json(d / "adapter_config.json", "adapter config")
            except AdapterFileError:
                cfg = None
            kind = ("adapter checkpoint of another format" if not isinstance(cfg, dict) else TNPEFT_ADAPTER
                    if cfg.get("format") == TNPEFT_ADAPTER_FORMAT else PEFT_ADAPTER if "peft_type" in cfg
                    else "adapter checkpoint of another format")
        out[kind] = adapter
    weights = [n for n in names if _MODEL_WEIGHTS.fullmatch(n)]
    if weights:
        out[MODEL] = weights + (["config.json"] if "config.json" in names else [])
    graph = [n for n in names if n in ("graph.json", "graph.safetensors", "graph.safetensors.prev")]
    if graph:
        out[GRAPH] = graph
    return out


def _fits(found: str, kind: str) -> bool:
    return found == kind or (found == "adapter weights without a config" and kind in (TNPEFT_ADAPTER, PEFT_ADAPTER))


@contextmanager
def _locked(d: Path, timeout: float) -> Iterator[None]:
    """Hold the folder's lock file; removed (while still held) on release, so a waiter whose file
    was removed meanwhile opens the new one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no lock
        yield
        return
    path, deadline = d / LOCK_NAME, time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), file_mode())
        except OSError as e:
            raise WriteError(f"cannot write into folder {str(d)!r}: {e.strerror or e}", path=str(d)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if time.monotonic() > deadline:
                raise WriteError(f"folder {str(d)!r} is being written by another save (process {holder}) for more "
                                 f"than {timeout:g} s; try again when it has finished", path=str(d)) from None
            time.sleep(0.005)
            continue
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)                 # the holder before removed this file: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)                 # releases the lock


@contextmanager
def checkpoint_folder(directory: str | os.PathLike[str], kind: str, *, overwrite: bool = False,
                      timeout: float | None = None) -> Iterator[Path]:
    """Hold ``directory`` (created if needed) for writing a checkpoint of ``kind``; yields its path.

    Saves to one folder wait for each other (an advisory lock, at most ``timeout`` seconds, default
    :data:`LOCK_TIMEOUT`), so concurrent saves run one after the other and the last one wins whole.
    Temporary files of killed saves are removed. A folder holding a checkpoint of another kind is
    refused with a :class:`WriteError` naming it — unless ``overwrite``: then that checkpoint's
    files are removed before anything is written, so the folder never holds two kinds."""
    d = ensure_dir(directory)
    with _locked(d, LOCK_TIMEOUT if timeout is None else timeout):
        for p in d.iterdir():
            if _TEMP.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
        foreign = {k: files for k, files in checkpoint_kinds(d).items() if not _fits(k, kind)}
        if foreign and not overwrite:
            held = "; ".join(f"a {k} ({', '.join(files)})" for k, files in foreign.items())
            raise WriteError(f"folder {str(d)!r} holds {held}; writing a {kind} there would leave files of two kinds "
                             "— choose another folder, or pass overwrite=True (--overwrite) to replace them",
                             path=str(d))
        for files in foreign.values():
            for name in files:
                try:
                    (d / name).unlink(missing_ok=True)
                except OSError as e:
                    raise WriteError(f"cannot remove {str(d / name)!r} (overwrite): {e.strerror or e}",
                                     path=str(d / name)) from None
        _step("folder held")
        yield d


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
