from __future__ import annotations

import pytest
import torch

from meta_learning.data import Episode, EpisodeBatch


def make_episode(n=3, k=2, q=4, dim=5, seed=0, classes=None):
    g = torch.Generator().manual_seed(seed)
    return Episode(
        torch.randn(n * k, dim, generator=g),
        torch.arange(n).repeat_interleave(k),
        torch.randn(n * q, dim, generator=g),
        torch.arange(n).repeat_interleave(q),
        classes=classes if classes is not None else tuple(range(10, 10 + n)),
    )


def test_episode_reports_n_way_and_kind():
    ep = make_episode(n=4)
    assert ep.n_way == 4
    assert ep.is_classification
    reg = Episode(torch.randn(5, 1), torch.randn(5, 1), torch.randn(7, 1), torch.randn(7, 1))
    assert not reg.is_classification and reg.n_way == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"support_y": torch.tensor([0, 1])}, "support_y has shape"),
        ({"query_x": torch.randn(12, 6)}, "but query_x examples have"),
        ({"query_y": torch.full((12,), 3)}, "query_y has label 3"),
        ({"support_y": torch.tensor([0, 0, 2, 2, 2, 2])}, "every label 0..2"),
        ({"support_y": torch.tensor([0, 0, 1, 1, -1, 2])}, "negative label"),
        ({"classes": (1, 2)}, "Episode.classes has 2 entries"),
        ({"query_y": torch.zeros(12)}, "both must be integer labels"),
    ],
)
def test_episode_validation_names_the_problem(kwargs, message):
    ep = make_episode()
    fields = {
        "support_x": ep.support_x,
        "support_y": ep.support_y,
        "query_x": ep.query_x,
        "query_y": ep.query_y,
        "classes": ep.classes,
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Episode(**fields)


def test_episode_rejects_non_tensors():
    with pytest.raises(TypeError, match="support_x must be a torch.Tensor"):
        Episode([1, 2], torch.tensor([0, 1]), torch.zeros(2, 1), torch.tensor([0, 1]))


def test_episode_is_frozen():
    ep = make_episode()
    with pytest.raises(AttributeError):
        ep.support_x = torch.zeros(1)  # type: ignore[misc]


def test_batch_stacks_and_unstacks_exactly():
    eps = [make_episode(seed=s, classes=(s, s + 1, s + 2)) for s in range(4)]
    batch = EpisodeBatch.from_episodes(eps)
    assert len(batch) == 4
    assert batch.support_x.shape == (4, 6, 5) and batch.query_y.shape == (4, 12)
    assert batch.classes.tolist() == [[s, s + 1, s + 2] for s in range(4)]
    for original, restored in zip(eps, batch, strict=True):
        assert torch.equal(original.support_x, restored.support_x)
        assert torch.equal(original.query_y, restored.query_y)
        assert original.classes == restored.classes


def test_batch_refuses_mixed_shapes():
    with pytest.raises(ValueError, match=r"episodes\[1\] has support"):
        EpisodeBatch.from_episodes([make_episode(k=2), make_episode(k=3)])
    with pytest.raises(ValueError, match="episodes is empty"):
        EpisodeBatch.from_episodes([])


def test_batch_checks_batch_size():
    b = EpisodeBatch.from_episodes([make_episode(), make_episode()])
    with pytest.raises(ValueError, match="disagree on the batch size"):
        EpisodeBatch(b.support_x, b.support_y, b.query_x, b.query_y, b.classes[:1])


def _batch_fields(batch: EpisodeBatch) -> dict[str, torch.Tensor]:
    return {k: getattr(batch, k) for k in ("support_x", "support_y", "query_x", "query_y", "classes")}


@pytest.mark.parametrize(
    ("episode", "field", "value", "message"),
    [
        # episode 1 alone breaks the rules that a single Episode enforces; the others are valid
        (1, "support_y", torch.tensor([0, 0, 2, 2, 2, 2]), r"episode 1: support_y must use every label 0..2"),
        (2, "query_y", torch.tensor([0, 1, 2, 1] * 3), None),  # valid: the control
        (2, "support_y", torch.tensor([0, 0, 1, 1, 1, 1]), r"episode 2: query_y has label 2 but .* labels 0..1"),
    ],
)
def test_batch_validates_every_episode_like_episode_does(episode, field, value, message):
    fields = _batch_fields(EpisodeBatch.from_episodes([make_episode(seed=s) for s in range(3)]))
    fields[field] = fields[field].clone()
    fields[field][episode] = value
    single = {k: v[episode] for k, v in fields.items() if k != "classes"}
    if message is None:
        EpisodeBatch(**fields)
        Episode(**single)
        return
    with pytest.raises(ValueError, match=message):
        EpisodeBatch(**fields)
    with pytest.raises(ValueError, match=message.removeprefix(f"episode {episode}: ")):
        Episode(**single)  # the reference: the same episode on its own is refused for the same reason


def test_batch_checks_the_class_ids():
    fields = _batch_fields(EpisodeBatch.from_episodes([make_episode(seed=s) for s in range(2)]))
    with pytest.raises(ValueError, match=r"classes has 2 ids per episode but episode 0's labels span n_way=3"):
        EpisodeBatch(**{**fields, "classes": fields["classes"][:, :2]})
    with pytest.raises(ValueError, match=r"classes has shape \(6,\) and dtype torch.int64; expected integer"):
        EpisodeBatch(**{**fields, "classes": fields["classes"].reshape(-1)})
    with pytest.raises(ValueError, match="dtype torch.float32"):
        EpisodeBatch(**{**fields, "classes": fields["classes"].float()})
    assert len(EpisodeBatch(**{**fields, "classes": fields["classes"][:, :0]})) == 2  # no ids: allowed
