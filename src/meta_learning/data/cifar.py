"""CIFAR-100 from its "python version" files, and the Split CIFAR-100 continual-learning stream.

The official archive ``cifar-100-python.tar.gz`` holds ``cifar-100-python/{train,test,meta}``: Python pickles of
dicts with ``data`` (``uint8 [N, 3072]``, the red, green then blue 32x32 planes of each image), ``fine_labels``,
``coarse_labels`` and, in ``meta``, ``fine_label_names``. Both the archive and its extracted folder are read as
they are (looked for in ``root/`` and ``root/cifar100/``).

A pickle can run arbitrary code when it is loaded, so these files are read by an unpickler that only resolves
the globals a NumPy array needs (``ndarray``, ``dtype``, ``_reconstruct``, and ``_codecs.encode`` for bytes written
by Python 3 under protocol 2) and refuses every other one:
a tampered file raises :class:`pickle.UnpicklingError` naming the global instead of running anything.

No download: we could not verify a checksum for the archive offline, and DESIGN.md asks for one.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from meta_learning._checks import check_choice, check_positive_int
from meta_learning._io import data_root
from meta_learning.data.streams import Stream, TensorClassificationDataset, split_classes

FOLDER = "cifar-100-python"
ARCHIVE = "cifar-100-python.tar.gz"
_NUMPY_CORE = getattr(np, "_core", None) or np.core  # numpy >= 2 moved core to _core
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_CORE.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_CORE.multiarray._reconstruct,
    # Python 3 writes bytes under protocol 2 as _codecs.encode(text, "latin1"); it only builds a bytes object
    ("_codecs", "encode"): codecs.encode,
}
_HINT = f"set META_LEARNING_DATA (or root=) to the folder that holds {FOLDER}/ or {ARCHIVE}"


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals needed to rebuild NumPy arrays; everything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: CIFAR files hold only dicts, lists and NumPy arrays"
            ) from None


def safe_load_pickle(handle: IO[bytes]) -> Any:
    """Unpickle ``handle`` allowing only plain containers and NumPy arrays (Python 2 pickles read as latin-1)."""
    return _ArrayOnlyUnpickler(handle, encoding="latin1").load()


def _read_member(root: Path, member: str) -> tuple[Any, str]:
    """Unpickle ``cifar-100-python/<member>`` from an extracted folder or from the archive."""
    for folder in (root, root / "cifar100"):
        path = folder / FOLDER / member
        if path.is_file():
            with open(path, "rb") as f:
                return safe_load_pickle(f), str(path)
        archive = folder / ARCHIVE
        if archive.is_file():
            try:
                with tarfile.open(archive, "r:*") as tar:
                    handle = tar.extractfile(f"{FOLDER}/{member}")
                    if handle is None:
                        raise KeyError(member)
                    return safe_load_pickle(io.BytesIO(handle.read())), f"{archive}:{FOLDER}/{member}"
            except (tarfile.TarError, KeyError, EOFError, OSError) as err:
                raise RuntimeError(f"cannot read {FOLDER}/{member} from {str(archive)!r} ({err}); {_HINT}") from err
    raise FileNotFoundError(
        f"CIFAR-100 {member!r} not found: searched {str(root / FOLDER)!r}, {str(root / ARCHIVE)!r} and the same under "
        f"{str(root / 'cifar100')!r}; {_HINT}"
    )


class CIFAR100(TensorClassificationDataset):
    """CIFAR-100 ``split`` (``"train"``: 50,000 images, ``"test"``: 10,000) as ``uint8 [N, 3, 32, 32]``.

    Attributes:
        labels: ``[N]`` fine labels ``0..99``; ``coarse_labels``: ``[N]`` superclass labels ``0..19``.
        class_names: the 100 fine label names (from ``meta``).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, split: str = "train") -> None:
        self.split = check_choice("split", split, ("train", "test"))
        self.root = data_root(root)
        raw, self.source = _read_member(self.root, split)
        meta, _ = _read_member(self.root, "meta")
        if not isinstance(raw, dict) or not {"data", "fine_labels"} <= set(raw):
            raise ValueError(f"{self.source} is not a CIFAR-100 batch (expected a dict with 'data' and 'fine_labels')")
        data = np.asarray(raw["data"])
        fine = np.asarray(raw["fine_labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or fine.shape != (data.shape[0],):
            raise ValueError(
                f"{self.source} holds data {data.dtype} {data.shape} and {fine.shape} labels; expected uint8 [N, 3072] "
                "and [N] labels"
            )
        if fine.size and (fine.min() < 0 or fine.max() > 99):
            raise ValueError(f"{self.source} fine labels span {fine.min()}..{fine.max()}; expected 0..99")
        self.coarse_labels = np.asarray(raw.get("coarse_labels", []), dtype=np.int64)
        self.class_names = [str(n) for n in meta.get("fine_label_names", [])] if isinstance(meta, dict) else []
        super().__init__(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(fine))


def SplitCIFAR100(
    root: str | os.PathLike[str] | None = None,
    scenario: str = "class",
    *,
    n_experiences: int = 10,
    class_order: Sequence[int] | None = None,
    seed: int | None = None,
) -> Stream:
    """Split CIFAR-100: ``n_experiences`` experiences of ``100 / n_experiences`` classes each.

    Args:
        root: data root.
        scenario: ``"task"``, ``"domain"`` or ``"class"``.
        n_experiences: must divide 100 (10 is usual).
        class_order: the 100 classes in stream order (default ``0..99``, or a permutation drawn from ``seed``).
        seed: shuffles the class order with a ``torch.Generator`` when ``class_order`` is not given.
    """
    check_positive_int("n_experiences", n_experiences)
    if 100 % n_experiences:
        raise ValueError(f"n_experiences={n_experiences} but it must divide the 100 classes (e.g. 5, 10, 20)")
    if class_order is None:
        order = list(range(100))
        if seed is not None:
            order = torch.randperm(100, generator=torch.Generator().manual_seed(int(seed))).tolist()
    else:
        order = [int(c) for c in class_order]
        if sorted(order) != list(range(100)):
            raise ValueError("class_order must be a permutation of the 100 class ids 0..99")
    per = 100 // n_experiences
    groups = [order[i * per : (i + 1) * per] for i in range(n_experiences)]
    train, test = CIFAR100(root, "train"), CIFAR100(root, "test")
    return split_classes(train, test, groups, scenario, name="SplitCIFAR100")
