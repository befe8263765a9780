"""Where rmtlib keeps files, and how it writes them (atomically, checksummed, code-free).

Cached results (trained models, KS null tables) are safetensors files: tensors plus a
JSON string of plain metadata, and a SHA-256 of both. Reading one never unpickles
anything, so a file planted in a shared cache folder cannot run code; a damaged
file fails its checksum and is rebuilt by the caller.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from pathlib import Path

FORMAT = "rmtlib-safetensors-1"
STALE_TMP_AGE = 3600.0  # seconds: a temporary file older than this belongs to a dead writer
LOCK_NOTICE_AFTER = 2.0  # seconds waited on a lock before saying why

_log = logging.getLogger("rmtlib")


def project_root() -> Path | None:
    """The repository root when rmtlib runs from a checkout (editable install), else None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _default_dir(kind: str) -> Path:
    root = project_root()
    if root is not None:
        return root / ("data" if kind == "data" else ".cache")
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rmtlib"
    return base / kind


def data_dir() -> Path:
    """Folder for data sets: $RMTLIB_DATA, else `<repo>/data`, else ~/.cache/rmtlib/data."""
    env = os.environ.get("RMTLIB_DATA")
    return Path(env) if env else _default_dir("data")


def cache_dir(sub: str = "") -> Path:
    """Folder for cached results (models, KS nulls): $RMTLIB_CACHE, else `<repo>/.cache`."""
    env = os.environ.get("RMTLIB_CACHE")
    path = Path(env) if env else _default_dir("cache")
    return path / sub if sub else path


# --------------------------------------------------------------------------- writing
def clean_stale_tmp(folder: Path, max_age: float = STALE_TMP_AGE) -> int:
    """Delete temporary files (`.*.tmp`) that writers killed mid-write left in `folder`.

    Only files older than `max_age` seconds are removed: a younger one may belong to a
    writer that is still running. Returns how many were removed.
    """
    removed, now = 0, time.time()
    try:
        candidates = list(Path(folder).glob(".*.tmp"))
    except OSError:
        return 0
    for tmp in candidates:
        try:
            if now - tmp.stat().st_mtime > max_age:
                tmp.unlink()
                removed += 1
        except OSError:  # gone already, or not ours to delete
            pass
    return removed


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to a temporary file beside `path` and rename it into place.

    A reader never sees a half-written file: either the old one or the new one. The
    file gets the permissions of any new file (0666 minus the umask: readable by the
    lab, unlike `tempfile.mkstemp`'s 0600). A failed write removes its temporary file;
    temporary files of writers that were killed are removed by later writes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path.parent)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            # os.open applies the umask itself, so 0o666 becomes e.g. 0o644
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# --------------------------------------------------------------------------- checked files
def _digest(meta_json: str, layout: dict, body: bytes) -> str:
    h = hashlib.sha256()
    h.update(meta_json.encode())
    h.update(json.dumps(layout, sort_keys=True).encode())
    h.update(body)
    return h.hexdigest()


def _split(raw: bytes, path) -> tuple[dict, bytes]:
    """(safetensors header, data bytes) of a file's contents; ValueError if malformed."""
    if len(raw) < 8:
        raise ValueError(f"{path} is not an rmtlib cache file (too short)")
    n = int.from_bytes(raw[:8], "little")
    if n <= 0 or n > len(raw) - 8:
        raise ValueError(f"{path} is not an rmtlib cache file (bad header)")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not an rmtlib cache file (bad header)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not an rmtlib cache file (bad header)")
    return header, raw[8 + n :]


def _serialise(tensors: dict, extra_meta: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=extra_meta)


def save_checked(path: Path, tensors: dict, meta: dict) -> None:
    """Write `tensors` (name -> torch.Tensor) and plain JSON `meta` as a checksummed file.

    The file is a standard safetensors file (readable by `safetensors.torch.load_file`)
    whose metadata holds `meta` as JSON and a SHA-256 over the metadata, the tensor
    layout and the tensor bytes. Written atomically (see `atomic_write_bytes`).
    """
    tensors = {str(k): v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta_json = json.dumps(meta, sort_keys=True, allow_nan=True)
    first = _serialise(tensors, {"format": FORMAT, "rmtlib": meta_json})
    header, body = _split(first, path)
    layout = {k: v for k, v in header.items() if k != "__metadata__"}
    digest = _digest(meta_json, layout, body)
    final = _serialise(tensors, {"format": FORMAT, "rmtlib": meta_json, "sha256": digest})
    atomic_write_bytes(path, final)


def load_checked(path: Path) -> tuple[dict, dict]:
    """(tensors, meta) of a file written by `save_checked`; ValueError if damaged.

    Nothing is unpickled: the tensors are raw bytes described by a JSON header, the
    metadata is JSON. A file that fails the checksum is refused before it is parsed
    into tensors.
    """
    from safetensors.torch import load

    raw = Path(path).read_bytes()
    header, body = _split(raw, path)
    info = header.get("__metadata__") or {}
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{path} is not an rmtlib cache file (format {info.get('format')!r}"
                         f" instead of {FORMAT!r})" if isinstance(info, dict) else
                         f"{path} is not an rmtlib cache file")
    meta_json, digest = info.get("rmtlib"), info.get("sha256")
    if not isinstance(meta_json, str) or not isinstance(digest, str):
        raise ValueError(f"{path} is not an rmtlib cache file (no checksum)")
    layout = {k: v for k, v in header.items() if k != "__metadata__"}
    if _digest(meta_json, layout, body) != digest:
        raise ValueError(f"{path} is damaged (checksum mismatch)")
    try:
        tensors = load(raw)
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is damaged ({err})") from None
    meta = json.loads(meta_json)
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is damaged (metadata is not a mapping)")
    return tensors, meta


# --------------------------------------------------------------------------- locks
@contextlib.contextmanager
def file_lock(path: Path, *, what: str = "this result"):
    """Hold an inter-process lock for the result file `path` (a file `.<name>.lock` beside it).

    A second process asking for the same lock waits until the first releases it (an
    OS-level lock: it is released when its holder dies, so a killed process never leaves
    a stale lock). Where no lock file can be created (read-only folder), the body runs
    without a lock.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    lock_path = path.parent / f".{path.name}.lock"
    lock = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=LOCK_NOTICE_AFTER)
        except Timeout:
            _log.warning("waiting for another process that is computing %s (lock %s)", what, lock_path)
            lock.acquire()
    except OSError:  # read-only or full folder: no lock to be had, run unlocked
        lock = None
    try:
        yield lock is not None
    finally:
        if lock is not None:
            lock.release()


def load_values(path: Path, key, field: str, length: int):
    """A float array stored by `save_values` under `key`, or None when the file is missing,
    damaged, written for another key, of another length or not finite (then rebuild it)."""
    import json

    import numpy as np

    path = Path(path)
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        values = np.asarray(stored[field], dtype=float)
    except (ValueError, KeyError, TypeError):
        return None
    if stored.get("key") != list(key) or values.shape != (length,) or not np.all(np.isfinite(values)):
        return None
    return values


def save_values(path: Path, key, field: str, values) -> None:
    """Write a float array and its key as plain JSON, atomically (no file can run code)."""
    import json

    atomic_write_bytes(path, json.dumps({"key": list(key), field: [float(v) for v in values]}).encode())
