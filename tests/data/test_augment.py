"""RandomShift against a per-pixel reference; AugmentedSource keeps the source's episodes and resumes exactly."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from meta_learning import PrototypicalNetwork
from meta_learning.config import DataConfig, ExperimentConfig
from meta_learning.data import AugmentedSource, EpisodeSampler, RandomShift
from meta_learning.experiment import training_sampler
from meta_learning.training import fit


def reference_shift(x, dy, dx, fill):
    """Pixel by pixel: out[i, :, r, c] = x[i, :, r - dy[i], c - dx[i]] inside the image, else fill."""
    out = torch.full_like(x, fill)
    _, _, h, w = x.shape
    for i in range(x.shape[0]):
        for r in range(h):
            for c in range(w):
                rr, cc = r - int(dy[i]), c - int(dx[i])
                if 0 <= rr < h and 0 <= cc < w:
                    out[i, :, r, c] = x[i, :, rr, cc]
    return out


class Images:
    """A map-style dataset of random 1 x 8 x 8 images, ``per_class`` of each of ``classes`` classes."""

    def __init__(self, classes=6, per_class=5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(classes * per_class, 1, 8, 8, generator=g)
        self.labels = np.repeat(np.arange(classes), per_class)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i])


def offset_of(original, shifted, s):
    """The (dy, dx) in [-s, s]^2 that turns ``original`` (C, H, W) into ``shifted``; None if no shift does."""
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            ref = reference_shift(original[None], [dy], [dx], 0.0)[0]
            if torch.equal(ref, shifted):
                return dy, dx
    return None


@pytest.mark.parametrize("channels_last", [False, True])
def test_shift_matches_the_per_pixel_reference(channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 3, 6, 5, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    dy = torch.tensor([0, 2, -2, 1, -1, 2, 0])
    dx = torch.tensor([0, -2, 2, 0, 1, 2, -1])
    out = RandomShift(2, fill=0.5).shift(x, dy, dx)
    assert torch.equal(out, reference_shift(x, dy, dx, 0.5))
    assert out.is_contiguous()


def test_random_offsets_cover_the_square_deterministically_and_leave_the_input_alone():
    shift = RandomShift(1)
    x = torch.zeros(400, 1, 5, 5)
    x[:, 0, 2, 2] = 1.0  # one ink pixel in the middle: its new place is the offset
    before = x.clone()
    out = shift(x, torch.Generator().manual_seed(3))
    assert torch.equal(x, before)
    where = out[:, 0].flatten(1).argmax(1)
    dy, dx = where // 5 - 2, where % 5 - 2
    assert out.sum() == 400  # nothing falls off with s = 1
    seen = set(zip(dy.tolist(), dx.tolist(), strict=True))
    assert seen == {(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)}
    again = shift(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


def test_zero_shift_is_an_identity_copy():
    x = torch.rand(4, 1, 5, 5)
    out = RandomShift(0)(x, torch.Generator())
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)
    with pytest.raises(TypeError, match="max_shift"):
        RandomShift(1.5)
    with pytest.raises(TypeError, match="fill"):
        RandomShift(1, fill="zero")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        RandomShift(1)(torch.zeros(5, 5))
    with pytest.raises(ValueError, match="max_shift=5 must be smaller"):
        RandomShift(5)(torch.zeros(2, 1, 5, 8))
    with pytest.raises(TypeError, match="sample"):
        AugmentedSource(object(), RandomShift(1))
    with pytest.raises(TypeError, match="transform"):
        AugmentedSource(EpisodeSampler(Images(), 3, 1, 2), "shift")


def test_augmented_episodes_are_the_sources_episodes_shifted():
    data = Images()
    plain = EpisodeSampler(data, 3, 1, 2, seed=4)
    augmented = AugmentedSource(EpisodeSampler(data, 3, 1, 2, seed=4), RandomShift(1), seed=9)
    moved = 0
    for _ in range(5):
        a, b = plain.sample(), augmented.sample()
        assert a.classes == b.classes  # the source's stream is not disturbed by augmenting it
        assert torch.equal(a.support_y, b.support_y) and torch.equal(a.query_y, b.query_y)
        for xa, xb in zip(torch.cat([a.support_x, a.query_x]), torch.cat([b.support_x, b.query_x]), strict=True):
            offset = offset_of(xa, xb, 1)
            assert offset is not None
            moved += offset != (0, 0)
    assert moved > 10  # 8 of 9 offsets move the image
    fixed = augmented.evaluation_episodes(3, seed=2)  # evaluation: the source's episodes, not augmented
    for e, f in zip(plain.evaluation_episodes(3, seed=2), fixed, strict=True):
        assert torch.equal(e.support_x, f.support_x) and torch.equal(e.query_x, f.query_x)


def test_state_dict_restores_both_streams():
    data = Images()

    def make():
        return AugmentedSource(EpisodeSampler(data, 3, 1, 2, seed=1), RandomShift(2), seed=5)

    first = make()
    for _ in range(3):
        first.sample()
    state = first.state_dict()
    expected = [first.sample() for _ in range(3)]
    second = make()
    second.load_state_dict(state)
    for e, f in zip(expected, [second.sample() for _ in range(3)], strict=True):
        assert e.classes == f.classes and torch.equal(e.query_x, f.query_x) and torch.equal(e.support_x, f.support_x)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 8))

    def forward(self, x):
        return self.net(x)


def test_a_killed_augmented_run_resumes_to_the_uninterrupted_weights(tmp_path):
    data = Images(classes=8, per_class=6)

    def setup():
        torch.manual_seed(0)
        learner = PrototypicalNetwork(Tiny())
        return learner, AugmentedSource(EpisodeSampler(data, 4, 1, 3, seed=0), RandomShift(2), seed=1)

    kw = {"num_episodes": 12, "lr": 1e-2, "checkpoint_every": 4, "progress": False}
    learner, stream = setup()
    fit(learner, stream, run_dir=tmp_path / "a", **kw)
    reference = {k: v.clone() for k, v in learner.state_dict().items()}

    class Stop(Exception):
        pass

    def stop_at_10(step, record):
        if step == 10:
            raise Stop

    learner, stream = setup()
    with pytest.raises(Stop):
        fit(learner, stream, run_dir=tmp_path / "b", callbacks=[stop_at_10], **kw)
    learner, stream = setup()
    stream.sample()  # a fresh stream in another state: resuming must restore it from the checkpoint
    fit(learner, stream, run_dir=tmp_path / "b", resume=True, **kw)
    for k, v in learner.state_dict().items():
        assert torch.equal(v, reference[k]), k


def test_config_train_shift_builds_the_augmented_stream():
    data = Images()
    cfg = ExperimentConfig(data=DataConfig(train_way=3, train_shot=1, train_query=2, image_size=8))
    assert isinstance(training_sampler(cfg, data), EpisodeSampler)
    stream = training_sampler(replace(cfg, data=replace(cfg.data, train_shift=2)), data)
    assert isinstance(stream, AugmentedSource) and stream.transform.max_shift == 2
    assert stream.source.generator.initial_seed() == cfg.seed != stream.generator.initial_seed()
    largest = replace(cfg, seed=2**64 - 1, data=replace(cfg.data, train_shift=1))  # still a valid generator seed
    assert isinstance(training_sampler(largest, data), AugmentedSource)
    with pytest.raises(ValueError, match="train_shift"):
        DataConfig(train_shift=-1)
    with pytest.raises(ValueError, match="train_shift=28 must be smaller than image_size=28"):
        DataConfig(train_shift=28)
