"""Fixtures for dataset tests: fake files in the real on-disk formats, and isolated caches."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def isolated_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point ``META_LEARNING_CACHE`` at an empty temporary folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("META_LEARNING_CACHE", str(cache))
    monkeypatch.delenv("META_LEARNING_DATA", raising=False)
    return cache


FakeOmniglot = dict[str, np.ndarray]  # "set/Alphabet/characterNN/file.png" -> uint8 [H, W] source pixels


def write_omniglot_set(
    folder: Path,
    set_name: str,
    alphabets: dict[str, int],
    *,
    drawers: int = 3,
    size: int = 28,
    as_zip: bool = False,
    seed: int = 0,
) -> FakeOmniglot:
    """Write ``<folder>/<set_name>/<Alphabet>/characterNN/<id>_<drawer>.png`` (or the same inside a zip).

    Images are 1-bit like the real ones (ink = black = 0): random strokes, so every image is asymmetric and
    distinct. Returns the source pixels of every file as ``uint8`` (0 ink, 255 background).
    """
    rng = np.random.default_rng(seed)
    files: FakeOmniglot = {}
    char_id = 1
    for alphabet, n_chars in alphabets.items():
        for c in range(1, n_chars + 1):
            for d in range(1, drawers + 1):
                ink = rng.random((size, size)) < 0.2
                pixels = np.where(ink, 0, 255).astype(np.uint8)
                files[f"{set_name}/{alphabet}/character{c:02d}/{char_id:04d}_{d:02d}.png"] = pixels
            char_id += 1
    if as_zip:
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(folder / f"{set_name}.zip", "w") as zf:
            for rel, pixels in files.items():
                zf.writestr(rel, _png_bytes(pixels))
    else:
        for rel, pixels in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels > 127).save(path)
    return files


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels > 127).save(buf, format="PNG")  # a bool array is a 1-bit image, like the real ones
    return buf.getvalue()


@pytest.fixture
def fake_omniglot() -> Callable[..., FakeOmniglot]:
    return write_omniglot_set
