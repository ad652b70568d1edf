from __future__ import annotations

import statistics
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from meta_learning._io import sha256_file
from meta_learning.data import omniglot as omniglot_module
from meta_learning.data.omniglot import Omniglot, read_vinyals_split
from meta_learning.data.sampler import EpisodeSampler

BG = {"Alpha": 2, "Beta": 3}
EV = {"Gamma": 2}


def _expected(pixels: np.ndarray) -> np.ndarray:
    """Ink 1.0, background 0.0, for a source already at the target size (no resampling)."""
    return 1.0 - pixels.astype(np.float32) / 255.0


def _by_class(files: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for rel in sorted(files):
        _, alphabet, char, _ = rel.split("/")
        out.setdefault(f"{alphabet}/{char}", []).append(files[rel])
    return out


# -- fake data in the official layout ------------------------------------------------------------------------


@pytest.mark.parametrize("as_zip", [False, True])
@pytest.mark.parametrize("subdir", ["omniglot", ""])
def test_background_counts_labels_and_pixels(tmp_path, isolated_cache, as_zip, subdir, fake_omniglot):
    files = fake_omniglot(tmp_path / subdir if subdir else tmp_path, "images_background", BG, as_zip=as_zip)
    ds = Omniglot(tmp_path, split="background")

    assert ds.rotations == (0,)
    assert ds.num_classes == 5 and len(ds) == 15
    assert ds.class_names == [
        "Alpha/character01",
        "Alpha/character02",
        "Beta/character01",
        "Beta/character02",
        "Beta/character03",
    ]
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, np.repeat(np.arange(5), 3))
    x = ds.gather(torch.arange(len(ds)))
    assert x.dtype == torch.float32 and x.shape == (15, 1, 28, 28)
    expected = np.stack([_expected(p) for imgs in _by_class(files).values() for p in imgs])
    np.testing.assert_array_equal(x[:, 0].numpy(), expected)
    # ink (0 in the PNG) is exactly 1.0 and background exactly 0.0
    assert set(torch.unique(x).tolist()) == {0.0, 1.0}


def test_zip_and_folder_give_the_same_dataset(tmp_path, isolated_cache, fake_omniglot):
    fake_omniglot(tmp_path / "a" / "omniglot", "images_background", BG, as_zip=True, seed=3)
    fake_omniglot(tmp_path / "b" / "omniglot", "images_background", BG, as_zip=False, seed=3)
    a = Omniglot(tmp_path / "a", split="background")
    b = Omniglot(tmp_path / "b", split="background")
    assert a.class_names == b.class_names
    np.testing.assert_array_equal(a.labels, b.labels)
    assert torch.equal(a.gather(torch.arange(len(a))), b.gather(torch.arange(len(b))))


def test_resize_matches_pil_lanczos_reference(tmp_path, isolated_cache, fake_omniglot):
    files = fake_omniglot(tmp_path / "omniglot", "images_evaluation", EV, size=40)
    ds = Omniglot(tmp_path, split="evaluation", image_size=20)
    x = ds.gather(torch.arange(len(ds)))
    assert x.shape == (6, 1, 20, 20)
    for i, rel in enumerate(sorted(files)):
        img = Image.open(tmp_path / "omniglot" / rel).convert("L").resize((20, 20), Image.Resampling.LANCZOS)
        ref = (255 - np.asarray(img, dtype=np.uint8)).astype(np.float32) / 255.0
        np.testing.assert_allclose(x[i, 0].numpy(), ref, atol=1e-6)


def test_rotations_are_new_classes_and_match_np_rot90(tmp_path, isolated_cache, fake_omniglot):
    files = fake_omniglot(tmp_path / "omniglot", "images_background", {"Alpha": 2})
    ds = Omniglot(tmp_path, split="background", rotations=(0, 90, 180, 270))
    assert ds.num_classes == 8 and len(ds) == 24
    assert ds.class_names[:4] == [
        "Alpha/character01",
        "Alpha/character01@90",
        "Alpha/character01@180",
        "Alpha/character01@270",
    ]
    sources = list(_by_class(files).values())
    for label, name in enumerate(ds.class_names):
        _, _, deg = name.partition("@")
        quarter = int(deg or 0) // 90
        idx = torch.from_numpy(np.flatnonzero(ds.labels == label))
        x = ds.gather(idx)[:, 0].numpy()
        base = sources[label // 4]
        for got, src in zip(x, base, strict=True):
            np.testing.assert_array_equal(got, np.rot90(_expected(src), k=quarter))
    # a mixed batch (several rotations at once, in random order) equals the per-example results
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    together = ds.gather(perm)
    one_by_one = torch.stack([ds[int(i)][0] for i in perm])
    assert torch.equal(together, one_by_one)


def test_vinyals_split_spans_both_sets(tmp_path, isolated_cache, monkeypatch, fake_omniglot):
    bg = fake_omniglot(tmp_path / "omniglot", "images_background", BG, as_zip=True)
    ev = fake_omniglot(tmp_path / "omniglot", "images_evaluation", EV, as_zip=True, seed=1)
    wanted = ["Gamma/character02", "Alpha/character01"]
    monkeypatch.setattr(omniglot_module, "read_vinyals_split", lambda split: wanted)
    ds = Omniglot(tmp_path, split="train")
    assert ds.rotations == (0, 90, 180, 270)
    assert ds.characters == wanted
    assert ds.num_classes == 8 and len(ds) == 24
    assert ds.class_names[4] == "Alpha/character01" and ds.class_names[1] == "Gamma/character02@90"
    first = _by_class({**bg, **ev})
    x = ds.gather(torch.from_numpy(np.flatnonzero(ds.labels == 1)))  # Gamma/character02 rotated 90 degrees
    for got, src in zip(x[:, 0].numpy(), first["Gamma/character02"], strict=True):
        np.testing.assert_array_equal(got, np.rot90(_expected(src)))


def test_vinyals_split_reports_missing_characters(tmp_path, isolated_cache, monkeypatch, fake_omniglot):
    fake_omniglot(tmp_path / "omniglot", "images_background", BG)
    monkeypatch.setattr(omniglot_module, "read_vinyals_split", lambda split: ["Alpha/character01", "Zeta/character07"])
    with pytest.raises(FileNotFoundError, match=r"Zeta/character07.*images_evaluation.*download=True"):
        Omniglot(tmp_path, split="test")


def test_works_with_episode_sampler(tmp_path, isolated_cache, fake_omniglot):
    fake_omniglot(tmp_path / "omniglot", "images_background", BG, drawers=4)
    ds = Omniglot(tmp_path, split="background", rotations=(0, 180))
    episode = EpisodeSampler(ds, n_way=3, k_shot=1, n_query=2, seed=0).sample()
    assert episode.support_x.shape == (3, 1, 28, 28) and episode.query_x.shape == (6, 1, 28, 28)
    x, y = ds[5]
    assert x.shape == (1, 28, 28) and isinstance(y, int) and y == ds.labels[5]
    assert "split='background'" in repr(ds) and "classes=10" in repr(ds) and "rotations=(0, 180)" in repr(ds)


# -- cache ----------------------------------------------------------------------------------------------------


def _fail_decode(*args, **kwargs):
    raise AssertionError("images were decoded again although a valid cache exists")


@pytest.mark.parametrize("as_zip", [False, True])
def test_cache_is_hit_the_second_time(tmp_path, isolated_cache, monkeypatch, as_zip, fake_omniglot):
    fake_omniglot(tmp_path / "omniglot", "images_background", BG, as_zip=as_zip)
    first = Omniglot(tmp_path, split="background")
    cached = list((isolated_cache / "omniglot").glob("*.pt"))
    assert len(cached) == 1 and cached[0].name.startswith("images_background-")
    monkeypatch.setattr(omniglot_module, "_decode_set", _fail_decode)
    second = Omniglot(tmp_path, split="background")
    assert torch.equal(first.gather(torch.arange(len(first))), second.gather(torch.arange(len(second))))
    # Every split is a view of the one cached set: another rotation setting reuses it too.
    Omniglot(tmp_path, split="background", rotations=(0, 90))
    assert len(list((isolated_cache / "omniglot").glob("*.pt"))) == 1


def test_cache_invalidated_when_a_folder_image_changes(tmp_path, isolated_cache, fake_omniglot):
    files = fake_omniglot(tmp_path / "omniglot", "images_background", BG)
    before = Omniglot(tmp_path, split="background")
    rel = sorted(files)[4]
    changed = 255 - files[rel]  # swap ink and background
    Image.fromarray(changed > 127).save(tmp_path / "omniglot" / rel)
    after = Omniglot(tmp_path, split="background")
    np.testing.assert_array_equal(after.gather(torch.tensor([4]))[0, 0].numpy(), _expected(changed))
    assert not torch.equal(before.gather(torch.tensor([4])), after.gather(torch.tensor([4])))
    assert len(list((isolated_cache / "omniglot").glob("*.pt"))) == 2


def test_cache_invalidated_when_the_zip_changes(tmp_path, isolated_cache, fake_omniglot):
    fake_omniglot(tmp_path / "omniglot", "images_background", BG, as_zip=True, seed=0)
    before = Omniglot(tmp_path, split="background").gather(torch.arange(15))
    (tmp_path / "omniglot" / "images_background.zip").unlink()
    files = fake_omniglot(tmp_path / "omniglot", "images_background", BG, as_zip=True, seed=1)
    after = Omniglot(tmp_path, split="background").gather(torch.arange(15))
    assert not torch.equal(before, after)
    expected = np.stack([_expected(p) for imgs in _by_class(files).values() for p in imgs])
    np.testing.assert_array_equal(after[:, 0].numpy(), expected)


def test_cache_key_includes_image_size(tmp_path, isolated_cache, fake_omniglot):
    fake_omniglot(tmp_path / "omniglot", "images_background", BG)
    assert Omniglot(tmp_path, split="background", image_size=14).gather(torch.arange(2)).shape == (2, 1, 14, 14)
    assert Omniglot(tmp_path, split="background", image_size=28).gather(torch.arange(2)).shape == (2, 1, 28, 28)
    names = sorted(p.name for p in (isolated_cache / "omniglot").glob("*.pt"))
    assert len(names) == 2 and "-14px-" in names[0] and "-28px-" in names[1]


def test_explicit_cache_dir_and_read_only_data_root(tmp_path, isolated_cache, fake_omniglot):
    fake_omniglot(tmp_path / "data" / "omniglot", "images_background", BG, as_zip=True)
    (tmp_path / "data" / "omniglot" / "images_background.zip").chmod(0o444)
    Omniglot(tmp_path / "data", split="background", cache_dir=tmp_path / "mine")
    assert len(list((tmp_path / "mine").glob("*.pt"))) == 1
    assert not (isolated_cache / "omniglot").exists()
    assert sorted(p.name for p in (tmp_path / "data" / "omniglot").iterdir()) == ["images_background.zip"]


def test_corrupt_cache_is_rebuilt(tmp_path, isolated_cache, fake_omniglot):
    fake_omniglot(tmp_path / "omniglot", "images_background", BG)
    good = Omniglot(tmp_path, split="background").gather(torch.arange(15))
    (cache_file,) = (isolated_cache / "omniglot").glob("*.pt")
    cache_file.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="Omniglot cache"):
        again = Omniglot(tmp_path, split="background").gather(torch.arange(15))
    assert torch.equal(good, again)


def test_unwritable_cache_warns_and_still_loads(tmp_path, isolated_cache, monkeypatch, fake_omniglot):
    fake_omniglot(tmp_path / "omniglot", "images_background", BG)

    def refuse(obj, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(omniglot_module, "atomic_torch_save", refuse)
    with pytest.warns(UserWarning, match="could not write the Omniglot cache"):
        ds = Omniglot(tmp_path, split="background")
    assert len(ds) == 15


# -- errors ---------------------------------------------------------------------------------------------------


def test_missing_data_names_the_path_and_the_fix(tmp_path, isolated_cache):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        Omniglot(root, split="background")
    msg = str(info.value)
    assert str(root / "omniglot" / "images_background") in msg and str(root / "images_background") in msg
    assert "download=True" in msg and "META_LEARNING_DATA" in msg
    with pytest.raises(FileNotFoundError, match="download=True"):
        Omniglot(root, split="train")


def test_root_defaults_to_meta_learning_data(tmp_path, isolated_cache, monkeypatch, fake_omniglot):
    fake_omniglot(tmp_path / "omniglot", "images_background", BG)
    monkeypatch.setenv("META_LEARNING_DATA", str(tmp_path))
    assert len(Omniglot(split="background")) == 15


def test_corrupt_zip_raises_naming_the_file(tmp_path, isolated_cache):
    (tmp_path / "omniglot").mkdir()
    bad = tmp_path / "omniglot" / "images_background.zip"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(RuntimeError, match=r"images_background\.zip.*not a valid zip.*download=True"):
        Omniglot(tmp_path, split="background")


def test_corrupt_png_raises_naming_the_file(tmp_path, isolated_cache, fake_omniglot):
    files = fake_omniglot(tmp_path / "omniglot", "images_background", BG)
    rel = sorted(files)[2]
    (tmp_path / "omniglot" / rel).write_bytes(b"\x89PNG broken")
    with pytest.raises(RuntimeError, match=Path(rel).name):
        Omniglot(tmp_path, split="background")


def test_empty_set_folder_raises(tmp_path, isolated_cache):
    (tmp_path / "omniglot" / "images_background" / "Alpha").mkdir(parents=True)
    with pytest.raises(RuntimeError, match=r"holds no images.*<Alphabet>/<characterNN>"):
        Omniglot(tmp_path, split="background")


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"split": "training"}, ValueError, r"split='training'.*'background'.*'trainval'"),
        ({"image_size": 0}, ValueError, "image_size=0"),
        ({"image_size": 28.0}, TypeError, "image_size must be an int"),
        ({"rotations": (45,)}, ValueError, r"rotations=\(45,\).*\(0, 90, 180, 270\)"),
        ({"rotations": ()}, ValueError, "rotations"),
        ({"rotations": (0, 0)}, ValueError, "duplicates"),
        ({"rotations": 90}, TypeError, "rotations must be a sequence"),
    ],
)
def test_invalid_arguments(tmp_path, isolated_cache, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Omniglot(tmp_path, **{"split": "background", **kwargs})


# -- completeness of the official sets ---------------------------------------------------------------------------


def test_check_complete_refuses_a_partial_set_naming_the_path_and_the_counts(tmp_path, isolated_cache, fake_omniglot):
    # 5 characters with all 20 drawings each: what a partially extracted images_background looks like
    fake_omniglot(tmp_path / "omniglot", "images_background", BG, drawers=20, size=8)
    folder = tmp_path / "omniglot" / "images_background"
    with pytest.raises(ValueError) as info:
        Omniglot(tmp_path, split="background", image_size=8, check_complete=True)
    msg = str(info.value)
    assert str(folder) in msg and "holds 5 characters and 100 drawings" in msg
    assert "964 characters x 20 drawings" in msg and "check_complete=False" in msg
    with pytest.raises(ValueError, match="holds 5 characters"):  # a Vinyals split checks each set it reads
        Omniglot(tmp_path, split="train", image_size=8, check_complete=True)
    assert len(Omniglot(tmp_path, split="background", image_size=8)) == 100  # default: a subset is fine
    with pytest.raises(TypeError, match="check_complete must be a bool"):
        Omniglot(tmp_path, split="background", check_complete="no")


@pytest.fixture
def official_counts_of_bg(monkeypatch):
    """Make the BG fixture (5 characters x 3 drawings) the 'official' background set."""
    monkeypatch.setitem(omniglot_module.OFFICIAL_CHARACTERS, "images_background", 5)
    monkeypatch.setattr(omniglot_module, "DRAWINGS_PER_CHARACTER", 3)


@pytest.mark.parametrize("as_zip", [False, True])
def test_the_check_counts_drawings_per_character(
    tmp_path, isolated_cache, official_counts_of_bg, as_zip, fake_omniglot
):
    files = fake_omniglot(tmp_path / "omniglot", "images_background", BG, as_zip=as_zip)
    assert len(Omniglot(tmp_path, split="background", check_complete=True)) == 15  # complete: accepted
    dropped = sorted(files)[10]  # one drawing of the 4th character
    assert dropped.startswith("images_background/Beta/character02/")
    if as_zip:
        archive = tmp_path / "omniglot" / "images_background.zip"
        with zipfile.ZipFile(archive) as zf:
            kept = {name: zf.read(name) for name in zf.namelist() if name != dropped}
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in kept.items():
                zf.writestr(name, data)
    else:
        (tmp_path / "omniglot" / dropped).unlink()
    with pytest.raises(ValueError, match=r"holds 5 characters and 14 drawings, 1 characters without exactly 3 "
                       r"drawings; e\.g\. 'Beta/character02' has 2"):  # fmt: skip
        Omniglot(tmp_path, split="background", check_complete=True)


def test_the_published_archive_is_trusted_by_its_sha256(tmp_path, isolated_cache, monkeypatch, fake_omniglot):
    fake_omniglot(tmp_path / "omniglot", "images_background", BG, as_zip=True)
    archive = tmp_path / "omniglot" / "images_background.zip"
    with pytest.raises(ValueError, match="holds 5 characters"):
        Omniglot(tmp_path, split="background", check_complete=True)
    monkeypatch.setitem(omniglot_module.RESOURCES, "images_background", ("unused", sha256_file(archive)))
    assert len(Omniglot(tmp_path, split="background", check_complete=True)) == 15


def test_summarize_sets_counts_without_decoding(tmp_path, isolated_cache, monkeypatch, fake_omniglot):
    fake_omniglot(tmp_path / "omniglot", "images_background", BG, as_zip=True)
    fake_omniglot(tmp_path, "images_evaluation", EV, drawers=20)
    monkeypatch.setattr(omniglot_module, "_decode_set", _fail_decode)
    sets = omniglot_module.summarize_sets(tmp_path)
    bg, ev = sets["images_background"], sets["images_evaluation"]
    assert (bg.path, bg.characters, bg.images, bg.complete) == (
        tmp_path / "omniglot" / "images_background.zip",
        5,
        15,
        False,
    )
    assert (ev.path, ev.characters, ev.images) == (tmp_path / "images_evaluation", 2, 40)
    monkeypatch.setitem(omniglot_module.OFFICIAL_CHARACTERS, "images_evaluation", 2)
    assert ev.complete  # 2 characters x 20 drawings
    assert omniglot_module.summarize_sets(tmp_path / "nowhere") == {
        "images_background": None,
        "images_evaluation": None,
    }


# -- download (never against the network) --------------------------------------------------------------------


def test_download_fetches_checks_and_keeps_the_archive(tmp_path, isolated_cache, monkeypatch, fake_omniglot):
    server = tmp_path / "server"
    fake_omniglot(server, "images_background", BG, as_zip=True)
    archive = server / "images_background.zip"
    monkeypatch.setitem(omniglot_module.RESOURCES, "images_background", (archive.as_uri(), sha256_file(archive)))
    root = tmp_path / "root"
    ds = Omniglot(root, split="background", download=True)
    kept = root / "omniglot" / "images_background.zip"
    assert kept.read_bytes() == archive.read_bytes()
    assert len(ds) == 15 and ds.sources["images_background"].kind == "zip"
    # second time: found, nothing fetched (a broken URL would raise otherwise)
    monkeypatch.setitem(omniglot_module.RESOURCES, "images_background", ("file:///nonexistent.zip", "0" * 64))
    assert len(Omniglot(root, split="background", download=True)) == 15


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, isolated_cache, monkeypatch, fake_omniglot):
    server = tmp_path / "server"
    fake_omniglot(server, "images_background", BG, as_zip=True)
    monkeypatch.setitem(
        omniglot_module.RESOURCES, "images_background", ((server / "images_background.zip").as_uri(), "a" * 64)
    )
    with pytest.raises(RuntimeError, match="sha256"):
        Omniglot(tmp_path / "root", split="background", download=True)
    assert list((tmp_path / "root" / "omniglot").iterdir()) == []


def test_official_checksums_are_sha256_digests():
    for url, digest in omniglot_module.RESOURCES.values():
        assert url.startswith("https://raw.githubusercontent.com/brendenlake/omniglot/")
        assert len(digest) == 64 and int(digest, 16) >= 0


# -- the packaged Vinyals split lists -------------------------------------------------------------------------


def test_vinyals_lists_have_the_standard_counts_and_are_disjoint():
    lists = {s: read_vinyals_split(s) for s in ("train", "val", "test", "trainval")}
    assert {s: len(v) for s, v in lists.items()} == {"train": 1028, "val": 172, "test": 423, "trainval": 1200}
    for chars in lists.values():
        assert len(set(chars)) == len(chars)
        assert all(len(c.split("/")) == 2 and c.split("/")[1].startswith("character") for c in chars)
    train, val, test = (set(lists[s]) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert set(lists["trainval"]) == train | val
    # Gurmukhi is the one alphabet shared by two splits (characters 01-41 train, 42-45 test)
    assert "Gurmukhi/character41" in train and "Gurmukhi/character42" in test


# -- real data (../shared/data) --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_cache(data_root, omniglot_session_cache) -> Path:
    """Preprocess real Omniglot once for the session (both sets, ~5-10 s)."""
    Omniglot(data_root, split="train", cache_dir=omniglot_session_cache)
    return omniglot_session_cache


EXPECTED = {
    "background": (964, 19280),
    "evaluation": (659, 13180),
    "train": (4112, 82240),
    "val": (688, 13760),
    "test": (1692, 33840),
    "trainval": (4800, 96000),
}


def test_real_split_counts_and_disjointness(data_root, real_cache):
    chars = {}
    for split, (n_classes, n_examples) in EXPECTED.items():
        ds = Omniglot(data_root, split=split, cache_dir=real_cache, check_complete=True)  # 964 + 659 x 20
        assert (ds.num_classes, len(ds)) == (n_classes, n_examples), split
        assert np.bincount(ds.labels).tolist() == [20] * n_classes
        chars[split] = set(ds.characters)
    assert not chars["train"] & chars["val"] and not chars["train"] & chars["test"]
    assert not chars["val"] & chars["test"]
    assert chars["train"] | chars["val"] | chars["test"] == chars["background"] | chars["evaluation"]
    assert len(chars["background"] | chars["evaluation"]) == 1623


def test_real_second_load_is_fast(data_root, real_cache):
    times = []
    for _ in range(2):
        start = time.perf_counter()
        Omniglot(data_root, split="train", cache_dir=real_cache)
        times.append(time.perf_counter() - start)
    assert min(times) < 2.0, times


def test_real_pixels_match_the_independent_28px_reference(data_root, real_cache):
    ref_path = data_root / "omniglot" / "omniglot_28x28_lanczos.npz"
    if not ref_path.is_file():
        pytest.skip(f"{ref_path} not found")
    with np.load(ref_path) as ref:  # read each array once: NpzFile decompresses on every access
        images, alphabets, characters = ref["images"], ref["alphabet"], ref["character"]
    row = {f"{a}/{c}": i for i, (a, c) in enumerate(zip(alphabets, characters, strict=True))}
    for split in ("background", "evaluation"):
        ds = Omniglot(data_root, split=split, cache_dir=real_cache)
        ours = np.rint(ds.gather(torch.arange(len(ds)))[:, 0].numpy() * 255).astype(np.uint8)
        theirs = 255 - images[[row[c] for c in ds.characters]].reshape(ours.shape)
        np.testing.assert_array_equal(ours, theirs)


def test_real_rotation_and_gather_speed(data_root, real_cache):
    ds = Omniglot(data_root, split="train", cache_dir=real_cache)
    label_90 = ds.class_names.index("Angelic/character01@90")
    assert ds.class_names[label_90 - 1] == "Angelic/character01"
    x90 = ds.gather(torch.from_numpy(np.flatnonzero(ds.labels == label_90)))
    x0 = ds.gather(torch.from_numpy(np.flatnonzero(ds.labels == label_90 - 1)))
    assert torch.equal(x90, torch.rot90(x0, 1, dims=(2, 3)))
    # a 60-way 1-shot 5-query episode: 360 images
    idx = torch.randint(len(ds), (360,), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        ds.gather(idx)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        ds.gather(idx)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.010, times


def test_an_explicit_meta_learning_data_without_omniglot_fails_instead_of_skipping(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "omniglot" / "images_background").mkdir(parents=True)  # the evaluation set is missing
    test = f"{Path(__file__).resolve()}::test_real_second_load_is_fast"
    env = {**os.environ, "META_LEARNING_DATA": str(tmp_path)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", test]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 1, out.stdout[-2000:]
    assert "lacks images_evaluation" in out.stdout and "1 error" in out.stdout
