"""Few-shot datasets read from image files: one folder per class, and Mini-ImageNet's CSV splits.

Both share one decoder (:func:`load_image`, also used by :mod:`meta_learning.data.omniglot`) and one base class
that either decodes every image once into a ``uint8`` tensor (``preload=True``: fast episodes, ``N*C*S*S``
bytes of memory) or decodes the images of each episode on demand (``preload=False``: little memory, slower
episodes).
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from meta_learning._checks import check_choice, check_positive_int
from meta_learning._io import data_root
from meta_learning.data.base import TensorLabelledDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
RESAMPLE = Image.Resampling.LANCZOS
_MODES = {1: "L", 3: "RGB"}
_T = TypeVar("_T")


def load_image(
    source: str | os.PathLike[str] | IO[bytes], image_size: int, mode: str = "RGB", *, name: str | None = None
) -> np.ndarray:
    """Decode one image, convert it to ``mode`` and resize it to ``image_size x image_size`` (LANCZOS).

    Args:
        source: a path or a binary file object (e.g. a member opened from a zip archive).
        image_size: output side ``S`` in pixels; images already ``S x S`` are not resampled.
        mode: PIL mode, ``"L"`` (grey) or ``"RGB"``.
        name: how to name the image in error messages (default: ``source``).

    Returns:
        ``uint8`` array, ``[S, S]`` for ``"L"`` or ``[S, S, 3]`` for ``"RGB"``.

    Raises:
        RuntimeError: the bytes are not a readable image.
    """
    try:
        with Image.open(source) as img:
            img = img.convert(mode)
            if img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), RESAMPLE)
            return np.array(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        label = name if name is not None else str(source)
        raise RuntimeError(f"cannot decode image {label!r}: {err}; the file is missing or corrupt") from err


def progress(items: Iterable[_T], total: int, desc: str) -> Iterator[_T]:
    """Iterate ``items`` with a tqdm bar on stderr when it is a terminal, silently otherwise."""
    if not sys.stderr.isatty():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False)


class _ImageListDataset(TensorLabelledDataset):
    """Labelled image files, decoded once (``preload=True``) or per gather."""

    def __init__(
        self,
        paths: Sequence[Path],
        labels: np.ndarray,
        class_names: list[str],
        image_size: int,
        channels: int,
        preload: bool,
    ) -> None:
        self.image_size = check_positive_int("image_size", image_size)
        if channels not in _MODES:
            raise ValueError(f"channels={channels!r} is not supported; use 1 (grey) or 3 (RGB)")
        self.channels = channels
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = class_names
        self.preload = bool(preload)
        self._images: Tensor | None = None
        if self.preload:
            self._images = torch.from_numpy(self._decode(self.paths, desc=type(self).__name__))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _decode(self, paths: Sequence[Path], desc: str | None = None) -> np.ndarray:
        """``[n, C, S, S]`` uint8 array of ``paths``."""
        s, mode = self.image_size, _MODES[self.channels]
        out = np.empty((len(paths), self.channels, s, s), dtype=np.uint8)
        items: Iterable[Path] = progress(paths, len(paths), desc) if desc else paths
        for i, path in enumerate(items):
            img = load_image(path, s, mode)
            out[i] = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        return out

    def gather(self, indices: Tensor) -> Tensor:
        """Images of ``indices`` (``[n]`` int64) as float32 ``[n, C, S, S]`` in ``[0, 1]``."""
        if self._images is not None:
            return self._images[indices].float().div_(255.0)
        picked = [self.paths[i] for i in indices.tolist()]
        return torch.from_numpy(self._decode(picked)).float().div_(255.0)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._describe()}classes={self.num_classes}, examples={len(self)}, "
            f"image_size={self.image_size}, channels={self.channels}, preload={self.preload})"
        )

    def _describe(self) -> str:
        return ""


class ImageFolderFewShot(_ImageListDataset):
    """A folder with one sub-folder of images per class, for few-shot sampling.

    Classes are the sub-folders in sorted order (label ``i`` is ``class_names[i]``); images are the files with
    a ``.png/.jpg/.jpeg/.bmp`` extension (any case), in sorted order. Sub-folders without images are skipped.

    Args:
        root: the folder holding the class folders.
        image_size: side ``S`` every image is resized to (LANCZOS).
        channels: 3 for RGB, 1 for grey.
        preload: decode everything once into a ``uint8 [N, C, S, S]`` tensor (default; fine for sets up to a
            few hundred MB), or decode per :meth:`gather` call when memory matters more than speed.

    Example:
        >>> ds = ImageFolderFewShot("my_classes", image_size=84)          # doctest: +SKIP
        >>> EpisodeSampler(ds, n_way=5, k_shot=1, n_query=15).sample()    # doctest: +SKIP
    """

    def __init__(
        self, root: str | os.PathLike[str], image_size: int = 84, channels: int = 3, *, preload: bool = True
    ) -> None:
        check_positive_int("image_size", image_size)
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"root {str(self.root)!r} is not a folder; expected one sub-folder per class")
        paths: list[Path] = []
        labels: list[int] = []
        class_names: list[str] = []
        for class_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            files = sorted(f for f in class_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                continue
            labels.extend([len(class_names)] * len(files))
            class_names.append(class_dir.name)
            paths.extend(files)
        if not paths:
            raise FileNotFoundError(
                f"no images found under {str(self.root)!r}; expected <root>/<class>/<image> files with "
                f"extensions {', '.join(IMAGE_EXTENSIONS)}"
            )
        super().__init__(paths, np.array(labels, dtype=np.int64), class_names, image_size, channels, preload)

    def _describe(self) -> str:
        return f"{str(self.root)!r}, "


class MiniImageNet(_ImageListDataset):
    """Mini-ImageNet with the Ravi & Larochelle (2017) class split: 64 train, 16 val, 20 test classes.

    Expected layout (the one produced by the split's own tools)::

        <root>/mini-imagenet/{train,val,test}.csv     header "filename,label", e.g. "n0153282900000005.jpg,n01532829"
        <root>/mini-imagenet/images/<filename>

    ``<root>`` is resolved like every dataset root (``root``, else ``$META_LEARNING_DATA``); a ``root`` that is
    itself the ``mini-imagenet`` folder works too. Labels are the sorted wnids of the split (``class_names``).

    Args:
        root: data root (see above), or ``None``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: side ``S``; the images are 84x84 already, other sizes are resampled (LANCZOS).
        preload: decode the split once into memory (38,400 train images at 84 px take ~0.8 GB); off by default,
            so images are decoded per episode.

    Example:
        >>> ds = MiniImageNet("~/data", split="test")   # doctest: +SKIP
    """

    SPLITS = ("train", "val", "test")

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        image_size: int = 84,
        *,
        preload: bool = False,
    ) -> None:
        self.split = check_choice("split", split, self.SPLITS)
        check_positive_int("image_size", image_size)
        base = data_root(root)
        candidates = [base / "mini-imagenet", base]
        folder = next((c for c in candidates if (c / f"{split}.csv").is_file()), None)
        if folder is None:
            searched = " and ".join(repr(str(c / f"{split}.csv")) for c in candidates)
            raise FileNotFoundError(
                f"Mini-ImageNet split file not found: searched {searched}. Get the Ravi & Larochelle split "
                "(train/val/test.csv with header 'filename,label' and an images/ folder), put it in "
                "<root>/mini-imagenet/, and pass root= or set META_LEARNING_DATA"
            )
        self.root = folder
        rows = _read_split_csv(folder / f"{split}.csv")
        wnids = sorted({label for _, label in rows})
        index = {w: i for i, w in enumerate(wnids)}
        paths = [folder / "images" / filename for filename, _ in rows]
        missing = next((p for p in paths if not p.is_file()), None)
        if missing is not None:
            raise FileNotFoundError(
                f"image {str(missing)!r} listed in {str(folder / f'{split}.csv')!r} does not exist; the images/ "
                "folder is incomplete: extract every Mini-ImageNet image into it"
            )
        labels = np.array([index[label] for _, label in rows], dtype=np.int64)
        super().__init__(paths, labels, wnids, image_size, 3, preload)

    def _describe(self) -> str:
        return f"split={self.split!r}, "


def _read_split_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["filename", "label"]:
            raise RuntimeError(
                f"{str(path)!r} has header {header!r}; expected 'filename,label' (Ravi & Larochelle CSV format)"
            )
        rows = [(r[0].strip(), r[1].strip()) for r in reader if r]
    if not rows:
        raise RuntimeError(f"{str(path)!r} lists no images")
    return rows
