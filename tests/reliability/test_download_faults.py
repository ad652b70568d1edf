"""Faulty downloads and interrupted extractions never leave data that a later load would accept.

The server is a local ``file://`` URL (or a monkeypatched ``urlopen`` that drops the connection), the archive a
small Omniglot zip in the real layout; ``Omniglot.RESOURCES`` is pointed at it. No network is used.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from meta_learning.data import download as download_module
from meta_learning.data import omniglot as omniglot_module
from meta_learning.data.download import download_url, extract_archive
from meta_learning.data.omniglot import Omniglot

CHARACTERS = [("Alpha", 1), ("Alpha", 2), ("Beta", 1)]
DRAWINGS = 3


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 2, (20, 20)).astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG")
    return buf.getvalue()


def _omniglot_zip(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        for c, (alphabet, number) in enumerate(CHARACTERS):
            for d in range(DRAWINGS):
                name = f"images_background/{alphabet}/character{number:02d}/{c:02d}{d:02d}_{d + 1:02d}.png"
                zf.writestr(name, _png(10 * c + d))
    return path.read_bytes()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """An official-looking archive on a file:// server; returns a function that replaces the served bytes."""
    good = _omniglot_zip(tmp_path / "good.zip")
    served_path = tmp_path / "server" / "images_background.zip"
    served_path.parent.mkdir()
    digest = hashlib.sha256(good).hexdigest()
    monkeypatch.setattr(omniglot_module, "RESOURCES", {"images_background": (served_path.as_uri(), digest)})

    def serve(data: bytes) -> None:
        served_path.write_bytes(data)

    serve(good)
    return good, serve


def _load(root: Path, tmp_path: Path, download: bool) -> Omniglot:
    return Omniglot(root, split="background", download=download, image_size=8, cache_dir=tmp_path / "cache")


def _everything_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def test_a_good_archive_downloads_and_loads(served, tmp_path):
    ds = _load(tmp_path / "data", tmp_path, download=True)
    assert ds.num_classes == len(CHARACTERS) and len(ds) == len(CHARACTERS) * DRAWINGS
    assert _everything_under(tmp_path / "data") == ["omniglot", "omniglot/images_background.zip"]


@pytest.mark.parametrize("fault", ["truncated", "one-byte-flipped", "empty", "other-file"])
def test_a_bad_archive_is_refused_by_its_sha256_and_leaves_nothing(served, tmp_path, fault):
    good, serve = served
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    serve({"truncated": good[: len(good) // 2], "one-byte-flipped": bytes(flipped), "empty": b""}.get(fault, b"x" * 99))
    root = tmp_path / "data"
    with pytest.raises(RuntimeError, match=r"sha256 .* but .* was expected; it was deleted"):
        _load(root, tmp_path, download=True)
    assert _everything_under(root) == ["omniglot"]  # the folder was made, but no archive and no partial file
    with pytest.raises(FileNotFoundError, match="download=True"):  # a later load finds nothing to accept
        _load(root, tmp_path, download=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


class _DroppedConnection:
    """A response that delivers one chunk and then loses the connection."""

    def __init__(self, data: bytes) -> None:
        self.data, self.calls, self.headers = data, 0, {}

    def read(self, n: int) -> bytes:
        self.calls += 1
        if self.calls > 1:
            raise ConnectionResetError("connection reset by peer")
        return self.data[: len(self.data) // 3]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_dropped_connection_leaves_no_file(served, tmp_path, monkeypatch):
    good, _ = served
    monkeypatch.setattr(download_module.urllib.request, "urlopen", lambda url: _DroppedConnection(good))
    root = tmp_path / "data"
    with pytest.raises(ConnectionResetError):
        _load(root, tmp_path, download=True)
    assert _everything_under(root) == ["omniglot"]
    with pytest.raises(FileNotFoundError):
        _load(root, tmp_path, download=False)


def test_an_existing_good_archive_is_not_fetched_again_and_a_bad_download_keeps_it(served, tmp_path):
    good, serve = served
    dest = tmp_path / "data" / "omniglot" / "images_background.zip"
    url, digest = omniglot_module.RESOURCES["images_background"]
    download_url(url, dest, digest)
    serve(good[:100])  # the server now has a broken copy: the verified local one must survive a re-download
    with pytest.raises(RuntimeError, match="sha256"):
        download_url(url, tmp_path / "elsewhere.zip", digest)
    assert download_url(url, dest, digest) == dest and dest.read_bytes() == good


# -- interrupted extraction ---------------------------------------------------------------------------------------


def _fail_after(monkeypatch, n_members: int, exc: BaseException) -> list[str]:
    """Make ZipFile extraction write ``n_members`` members for real, then raise ``exc``."""
    real, written = zipfile.ZipFile._extract_member, []

    def extract_member(self, member, targetpath, pwd):
        if len(written) == n_members:
            raise exc
        written.append(member if isinstance(member, str) else member.filename)
        return real(self, member, targetpath, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "_extract_member", extract_member)
    return written


class Killed(BaseException):
    pass


def test_an_extraction_failing_midway_leaves_no_dataset(served, tmp_path, monkeypatch):
    good, _ = served
    archive = tmp_path / "images_background.zip"
    archive.write_bytes(good)
    root = tmp_path / "data"
    written = _fail_after(monkeypatch, 4, OSError("No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        extract_archive(archive, root / "omniglot")
    assert len(written) == 4  # members really were written before the failure...
    assert _everything_under(root) == []  # ...into a temporary folder that is gone, and nothing else appeared
    with pytest.raises(FileNotFoundError):
        _load(root, tmp_path, download=False)


def test_a_killed_extraction_leaves_only_a_hidden_folder_that_no_load_accepts(served, tmp_path, monkeypatch):
    good, _ = served
    archive = tmp_path / "images_background.zip"
    archive.write_bytes(good)
    root = tmp_path / "data"
    _fail_after(monkeypatch, 4, Killed())
    monkeypatch.setattr(download_module.shutil, "rmtree", lambda *a, **k: None)  # a killed process cleans nothing
    with pytest.raises(Killed):
        extract_archive(archive, root / "omniglot")
    leftovers = [p for p in root.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".omniglot.")
    assert leftovers[0].name.endswith(".extracting") and any(leftovers[0].rglob("*.png"))  # the partial data
    with pytest.raises(FileNotFoundError):  # ...is not mistaken for a dataset
        _load(root, tmp_path, download=False)
    monkeypatch.undo()
    extract_archive(archive, root / "omniglot")  # a retry succeeds next to the leftover
    assert _load(root, tmp_path, download=False).num_classes == len(CHARACTERS)


def test_an_interrupted_cache_write_leaves_no_cache_and_a_damaged_cache_is_rebuilt(served, tmp_path, monkeypatch):
    good, _ = served
    (tmp_path / "data" / "omniglot").mkdir(parents=True)
    (tmp_path / "data" / "omniglot" / "images_background.zip").write_bytes(good)
    real_save = omniglot_module.atomic_torch_save.__globals__["torch"].save

    def crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a cache")
        raise Killed

    monkeypatch.setattr(omniglot_module.atomic_torch_save.__globals__["torch"], "save", crash)
    with pytest.raises(Killed):
        _load(tmp_path / "data", tmp_path, download=False)
    assert _everything_under(tmp_path / "cache") == []  # the cache folder holds no partial file
    monkeypatch.setattr(omniglot_module.atomic_torch_save.__globals__["torch"], "save", real_save)
    reference = _load(tmp_path / "data", tmp_path, download=False)
    (cache,) = (tmp_path / "cache").iterdir()
    cache.write_bytes(cache.read_bytes()[:200])  # damaged after the fact: a warning and a rebuild, same data
    with pytest.warns(UserWarning, match="unreadable Omniglot cache"):
        rebuilt = _load(tmp_path / "data", tmp_path, download=False)
    assert rebuilt.gather(torch.arange(len(rebuilt))).equal(reference.gather(torch.arange(len(reference))))


def test_a_corrupt_fsdd_archive_is_refused_by_its_sha256(tmp_path):
    from meta_learning.data.fsdd import FreeSpokenDigits

    (tmp_path / "fsdd").mkdir()
    with zipfile.ZipFile(tmp_path / "fsdd" / "recordings.zip", "w") as zf:
        zf.writestr("recordings/0_george_0.wav", b"RIFF....WAVE")
    with pytest.raises(ValueError, match=r"recordings\.zip has sha256 .* corrupt"):
        FreeSpokenDigits(tmp_path, split="test")


def test_downloads_and_extractions_get_the_permissions_of_plain_files_and_folders(served, tmp_path):
    plain_file, plain_dir = tmp_path / "plain.bin", tmp_path / "plain-dir"
    plain_file.write_bytes(b"x")
    plain_dir.mkdir()
    url, digest = omniglot_module.RESOURCES["images_background"]
    archive = download_url(url, tmp_path / "got" / "a.zip", digest)
    extracted = extract_archive(archive, tmp_path / "extracted")
    assert archive.stat().st_mode & 0o777 == plain_file.stat().st_mode & 0o777
    assert extracted.stat().st_mode & 0o777 == plain_dir.stat().st_mode & 0o777
