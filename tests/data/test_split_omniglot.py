"""Split Omniglot on fake files in the official layout: alphabets as experiences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meta_learning.data.split_omniglot import SplitOmniglot

ALPHABETS = {"Gamma": 2, "Alpha": 3, "Beta": 1}


def test_alphabets_become_experiences(tmp_path, isolated_cache, fake_omniglot):
    files = fake_omniglot(tmp_path / "omniglot", "images_background", ALPHABETS, drawers=4)
    stream = SplitOmniglot(tmp_path, "task", test_fraction=0.25)
    assert [len(e.classes) for e in stream] == [3, 1, 2]  # sorted alphabet names: Alpha, Beta, Gamma
    assert stream.num_classes == 3 and stream.multi_head
    for exp in stream:
        n = len(exp.classes)
        assert len(exp.train) == 3 * n and len(exp.test) == n  # 4 drawings: 3 train, 1 test per character
        assert sorted(set(exp.train.labels.tolist())) == list(range(n))
    # pixels: ink 1.0 / background 0.0, as Omniglot gives them
    x, _ = stream[0].train.tensors()
    assert x.shape[1:] == (1, 28, 28) and set(torch.unique(x).tolist()) == {0.0, 1.0}
    src = [p for rel, p in sorted(files.items()) if rel.split("/")[1] == "Alpha"]
    got = torch.cat([stream[0].train.tensors()[0], stream[0].test.tensors()[0]])[:, 0].numpy()
    expected = np.stack([1.0 - p.astype(np.float32) / 255 for p in src])
    assert sorted(map(bytes, got.astype(np.uint8))) == sorted(map(bytes, expected.astype(np.uint8)))


def test_chosen_alphabets_class_scenario_and_errors(tmp_path, isolated_cache, fake_omniglot):
    fake_omniglot(tmp_path / "omniglot", "images_background", ALPHABETS, drawers=4)
    stream = SplitOmniglot(tmp_path, "class", alphabets=["Gamma", "Alpha"])
    assert [len(e.classes) for e in stream] == [2, 3] and stream.num_classes == 5
    assert sorted(set(stream[1].train.labels.tolist())) == [2, 3, 4]
    again = SplitOmniglot(tmp_path, "class", alphabets=["Gamma", "Alpha"])
    assert torch.equal(stream[0].test.x, again[0].test.x)
    with pytest.raises(ValueError, match="Delta"):
        SplitOmniglot(tmp_path, alphabets=["Delta"])
    with pytest.raises(TypeError, match="alphabets"):
        SplitOmniglot(tmp_path, alphabets="Alpha")
    with pytest.raises(ValueError, match="split='train'"):
        SplitOmniglot(tmp_path, split="train")
