"""Checked downloads and atomic archive extraction.

Both functions follow the rule of :mod:`meta_learning._io`: nothing appears at the destination until it is
complete and verified, so an interrupted download or extraction never leaves a half-written file or folder
that a later run would mistake for good data.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from meta_learning._io import DIR_MODE, FILE_MODE, sha256_file

if TYPE_CHECKING:
    from tqdm import tqdm

_CHUNK = 1 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def download_url(url: str, dest_path: str | os.PathLike[str], sha256: str, *, progress: bool = True) -> Path:
    """Download ``url`` to ``dest_path`` and check its sha256 before it appears there.

    The body is streamed to a temporary file in the destination folder, hashed, then moved into place with
    ``os.replace``. If ``dest_path`` already exists with the expected hash, nothing is downloaded.

    Args:
        url: any URL ``urllib`` opens (``https://``, ``file://``, ...).
        dest_path: where the verified file ends up; parent folders are created.
        sha256: expected lowercase hex digest (64 characters).
        progress: show a tqdm bar, only when stderr is a terminal.

    Returns:
        ``dest_path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``sha256`` is not a string.
        ValueError: ``sha256`` is not a 64-character hex digest.
        RuntimeError: the downloaded bytes do not match ``sha256`` (the partial file is deleted).
        OSError: the URL cannot be opened or the destination cannot be written.

    Example:
        >>> download_url("https://example.org/data.zip", "data/data.zip", sha256="9f86d0...")  # doctest: +SKIP
    """
    if not isinstance(sha256, str):
        raise TypeError(f"sha256 must be a hex digest string, got {type(sha256).__name__} ({sha256!r})")
    expected = sha256.lower()
    if not _SHA256_RE.match(expected):
        raise ValueError(f"sha256={sha256!r} is not a sha256 hex digest; expected 64 hexadecimal characters")
    dest = Path(dest_path).expanduser()
    if dest.is_file() and sha256_file(dest) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url) as response:
            total = response.headers.get("Content-Length") if hasattr(response, "headers") else None
            bar = _progress_bar(int(total) if total else None, dest.name) if progress else None
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            out.flush()
            os.fsync(out.fileno())
        actual = sha256_file(tmp)
        if actual != expected:
            raise RuntimeError(
                f"the file downloaded from {url} has sha256 {actual} but {expected} was expected; it was "
                "deleted. The server may have changed the file or the download was corrupted; retry, or "
                "check the URL"
            )
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return dest


def extract_archive(archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str]) -> Path:
    """Extract a zip archive into ``dest_dir``, which appears only once extraction has succeeded.

    Members are written to a temporary sibling folder, which is then renamed to ``dest_dir``; any failure
    removes the temporary folder. Every member name is checked before anything is written.

    Args:
        archive: path of a ``.zip`` file.
        dest_dir: folder to create; it must not exist yet. It receives the archive's members at their
            stored relative paths (a zip holding ``images_background/...`` gives
            ``dest_dir/images_background/...``).

    Returns:
        ``dest_dir`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: ``archive`` does not exist.
        FileExistsError: ``dest_dir`` already exists.
        ValueError: a member has an absolute path or a ``..`` component (path traversal).
        RuntimeError: ``archive`` is not a valid zip file.
    """
    src = Path(archive).expanduser()
    dest = Path(dest_dir).expanduser()
    if not src.is_file():
        raise FileNotFoundError(f"archive {str(src)!r} does not exist")
    if dest.exists():
        raise FileExistsError(f"dest_dir {str(dest)!r} already exists; remove it or extract elsewhere")
    try:
        zf = zipfile.ZipFile(src)
    except zipfile.BadZipFile as err:
        raise RuntimeError(f"{str(src)!r} is not a valid zip archive ({err}); delete it and download it again") from err
    with zf:
        for name in zf.namelist():
            _check_member_name(name, src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
        try:
            os.chmod(tmp, DIR_MODE)
            zf.extractall(tmp)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _check_member_name(name: str, archive: Path) -> None:
    """Refuse names that would escape the destination folder."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in posix.parts:
        raise ValueError(
            f"archive {str(archive)!r} has a member {name!r} with an absolute path or '..'; refusing to "
            "extract it (path traversal)"
        )


def _progress_bar(total: int | None, desc: str) -> tqdm[Any] | None:
    """A tqdm bar on stderr, or None when stderr is not a terminal (logs, CI, tests)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr)
