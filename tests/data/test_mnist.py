"""MNIST IDX files: fake files in the real format, and the real 10k test set where present."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from meta_learning.data.mnist import MNIST, PermutedMNIST, SplitMNIST, load_mnist, read_idx


def write_idx(path, array, gz=True):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_mnist(root, n_test=50, n_train=None, seed=0, gz=True):
    rng = np.random.default_rng(seed)
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("t10k", n_test), ("train", n_train)):
        if n is None:
            continue
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_files_exactly(tmp_path, gz):
    data = fake_mnist(tmp_path, n_test=30, n_train=20, gz=gz)
    test = MNIST(tmp_path, "test")
    assert len(test) == 30 and test.x.dtype == torch.uint8 and test.x.shape == (30, 1, 28, 28)
    assert np.array_equal(test.x[:, 0].numpy(), data["t10k"][0])
    assert np.array_equal(test.labels, data["t10k"][1])
    assert torch.equal(test.gather(torch.tensor([3])), torch.from_numpy(data["t10k"][0][3:4]).float()[:, None] / 255)
    assert len(MNIST(tmp_path, "train")) == 20
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    write_idx(tmp_path / "ints.idx", arr, gz=False)
    assert read_idx(tmp_path / "ints.idx").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_test10k_split_and_padding(tmp_path):
    fake_mnist(tmp_path, n_test=100)
    with pytest.raises(FileNotFoundError, match="source='test10k'"):
        load_mnist(tmp_path)
    train, test = load_mnist(tmp_path, source="test10k", test_fraction=0.2, split_seed=1)
    assert len(train) == 80 and len(test) == 20
    assert np.bincount(test.labels).tolist() == [2] * 10
    full = MNIST(tmp_path, "test")
    joined = torch.cat([train.x, test.x]).flatten(1)
    assert sorted(map(bytes, joined.numpy())) == sorted(map(bytes, full.x.flatten(1).numpy()))
    padded, _ = load_mnist(tmp_path, source="test10k", split_seed=1, pad_to=32)
    assert padded.x.shape[1:] == (1, 32, 32) and torch.equal(padded.x[:, :, 2:30, 2:30], train.x)
    with pytest.raises(ValueError, match="pad_to=31"):
        load_mnist(tmp_path, source="test10k", pad_to=31)


def test_corrupt_files_are_reported(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    write_idx(tmp_path / "short.idx", np.zeros(10, dtype=np.uint8), gz=False)
    (tmp_path / "short.idx").write_bytes((tmp_path / "short.idx").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "broken.gz").write_bytes(b"not gzip at all")
    with pytest.raises(RuntimeError, match="corrupt"):
        read_idx(tmp_path / "broken.gz")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        MNIST(tmp_path / "nowhere", "test")
    with pytest.raises(ValueError, match="split='val'"):
        MNIST(tmp_path, "val")


def test_real_mnist_test_set_and_streams(data_root):
    if not (data_root / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("MNIST test images not in the shared data")
    test = MNIST(data_root, "test")
    assert len(test) == 10_000
    # class counts of the official test set (shared/data/mnist/README.md)
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    stream = SplitMNIST(data_root, "class", source="test10k")
    assert sum(len(e.train) for e in stream) == 8000 and sum(len(e.test) for e in stream) == 2000
    assert [e.classes for e in stream] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    perm = PermutedMNIST(data_root, 2, source="test10k")
    x, _ = perm[1].train.tensors()
    assert x.shape == (8000, 1, 32, 32) and perm.num_classes == 10 and float(x.max()) == 1.0
