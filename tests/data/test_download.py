from __future__ import annotations

import hashlib
import io
import sys
import urllib.error
import zipfile
from pathlib import Path

import pytest

from meta_learning.data.download import download_url, extract_archive


def _served(tmp_path: Path, payload: bytes) -> tuple[str, str]:
    src = tmp_path / "server" / "blob.bin"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(payload)
    return src.as_uri(), hashlib.sha256(payload).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- download_url --------------------------------------------------------------------------------------------


def test_download_with_good_hash(tmp_path, capsys):
    payload = bytes(range(256)) * 5000  # > one 1 MiB chunk
    url, digest = _served(tmp_path, payload)
    dest = tmp_path / "out" / "sub" / "file.bin"
    assert download_url(url, dest, digest) == dest
    assert dest.read_bytes() == payload
    assert _leftovers(dest.parent) == ["file.bin"]  # no temporary file left behind
    assert capsys.readouterr().err == ""  # no progress bar when stderr is not a terminal


def test_download_with_bad_hash_raises_and_leaves_no_file(tmp_path):
    url, digest = _served(tmp_path, b"payload")
    wrong = "0" * 64
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(RuntimeError) as info:
        download_url(url, dest, wrong)
    msg = str(info.value)
    assert url in msg and wrong in msg and digest in msg
    assert _leftovers(dest.parent) == []


def test_existing_file_with_the_right_hash_is_not_downloaded_again(tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"already here")
    digest = hashlib.sha256(b"already here").hexdigest()
    missing = (tmp_path / "does-not-exist").as_uri()  # fetching it would raise
    assert download_url(missing, dest, digest.upper()) == dest
    assert dest.read_bytes() == b"already here"


def test_existing_file_with_a_wrong_hash_is_replaced(tmp_path):
    url, digest = _served(tmp_path, b"fresh bytes")
    dest = tmp_path / "out" / "file.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"stale bytes")
    download_url(url, dest, digest)
    assert dest.read_bytes() == b"fresh bytes"


def test_failed_download_keeps_the_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"old")
    with pytest.raises(urllib.error.URLError):
        download_url((tmp_path / "missing.bin").as_uri(), dest, "1" * 64)
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == ["file.bin"]


@pytest.mark.parametrize("bad", ["abc", "g" * 64, "0" * 63])
def test_invalid_sha256_is_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match="sha256=.*64 hexadecimal"):
        download_url("file:///x", tmp_path / "f", bad)
    with pytest.raises(TypeError, match="sha256 must be"):
        download_url("file:///x", tmp_path / "f", None)  # type: ignore[arg-type]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_shown_on_a_terminal(tmp_path, monkeypatch):
    url, digest = _served(tmp_path, b"x" * 3000)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    download_url(url, tmp_path / "shown.bin", digest)
    download_url(url, tmp_path / "hidden.bin", digest, progress=False)
    shown = terminal.getvalue()
    assert "shown.bin" in shown and "hidden.bin" not in shown


# -- extract_archive ------------------------------------------------------------------------------------------

MEMBERS = {"top/a.txt": b"alpha", "top/sub/b.bin": bytes(range(50)), "top/c.txt": b""}


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_archive_writes_every_member(tmp_path):
    archive = _zip(tmp_path / "a.zip", MEMBERS)
    dest = tmp_path / "out" / "extracted"
    assert extract_archive(archive, dest) == dest
    for name, data in MEMBERS.items():
        assert (dest / name).read_bytes() == data
    assert _leftovers(dest.parent) == ["extracted"]  # the temporary sibling was renamed, not copied


def test_extract_archive_refuses_an_existing_destination(tmp_path):
    archive = _zip(tmp_path / "a.zip", MEMBERS)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        extract_archive(archive, dest)
    assert _leftovers(dest) == ["keep.txt"]


@pytest.mark.parametrize("evil", ["../escape.txt", "top/../../escape.txt", "/abs/escape.txt", "C:/escape.txt"])
def test_extract_archive_refuses_path_traversal(tmp_path, evil):
    archive = _zip(tmp_path / "a.zip", {"top/ok.txt": b"ok", evil: b"gotcha"})
    dest = tmp_path / "out" / "x"
    with pytest.raises(ValueError, match="path traversal"):
        extract_archive(archive, dest)
    assert not dest.exists() and _leftovers(tmp_path / "out") == []
    assert not (tmp_path / "escape.txt").exists()


def test_extract_archive_is_atomic_when_extraction_fails(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "a.zip", MEMBERS)
    dest = tmp_path / "out" / "x"

    def half_then_fail(self, path=None, members=None, pwd=None):
        Path(path, "partial.txt").write_text("half written")
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        extract_archive(archive, dest)
    assert not dest.exists()
    assert _leftovers(tmp_path / "out") == []  # the temporary folder was removed


def test_extract_archive_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.zip"):
        extract_archive(tmp_path / "nope.zip", tmp_path / "out")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match=r"bad\.zip.*not a valid zip"):
        extract_archive(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
