"""Where rmtlib keeps files, and how it writes them (atomically, checksummed)."""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

_MAGIC = b"RMTLIB1\n"


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


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to a temporary file beside `path` and rename it into place.

    A reader never sees a half-written file: either the old one or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checked(path: Path, obj) -> None:
    """torch.save `obj` with a SHA-256 header so that damage is detected on load."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    body = buf.getvalue()
    atomic_write_bytes(path, _MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


def load_checked(path: Path):
    """Load a file written by `save_checked`; raise ValueError if it is damaged."""
    import torch

    raw = Path(path).read_bytes()
    head = len(_MAGIC) + 65
    if len(raw) < head or not raw.startswith(_MAGIC):
        raise ValueError(f"{path} is not an rmtlib cache file (bad header)")
    digest, body = raw[len(_MAGIC) : head - 1].decode(errors="replace"), raw[head:]
    if hashlib.sha256(body).hexdigest() != digest:
        raise ValueError(f"{path} is damaged (checksum mismatch)")
    return torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)
