"""Omniglot (Lake et al., 2015): 1,623 handwritten characters from 50 alphabets, 20 drawings each.

Splits:

- ``"background"`` / ``"evaluation"``: the official sets (964 and 659 characters). Default rotations ``(0,)``.
- ``"train"`` / ``"val"`` / ``"test"`` / ``"trainval"``: the split of Vinyals et al. (2016) used by Prototypical
  Networks and MAML (1,028 / 172 / 423 / 1,200 characters, listed in ``data/splits/omniglot_vinyals_*.txt``).
  Default rotations ``(0, 90, 180, 270)``; each rotation of a character is its own class, so ``"train"`` has
  4,112 classes.

With ``check_complete=True`` (what the experiment runner and the CLI use) the official sets must hold their
official counts (964 / 659 characters, 20 drawings each), so that a partially extracted folder or a cut-down
archive is an error rather than a smaller dataset; the default ``False`` reads any set in the official layout
(subsets, test fixtures). ``meta-learning datasets`` reports the counts found.

Images are read from the official archives ``images_background.zip`` / ``images_evaluation.zip`` as they are,
or from their extracted folders, converted to grey, resized with LANCZOS and inverted so that ink is 1.0 and
background 0.0. Each set is preprocessed once and cached as a ``uint8`` tensor, keyed by a sha256 of the source
and by the preprocessing options; every split is then a view of those cached sets.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from meta_learning._checks import check_choice, check_positive_int
from meta_learning._io import atomic_torch_save, cache_root, data_root, safe_torch_load, sha256_file
from meta_learning.data.base import TensorLabelledDataset
from meta_learning.data.download import download_url
from meta_learning.data.image_folder import load_image, progress

SETS = ("images_background", "images_evaluation")
OFFICIAL_SPLITS = {"background": "images_background", "evaluation": "images_evaluation"}
VINYALS_SPLITS = ("train", "val", "test", "trainval")
SPLITS = (*OFFICIAL_SPLITS, *VINYALS_SPLITS)
OFFICIAL_CHARACTERS = {"images_background": 964, "images_evaluation": 659}
DRAWINGS_PER_CHARACTER = 20

# Official archives and their sha256, as listed by TensorFlow Datasets in
# tensorflow_datasets/url_checksums/omniglot.txt (sizes 9,464,212 and 6,462,886 bytes). Its entry for
# images_background_small1.zip matches the byte-identical copy of that file in our shared data, which ties
# the list to the files in brendenlake/omniglot.
RESOURCES = {
    "images_background": (
        "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_background.zip",
        "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
    ),
    "images_evaluation": (
        "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_evaluation.zip",
        "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee",
    ),
}

_SPLIT_DIR = Path(__file__).parent / "splits"
_CACHE_VERSION = 1
_RESAMPLE = "lanczos"
_ROTATIONS = (0, 90, 180, 270)
_HINT = "use download=True or set META_LEARNING_DATA to the folder that holds omniglot/"


@dataclass(frozen=True)
class _Source:
    """Where one set's images live: a zip archive or an extracted folder."""

    set_name: str
    kind: str  # "zip" | "folder"
    path: Path


def read_vinyals_split(split: str) -> list[str]:
    """The characters (``"Alphabet/characterNN"``) of a Vinyals split, in the order of the split list."""
    check_choice("split", split, VINYALS_SPLITS)
    text = (_SPLIT_DIR / f"omniglot_vinyals_{split}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


class Omniglot(TensorLabelledDataset):
    """Omniglot characters as a labelled dataset for episode sampling.

    Args:
        root: data root; the data is looked for in ``root/omniglot/``, then in ``root`` itself. ``None`` uses
            ``$META_LEARNING_DATA`` (or ``~/.cache/meta_learning/data``). It may be read-only.
        split: ``"background"``, ``"evaluation"``, ``"train"``, ``"val"``, ``"test"`` or ``"trainval"``.
        download: fetch the official archives (checked against their sha256) into ``root/omniglot/`` when a
            needed set is not found. Archives already present are used as they are.
        image_size: side ``S`` of the resized images.
        rotations: rotations in degrees (counter-clockwise, from ``0, 90, 180, 270``); each is a separate class.
            Default ``(0,)`` for the official sets, ``(0, 90, 180, 270)`` for the Vinyals splits.
        cache_dir: where preprocessed sets are cached; default ``$META_LEARNING_CACHE/omniglot``.
        check_complete: require every set read to hold the official counts (:data:`OFFICIAL_CHARACTERS`
            characters with :data:`DRAWINGS_PER_CHARACTER` drawings each), else ``ValueError`` naming the path and
            the counts found; an archive whose sha256 is the published one in :data:`RESOURCES` is complete by
            construction and is not counted. ``False`` (default): any characters and drawings in the official
            layout.

    Attributes:
        labels: ``[N]`` int64, label ``c * len(rotations) + r`` for character ``c`` under rotation ``r``.
        class_names: ``"Alphabet/characterNN"`` for rotation 0, ``"Alphabet/characterNN@90"`` otherwise.
        characters: the split's characters, in class order.

    Example:
        >>> train = Omniglot(split="train")                      # doctest: +SKIP
        >>> train.num_classes, len(train)                        # doctest: +SKIP
        (4112, 82240)
        >>> EpisodeSampler(train, n_way=5, k_shot=1, n_query=15, seed=0).sample()  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        download: bool = False,
        image_size: int = 28,
        rotations: Sequence[int] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        check_complete: bool = False,
    ) -> None:
        if not isinstance(check_complete, bool):
            raise TypeError(f"check_complete must be a bool, got {type(check_complete).__name__} ({check_complete!r})")
        self.split = check_choice("split", split, SPLITS)
        self.image_size = check_positive_int("image_size", image_size)
        self.rotations = _check_rotations(rotations, default=(0,) if split in OFFICIAL_SPLITS else _ROTATIONS)
        self.root = data_root(root)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "omniglot"
        set_names = (OFFICIAL_SPLITS[split],) if split in OFFICIAL_SPLITS else SETS
        sources = {name: self._locate(name, download) for name in set_names}
        loaded = {
            name: _load_set(src, image_size, self.cache_dir, check_complete) for name, src in sources.items() if src
        }

        if split in OFFICIAL_SPLITS:
            only = loaded[OFFICIAL_SPLITS[split]]
            wanted = list(only["characters"])
        else:
            wanted = read_vinyals_split(split)
        # Rows of each wanted character, across the loaded sets.
        where: dict[str, tuple[str, int, int]] = {}
        for name, data in loaded.items():
            offsets = data["offsets"].tolist()
            for i, char in enumerate(data["characters"]):
                where[char] = (name, offsets[i], offsets[i + 1])
        missing = [c for c in wanted if c not in where]
        if missing:
            absent = [n for n in set_names if sources[n] is None]
            searched = ", ".join(repr(str(p)) for p in _candidate_dirs(self.root))
            raise FileNotFoundError(
                f"Omniglot split {split!r} needs {len(missing)} characters that are not in the data found "
                f"(first: {missing[0]!r}); sets not found: {absent or 'none'} (searched {searched}); {_HINT}"
            )
        self.characters = wanted
        self.sources = {name: src for name, src in sources.items() if src is not None}

        # Gather the base (unrotated) images of the wanted characters into one tensor.
        chunks: list[Tensor] = []
        char_rows: list[tuple[int, int]] = []  # (start in self._images, count)
        start = 0
        for char in wanted:
            name, lo, hi = where[char]
            chunks.append(loaded[name]["images"][lo:hi])
            char_rows.append((start, hi - lo))
            start += hi - lo
        self._images = torch.cat(chunks)  # (M, S, S) uint8, ink 255

        n_rot = len(self.rotations)
        base_index: list[np.ndarray] = []
        rot_k: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for c, (first, count) in enumerate(char_rows):
            for r, degrees in enumerate(self.rotations):
                base_index.append(np.arange(first, first + count))
                rot_k.append(np.full(count, degrees // 90))
                labels.append(np.full(count, c * n_rot + r))
        self._base_index = torch.from_numpy(np.concatenate(base_index).astype(np.int64))
        self._rot_k = torch.from_numpy(np.concatenate(rot_k).astype(np.int64))
        self._rotated = any(k != 0 for k in self.rotations)
        self.labels = np.concatenate(labels).astype(np.int64)
        self.class_names = [f"{c}@{d}" if d else c for c in wanted for d in self.rotations]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def gather(self, indices: Tensor) -> Tensor:
        """Images of ``indices`` (``[n]`` int64) as float32 ``[n, 1, S, S]``, ink 1.0, rotations applied."""
        x = self._images[self._base_index[indices]]  # (n, S, S) uint8, a copy
        if self._rotated:
            k = self._rot_k[indices]
            for quarter in (1, 2, 3):
                mask = k == quarter
                if bool(mask.any()):
                    x[mask] = torch.rot90(x[mask], quarter, dims=(1, 2))
        return x.unsqueeze(1).float().div_(255.0)

    def __repr__(self) -> str:
        src = ", ".join(str(s.path) for s in self.sources.values())
        return (
            f"Omniglot(split={self.split!r}, classes={self.num_classes}, examples={len(self)}, "
            f"image_size={self.image_size}, rotations={self.rotations}, source={src!r})"
        )

    # -- locating and downloading -------------------------------------------------------------------------

    def _locate(self, set_name: str, download: bool) -> _Source | None:
        """First of ``<dir>/<set>/`` and ``<dir>/<set>.zip`` over the candidate dirs; downloads if asked."""
        found = _find_source(self.root, set_name)
        if found is not None:
            return found
        if download:
            url, sha256 = RESOURCES[set_name]
            dest = download_url(url, self.root / "omniglot" / f"{set_name}.zip", sha256)
            return _Source(set_name, "zip", dest)
        if self.split in OFFICIAL_SPLITS:
            searched = " and ".join(repr(str(p / set_name)) + "[.zip]" for p in _candidate_dirs(self.root))
            raise FileNotFoundError(f"Omniglot {set_name} not found: searched {searched}; {_HINT}")
        return None  # a Vinyals split reports every missing character at once


def _candidate_dirs(root: Path) -> list[Path]:
    """Where a set is looked for, in order: ``root/omniglot``, then ``root``."""
    return [root / "omniglot", root]


def _find_source(root: Path, set_name: str) -> _Source | None:
    """First of ``<dir>/<set>/`` and ``<dir>/<set>.zip`` over :func:`_candidate_dirs`."""
    for folder in _candidate_dirs(root):
        if (folder / set_name).is_dir():
            return _Source(set_name, "folder", folder / set_name)
        if (folder / f"{set_name}.zip").is_file():
            return _Source(set_name, "zip", folder / f"{set_name}.zip")
    return None


@dataclass(frozen=True)
class SetSummary:
    """What one official set found on disk holds: ``characters`` and ``images`` (drawings over all characters)."""

    set_name: str
    path: Path
    characters: int
    images: int

    @property
    def complete(self) -> bool:
        """Whether the counts are the official ones (every character then has all its drawings)."""
        expected = OFFICIAL_CHARACTERS[self.set_name]
        return self.characters == expected and self.images == expected * DRAWINGS_PER_CHARACTER


def summarize_sets(root: str | os.PathLike[str] | None = None) -> dict[str, SetSummary | None]:
    """For each official set, where :class:`Omniglot` would read it under ``root`` and its counts (``None``: not
    found). Only the file list is read, no image is decoded.

    Raises:
        RuntimeError: an archive is corrupt or a folder holds no images in the official layout.
    """
    out: dict[str, SetSummary | None] = {}
    for set_name in SETS:
        source = _find_source(data_root(root), set_name)
        if source is None:
            out[set_name] = None
            continue
        members = _list_images(source)
        out[set_name] = SetSummary(set_name, source.path, len({char for char, _ in members}), len(members))
    return out


def _check_counts(source: _Source, members: list[tuple[str, str]]) -> None:
    """Raise ``ValueError`` unless ``members`` hold the official characters x drawings of ``source``'s set."""
    per_char: dict[str, int] = {}
    for char, _ in members:
        per_char[char] = per_char.get(char, 0) + 1
    expected = OFFICIAL_CHARACTERS[source.set_name]
    short = {c: n for c, n in per_char.items() if n != DRAWINGS_PER_CHARACTER}
    if len(per_char) == expected and not short:
        return
    first = f"; e.g. {min(short)!r} has {short[min(short)]}" if short else ""
    raise ValueError(
        f"{str(source.path)!r} holds {len(per_char)} characters and {len(members)} drawings, {len(short)} characters "
        f"without exactly {DRAWINGS_PER_CHARACTER} drawings{first}; the official {source.set_name} has {expected} "
        f"characters x {DRAWINGS_PER_CHARACTER} drawings. The data is incomplete (a partial extraction?): extract "
        f"it again or {_HINT}; for a deliberate subset pass check_complete=False"
    )


def _check_rotations(rotations: Sequence[int] | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if rotations is None:
        return default
    if isinstance(rotations, (str, bytes)) or not isinstance(rotations, Sequence):
        raise TypeError(f"rotations must be a sequence of degrees such as (0, 90), got {rotations!r}")
    values = tuple(rotations)
    bad = [r for r in values if isinstance(r, bool) or not isinstance(r, int) or r not in _ROTATIONS]
    if not values or bad:
        raise ValueError(f"rotations={rotations!r} is not supported; use a non-empty subset of {_ROTATIONS}")
    if len(set(values)) != len(values):
        raise ValueError(f"rotations={rotations!r} has duplicates; each rotation may appear once")
    return values


# -- reading and caching one set ----------------------------------------------------------------------------

_MEMBER_RE = re.compile(r"^(?:[^/]+/)?([^/]+)/([^/]+)/([^/]+\.png)$", re.IGNORECASE)


def _list_images(source: _Source) -> list[tuple[str, str]]:
    """Sorted ``(character, member)`` pairs; ``character`` is ``"Alphabet/characterNN"``."""
    if source.kind == "zip":
        try:
            with zipfile.ZipFile(source.path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile as err:
            raise RuntimeError(
                f"{str(source.path)!r} is not a valid zip archive ({err}); the file is corrupt: delete it and {_HINT}"
            ) from err
        pairs = []
        for name in names:
            match = _MEMBER_RE.match(name)
            if match and not name.startswith("__MACOSX/") and not match.group(3).startswith("._"):
                pairs.append((f"{match.group(1)}/{match.group(2)}", name))
    else:
        pairs = [
            (f"{p.parent.parent.name}/{p.parent.name}", p.relative_to(source.path).as_posix())
            for p in source.path.glob("*/*/*")
            if p.suffix.lower() == ".png" and p.is_file() and not p.name.startswith("._")
        ]
    if not pairs:
        raise RuntimeError(
            f"{str(source.path)!r} holds no images in the layout <Alphabet>/<characterNN>/<id>_<drawer>.png; "
            f"the data is incomplete or corrupt: {_HINT}"
        )
    return sorted(pairs)


def _fingerprint(source: _Source, members: list[tuple[str, str]]) -> str:
    """sha256 of the archive, or of the sorted relative paths and bytes of the images of a folder."""
    if source.kind == "zip":
        return sha256_file(source.path)
    digest = hashlib.sha256()
    for _, rel in members:
        data = (source.path / rel).read_bytes()
        digest.update(rel.encode("utf-8") + b"\0" + len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _decode_set(source: _Source, members: list[tuple[str, str]], image_size: int) -> dict[str, Any]:
    """Preprocess every image of a set: ``images`` uint8 ``[M, S, S]`` (ink 255), per-character offsets."""
    images = np.empty((len(members), image_size, image_size), dtype=np.uint8)
    characters: list[str] = []
    offsets: list[int] = []
    desc = f"Omniglot {source.set_name}"
    zf = zipfile.ZipFile(source.path) if source.kind == "zip" else None
    try:
        for i, (char, rel) in enumerate(progress(members, len(members), desc)):
            if not characters or characters[-1] != char:
                characters.append(char)
                offsets.append(i)
            if zf is not None:
                try:
                    data = zf.read(rel)
                except (zipfile.BadZipFile, OSError) as err:
                    raise RuntimeError(
                        f"cannot read {rel!r} from {str(source.path)!r} ({err}); the archive is corrupt: "
                        f"delete it and {_HINT}"
                    ) from err
                img = load_image(io.BytesIO(data), image_size, "L", name=f"{source.path}:{rel}")
            else:
                img = load_image(source.path / rel, image_size, "L")
            images[i] = 255 - img
    finally:
        if zf is not None:
            zf.close()
    offsets.append(len(members))
    return {
        "images": torch.from_numpy(images),
        "characters": characters,
        "offsets": torch.tensor(offsets, dtype=torch.long),
    }


def _load_set(source: _Source, image_size: int, cache_dir: Path, check_complete: bool) -> dict[str, Any]:
    """The preprocessed set, from the cache when its key (source sha256 + options) matches; with
    ``check_complete`` the set must hold the official counts (unless it is the published archive)."""
    members = _list_images(source)
    fingerprint = _fingerprint(source, members)
    published = source.kind == "zip" and fingerprint == RESOURCES[source.set_name][1]
    if check_complete and not published:
        _check_counts(source, members)
    options = {"image_size": image_size, "resample": _RESAMPLE, "version": _CACHE_VERSION}
    path = cache_dir / (f"{source.set_name}-{fingerprint[:24]}-{image_size}px-{_RESAMPLE}-v{_CACHE_VERSION}.pt")
    if path.is_file():
        try:
            cached = safe_torch_load(path)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
            warnings.warn(f"ignoring unreadable Omniglot cache {str(path)!r} ({err}); rebuilding", stacklevel=3)
        else:
            if _valid_cache(cached, fingerprint, options, image_size):
                return dict(cached)
            warnings.warn(f"ignoring stale or malformed Omniglot cache {str(path)!r}; rebuilding", stacklevel=3)
    data = _decode_set(source, members, image_size)
    try:
        atomic_torch_save({**data, "source_sha256": fingerprint, "options": options}, path)
    except OSError as err:
        warnings.warn(
            f"could not write the Omniglot cache {str(path)!r} ({err}); the next load will preprocess again. "
            "Pass a writable cache_dir= or set META_LEARNING_CACHE",
            stacklevel=3,
        )
    return data


def _valid_cache(cached: Any, fingerprint: str, options: dict[str, Any], image_size: int) -> bool:
    if not isinstance(cached, dict) or cached.get("source_sha256") != fingerprint:
        return False
    if cached.get("options") != options:
        return False
    images, offsets, characters = cached.get("images"), cached.get("offsets"), cached.get("characters")
    return (
        isinstance(images, Tensor)
        and images.dtype == torch.uint8
        and tuple(images.shape[1:]) == (image_size, image_size)
        and isinstance(offsets, Tensor)
        and isinstance(characters, list)
        and offsets.numel() == len(characters) + 1
        and int(offsets[-1]) == images.shape[0]
    )
