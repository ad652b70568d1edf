"""CIFAR-100 python-pickle files: a tiny fixture in the real layout, archive and folder, and a tampered file."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from meta_learning.data.cifar import CIFAR100, SplitCIFAR100, safe_load_pickle


def write_cifar100(root, per_class=(2, 1), protocol=2, archive=False, seed=0):
    """``cifar-100-python/{train,test,meta}`` with ``per_class`` images of each of the 100 classes."""
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
    blobs = {k: pickle.dumps(v, protocol=protocol) for k, v in members.items()}
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


@pytest.mark.parametrize(("protocol", "archive"), [(2, False), (2, True), (4, False)])
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
