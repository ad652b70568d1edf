"""CIFAR-100 python-pickle files: a tiny fixture in the real layout, archive and folder, and a tampered file."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import tarfile
import warnings
from typing import NamedTuple

import numpy as np
import pytest
import torch

from meta_learning.data.cifar import CIFAR100, SplitCIFAR100, safe_load_pickle


class Py2Global(NamedTuple):
    module: str
    name: str


class Py2Reduce(NamedTuple):
    func: Py2Global
    args: tuple
    state: tuple


def py2_pickle(obj):
    """``obj`` as Python 2's ``cPickle.dump(obj, f, 2)`` writes it, opcode by opcode, as the real CIFAR-100 files
    were written: every ``str`` is a Python 2 byte string (``SHORT_BINSTRING``/``BINSTRING``, no unicode opcodes),
    NumPy arrays go through ``numpy.core.multiarray._reconstruct`` with their bytes as a byte string, and there is
    no ``_codecs.encode`` (what Python 3 writes for ``bytes`` under protocol 2). The memo is left out (optional)."""
    out = io.BytesIO()

    def save(o):
        if o is None:
            out.write(pickle.NONE)
        elif isinstance(o, bool):
            out.write(pickle.NEWTRUE if o else pickle.NEWFALSE)
        elif isinstance(o, int):
            if 0 <= o < 256:
                out.write(pickle.BININT1 + bytes([o]))
            elif 0 <= o < 65536:
                out.write(pickle.BININT2 + struct.pack("<H", o))
            else:
                out.write(pickle.BININT + struct.pack("<i", o))
        elif isinstance(o, (str, bytes)):
            raw = o.encode("ascii") if isinstance(o, str) else o
            head = pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256 else pickle.BINSTRING
            out.write(head + (b"" if len(raw) < 256 else struct.pack("<i", len(raw))) + raw)
        elif isinstance(o, Py2Global):
            out.write(pickle.GLOBAL + f"{o.module}\n{o.name}\n".encode("ascii"))
        elif isinstance(o, Py2Reduce):
            save(o.func)
            save(o.args)
            out.write(pickle.REDUCE)
            save(o.state)
            out.write(pickle.BUILD)
        elif isinstance(o, tuple):
            if 1 <= len(o) <= 3:
                for item in o:
                    save(item)
                out.write([pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3][len(o) - 1])
            else:
                out.write(pickle.MARK)
                for item in o:
                    save(item)
                out.write(pickle.TUPLE)
        elif isinstance(o, list):
            out.write(pickle.EMPTY_LIST + pickle.MARK)
            for item in o:
                save(item)
            out.write(pickle.APPENDS)
        elif isinstance(o, dict):
            out.write(pickle.EMPTY_DICT + pickle.MARK)
            for k, v in o.items():
                save(k)
                save(v)
            out.write(pickle.SETITEMS)
        elif isinstance(o, np.ndarray):  # numpy 1.x's ndarray.__reduce__ under Python 2
            order, code = o.dtype.str[0], o.dtype.str[1:]
            dtype = Py2Reduce(Py2Global("numpy", "dtype"), (code, 0, 1), (3, order, None, None, None, -1, -1, 0))
            reconstruct = Py2Global("numpy.core.multiarray", "_reconstruct")
            args = (Py2Global("numpy", "ndarray"), (0,), "b")
            save(Py2Reduce(reconstruct, args, (1, o.shape, dtype, False, o.tobytes())))
        else:
            raise TypeError(f"py2_pickle cannot write {type(o).__name__}")

    out.write(pickle.PROTO + bytes([2]))
    save(obj)
    out.write(pickle.STOP)
    return out.getvalue()


def write_cifar100(root, per_class=(2, 1), protocol=2, archive=False, seed=0):
    """``cifar-100-python/{train,test,meta}`` with ``per_class`` images of each of the 100 classes.

    ``protocol``: a pickle protocol for Python 3's pickler, or ``"py2"`` for files byte-for-byte in the layout
    Python 2 wrote (:func:`py2_pickle`), as the official archive's are."""
    rng = np.random.default_rng(seed)
    members, arrays = {}, {}
    for split, n in zip(("train", "test"), per_class, strict=True):
        fine = np.repeat(np.arange(100), n)
        data = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
        arrays[split] = (data, fine)
        members[split] = {
            "filenames": [f"img_{i}.png" for i in range(len(fine))],
            "batch_label": f"{split} batch",
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            "data": data,
        }
    members["meta"] = {"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": ["c"] * 20}
    dump = py2_pickle if protocol == "py2" else lambda v: pickle.dumps(v, protocol=protocol)
    blobs = {k: dump(v) for k, v in members.items()}
    if archive:
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"cifar-100-python/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for name, blob in blobs.items():
            (folder / name).write_bytes(blob)
    return arrays


@pytest.mark.parametrize(("protocol", "archive"), [(2, False), (2, True), (4, False), ("py2", False), ("py2", True)])
def test_reads_images_labels_and_names(tmp_path, protocol, archive):
    arrays = write_cifar100(tmp_path, protocol=protocol, archive=archive)
    train = CIFAR100(tmp_path, "train")
    data, fine = arrays["train"]
    assert len(train) == 200 and train.x.shape == (200, 3, 32, 32) and train.x.dtype == torch.uint8
    assert np.array_equal(train.labels, fine) and np.array_equal(train.coarse_labels, fine // 5)
    # row layout: 1024 red values, then green, then blue, each row-major 32x32
    assert np.array_equal(train.x[7, 1].numpy(), data[7, 1024:2048].reshape(32, 32))
    assert train.class_names[3] == "class3"
    assert len(CIFAR100(tmp_path, "test")) == 100


def test_python2_fixture_has_byte_string_keys_and_the_loader_decodes_them(tmp_path):
    write_cifar100(tmp_path, protocol="py2")
    blob = (tmp_path / "cifar-100-python" / "train").read_bytes()
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(blob)]
    names = {name for name, _ in ops}
    assert ops[0] == ("PROTO", 2) and "SHORT_BINSTRING" in names and "BINSTRING" in names  # keys; the image bytes
    assert not names & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"}
    assert {arg for name, arg in ops if name == "GLOBAL"} == {
        "numpy.core.multiarray _reconstruct",
        "numpy ndarray",
        "numpy dtype",
    }
    with warnings.catch_warnings():  # numpy >= 2 warns on the numpy.core name the plain unpickler imports
        warnings.simplefilter("ignore", DeprecationWarning)
        as_bytes = pickle.loads(blob, encoding="bytes")
    assert set(as_bytes) == {b"filenames", b"batch_label", b"fine_labels", b"coarse_labels", b"data"}
    loaded = safe_load_pickle(io.BytesIO(blob))  # the restricted unpickler, latin-1: str keys, the same array
    assert set(loaded) == {k.decode() for k in as_bytes} and loaded["batch_label"] == "train batch"
    assert loaded["data"].dtype == np.uint8 and np.array_equal(loaded["data"], as_bytes[b"data"])
    assert loaded["filenames"][3] == "img_3.png"


def test_split_cifar100_streams(tmp_path):
    write_cifar100(tmp_path)
    stream = SplitCIFAR100(tmp_path, "class", n_experiences=10)
    assert len(stream) == 10 and stream.num_classes == 100 and stream[1].classes == tuple(range(10, 20))
    assert sorted(set(stream[1].train.labels.tolist())) == list(range(10, 20))
    shuffled = SplitCIFAR100(tmp_path, "task", n_experiences=20, seed=3)
    again = SplitCIFAR100(tmp_path, "task", n_experiences=20, seed=3)
    assert (
        [e.classes for e in shuffled]
        == [e.classes for e in again]
        != [e.classes for e in SplitCIFAR100(tmp_path, "task", n_experiences=20)]
    )
    assert shuffled.num_classes == 5 and set(shuffled[0].test.labels.tolist()) == set(range(5))
    with pytest.raises(ValueError, match="n_experiences=7"):
        SplitCIFAR100(tmp_path, n_experiences=7)
    with pytest.raises(ValueError, match="permutation of the 100"):
        SplitCIFAR100(tmp_path, class_order=list(range(99)))


class Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"data": Exploit(marker)}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (posix|nt)\.system"):
        safe_load_pickle(io.BytesIO(blob))
    assert not marker.exists()
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(blob)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        CIFAR100(tmp_path, "train")


def test_missing_and_malformed_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        CIFAR100(tmp_path, "train")
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8), "fine_labels": [0, 1]}))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": []}))
    with pytest.raises(ValueError, match=r"expected uint8 \[N, 3072\]"):
        CIFAR100(tmp_path, "train")
