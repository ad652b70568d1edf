"""Crash-safe file writes and checked loads, shared by datasets, checkpoints and results.

Every writer goes to a temporary file in the destination folder, fsyncs it, then ``os.replace``-s it into place,
so an interrupted process leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once at import: os.umask can only be read by setting it, which is not thread-safe
FILE_MODE = 0o666 & ~_UMASK  # what open() would give a new file; mkstemp alone gives 0o600
DIR_MODE = 0o777 & ~_UMASK  # what mkdir() would give a new folder; mkdtemp alone gives 0o700


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; move it onto ``path`` only if the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r} is not supported; use 'w' or 'wb'")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, FILE_MODE)
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def safe_torch_load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, never arbitrary pickles."""
    return torch.load(path, map_location=map_location, weights_only=True)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def cache_root() -> Path:
    """Where derived data is cached: ``$META_LEARNING_CACHE`` or ``~/.cache/meta_learning``."""
    env = os.environ.get("META_LEARNING_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "meta_learning"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Resolve a data root: ``root`` if given, else ``$META_LEARNING_DATA``, else ``~/.cache/meta_learning/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("META_LEARNING_DATA")
    return Path(env).expanduser() if env else cache_root() / "data"
