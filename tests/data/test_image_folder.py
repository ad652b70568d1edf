from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from meta_learning.data.image_folder import ImageFolderFewShot, MiniImageNet, load_image
from meta_learning.data.sampler import EpisodeSampler


def _rgb(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture
def class_tree(tmp_path: Path) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """root/<class>/<n>.png with random RGB 8x8 pixels; extra files that must be ignored."""
    rng = np.random.default_rng(0)
    root = tmp_path / "classes"
    pixels: dict[str, list[np.ndarray]] = {}
    for name, n in (("zebra", 2), ("ant", 3), ("moth", 2)):
        (root / name).mkdir(parents=True)
        pixels[name] = []
        for i in range(n):
            arr = _rgb(rng, 8)
            ext = ".PNG" if i == 0 else ".png"
            Image.fromarray(arr).save(root / name / f"{i:03d}{ext}", format="PNG")
            pixels[name].append(arr)
        (root / name / "notes.txt").write_text("not an image")
    (root / "empty_class").mkdir()
    (root / "README.md").write_text("top-level file, not a class")
    return root, pixels


@pytest.mark.parametrize("preload", [True, False])
def test_image_folder_counts_labels_and_pixels(class_tree, preload):
    root, pixels = class_tree
    ds = ImageFolderFewShot(root, image_size=8, preload=preload)
    assert ds.class_names == ["ant", "moth", "zebra"]  # sorted, empty folder skipped
    assert ds.num_classes == 3 and len(ds) == 7
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 1, 2, 2])
    x = ds.gather(torch.arange(len(ds)))
    assert x.dtype == torch.float32 and x.shape == (7, 3, 8, 8)
    expected = np.stack([p.transpose(2, 0, 1) for name in ds.class_names for p in pixels[name]]) / 255.0
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-7)


def test_preloaded_and_lazy_gather_agree_after_resizing(class_tree):
    root, _ = class_tree
    eager = ImageFolderFewShot(root, image_size=5, preload=True)
    lazy = ImageFolderFewShot(root, image_size=5, preload=False)
    idx = torch.tensor([6, 0, 3, 3])
    assert torch.equal(eager.gather(idx), lazy.gather(idx))
    ref = Image.open(eager.paths[6]).convert("RGB").resize((5, 5), Image.Resampling.LANCZOS)
    np.testing.assert_allclose(eager.gather(idx)[0].numpy(), np.asarray(ref).transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_grey_channel(class_tree):
    root, pixels = class_tree
    ds = ImageFolderFewShot(root, image_size=8, channels=1)
    x = ds.gather(torch.tensor([0]))
    assert x.shape == (1, 1, 8, 8)
    grey = np.asarray(Image.fromarray(pixels["ant"][0]).convert("L"))
    np.testing.assert_allclose(x[0, 0].numpy(), grey / 255.0, atol=1e-7)


def test_image_folder_with_the_episode_sampler(class_tree):
    root, _ = class_tree
    ds = ImageFolderFewShot(root, image_size=8)
    ep = EpisodeSampler(ds, n_way=3, k_shot=1, n_query=1, seed=0).sample()
    assert ep.support_x.shape == (3, 3, 8, 8)
    x, y = ds[4]
    assert x.shape == (3, 8, 8) and y == 1
    assert "classes=3" in repr(ds) and "examples=7" in repr(ds)


def test_image_folder_errors(tmp_path, class_tree):
    root, _ = class_tree
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderFewShot(tmp_path / "missing")
    (tmp_path / "no_images" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no images found.*no_images"):
        ImageFolderFewShot(tmp_path / "no_images")
    with pytest.raises(ValueError, match="channels=2"):
        ImageFolderFewShot(root, channels=2)
    with pytest.raises(ValueError, match="image_size=0"):
        ImageFolderFewShot(root, image_size=0)


def test_corrupt_image_names_the_file(class_tree):
    root, _ = class_tree
    (root / "ant" / "001.png").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match=r"001\.png"):
        ImageFolderFewShot(root, image_size=8)
    lazy = ImageFolderFewShot(root, image_size=8, preload=False)
    with pytest.raises(RuntimeError, match=r"001\.png"):
        lazy.gather(torch.tensor([1]))


def test_load_image_shapes(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((10, 6, 3), dtype=np.uint8)).save(path)
    assert load_image(path, 4, "RGB").shape == (4, 4, 3)
    assert load_image(path, 4, "L").dtype == np.uint8 and load_image(path, 4, "L").shape == (4, 4)


# -- Mini-ImageNet (Ravi & Larochelle CSV layout) -------------------------------------------------------------

WNIDS = {"train": ["n01532829", "n01558993", "n01704323"], "val": ["n01855672", "n02091244"], "test": ["n01930112"]}


@pytest.fixture
def mini_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    folder = tmp_path / "mini-imagenet"
    (folder / "images").mkdir(parents=True)
    for split, wnids in WNIDS.items():
        with open(folder / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            # listed in reverse wnid order, so sorted class ids differ from the order of appearance
            for wnid in reversed(wnids):
                for i in range(1, 4):
                    name = f"{wnid}{i:08d}.jpg"
                    Image.fromarray(_rgb(rng, 12)).save(folder / "images" / name, format="JPEG", quality=95)
                    writer.writerow([name, wnid])
    return tmp_path


def test_mini_imagenet_reads_the_ravi_split(mini_root):
    ds = MiniImageNet(mini_root, split="train", image_size=12)
    assert ds.class_names == sorted(WNIDS["train"]) and ds.num_classes == 3 and len(ds) == 9
    np.testing.assert_array_equal(ds.labels, [2, 2, 2, 1, 1, 1, 0, 0, 0])
    assert ds.paths[0].name == "n0170432300000001.jpg"
    x = ds.gather(torch.tensor([0, 8]))
    assert x.shape == (2, 3, 12, 12)
    for got, path in zip(x, (ds.paths[0], ds.paths[8]), strict=True):
        ref = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1) / 255.0
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-7)
    assert MiniImageNet(mini_root, split="val", image_size=12).num_classes == 2
    assert "split='train'" in repr(ds)


def test_mini_imagenet_resizes_and_samples(mini_root, monkeypatch):
    monkeypatch.setenv("META_LEARNING_DATA", str(mini_root))
    ds = MiniImageNet(split="train", preload=True)  # root from META_LEARNING_DATA, default 84 px
    ep = EpisodeSampler(ds, n_way=3, k_shot=1, n_query=2, seed=0).sample()
    assert ep.support_x.shape == (3, 3, 84, 84) and ep.query_x.shape == (6, 3, 84, 84)


def test_mini_imagenet_errors(tmp_path, mini_root):
    with pytest.raises(FileNotFoundError) as info:
        MiniImageNet(tmp_path / "elsewhere", split="test")
    msg = str(info.value)
    assert str(tmp_path / "elsewhere" / "mini-imagenet" / "test.csv") in msg and "META_LEARNING_DATA" in msg
    with pytest.raises(ValueError, match=r"split='training'.*'train', 'val', 'test'"):
        MiniImageNet(mini_root, split="training")
    (mini_root / "mini-imagenet" / "images" / "n0193011200000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"n0193011200000002\.jpg.*test\.csv"):
        MiniImageNet(mini_root, split="test")
    (mini_root / "mini-imagenet" / "val.csv").write_text("file,class\na.jpg,n0\n")
    with pytest.raises(RuntimeError, match="filename,label"):
        MiniImageNet(mini_root, split="val")
