from __future__ import annotations

import pytest
import torch

from meta_learning import Conv4, PrototypicalNetwork, RelationNetwork, ResNet12
from meta_learning.config import ExperimentConfig, LearnerConfig, ModelConfig, TrainConfig, from_dict
from meta_learning.experiment import (
    build_learner,
    prepare_learner,
    resolve_config_path,
    shipped_configs,
    training_autocast,
)
from meta_learning.training import autocast_dtype


def test_build_learner_follows_the_config():
    cfg = ExperimentConfig()
    pn = build_learner(cfg)
    assert isinstance(pn, PrototypicalNetwork) and isinstance(pn.encoder, Conv4) and pn.temperature is None
    cos = build_learner(from_dict(ExperimentConfig, {"learner": {"distance_metric": "cosine"},
                                                    "model": {"backbone": "resnet12", "in_channels": 3}}))  # fmt: skip
    assert isinstance(cos.encoder, ResNet12) and cos.temperature is not None
    rn = build_learner(ExperimentConfig(learner=LearnerConfig(name="relationnet", relation_hidden=4)))
    assert isinstance(rn, RelationNetwork) and rn.relation.fc[0].out_features == 4
    with pytest.raises(ValueError, match="model.backbone='mlp' does not take images"):
        build_learner(ExperimentConfig(model=ModelConfig(backbone="mlp")))


def test_prepare_learner_and_autocast_follow_the_train_section():
    plain = ExperimentConfig()
    fast = ExperimentConfig(train=TrainConfig(precision="bf16", channels_last=True))
    # the last convolution (64 -> 64: with one input channel both layouts coincide)
    conv = [m for m in prepare_learner(fast).modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    conv = [m for m in prepare_learner(plain).modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert conv.weight.is_contiguous()
    assert training_autocast(fast) is torch.bfloat16 and training_autocast(plain) is None
    with pytest.raises(ValueError, match="precision='fp16' is not supported; allowed: fp32, bf16"):
        autocast_dtype("fp16")


def test_shipped_configs_resolve_and_build():
    names = shipped_configs()
    assert len(names) == 11
    for name in names:
        path = resolve_config_path(name)
        assert path.name == f"{name}.yaml"
    with pytest.raises(FileNotFoundError, match="shipped configs: maml_omniglot_20w1s, .*protonet_omniglot_5w1s"):
        resolve_config_path("nope")


def test_relation_network_config_runs_on_omniglot_sized_input():
    rn = build_learner(ExperimentConfig(learner=LearnerConfig(name="relationnet")))
    logits = rn.predict(torch.rand(5, 1, 28, 28), torch.arange(5), torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 5)


def test_shipped_omniglot_configs_fit_the_twenty_drawings_per_character():
    from meta_learning.config import load_config

    for name in shipped_configs():
        d = load_config(resolve_config_path(name)).data
        if d.dataset == "omniglot":
            assert d.train_shot + d.train_query <= 20, name
            assert d.test_shot + d.test_query <= 20, name


def test_relationnet_configs_use_the_papers_queries_per_class():
    from meta_learning.config import load_config

    # Sung et al. 2018, sec. 4.1: 19 / 15 / 10 / 5 queries for 5w1s / 5w5s / 20w1s / 20w5s on Omniglot
    paper = {(5, 1): 19, (5, 5): 15, (20, 1): 10, (20, 5): 5}
    relation = [n for n in shipped_configs() if n.startswith("relationnet_omniglot_")]
    assert len(relation) == 4
    for name in relation:
        d = load_config(resolve_config_path(name)).data
        assert d.train_query == paper[(d.train_way, d.train_shot)], name


def test_config_values_a_learner_would_ignore_are_errors():
    with pytest.raises(ValueError, match=r"model.backbone='resnet12' with learner.name='relationnet'.*'conv4'"):
        build_learner(
            from_dict(ExperimentConfig, {"learner": {"name": "relationnet"}, "model": {"backbone": "resnet12"}})
        )
    with pytest.raises(
        ValueError, match=r"model.hidden_channels=32 with model.backbone='resnet12'.*allowed value is 64"
    ):
        build_learner(from_dict(ExperimentConfig, {"model": {"backbone": "resnet12", "hidden_channels": 32}}))
    rn = build_learner(
        from_dict(ExperimentConfig, {"learner": {"name": "relationnet"}, "model": {"hidden_channels": 16}})
    )
    assert rn.relation.convs[0][0].out_channels == 16  # what the relation network does read


def test_evaluation_overrides_are_checked_not_replaced_by_the_config():
    from _toy import ToyDataset
    from meta_learning.experiment import evaluation_sampler

    cfg = ExperimentConfig()  # test_way 5, test_shot 1
    ds = ToyDataset([20] * 8)
    assert (evaluation_sampler(cfg, ds).n_way, evaluation_sampler(cfg, ds).k_shot) == (5, 1)
    assert (evaluation_sampler(cfg, ds, 3, 2).n_way, evaluation_sampler(cfg, ds, 3, 2).k_shot) == (3, 2)
    with pytest.raises(ValueError, match="n_way=0 but it must be a positive integer"):
        evaluation_sampler(cfg, ds, n_way=0)
    with pytest.raises(ValueError, match="k_shot=0 but it must be a positive integer"):
        evaluation_sampler(cfg, ds, k_shot=0)


def _run_with(tmp_path, *names):
    """A run folder of the default config with the named checkpoints (weights: a fixed random draw each)."""
    from meta_learning.config import save_config
    from meta_learning.training.checkpoint import save_checkpoint

    cfg = ExperimentConfig()
    save_config(cfg, tmp_path / "config.yaml")
    weights = {}
    for i, name in enumerate(names):
        torch.manual_seed(i)
        weights[name] = build_learner(cfg).state_dict()
        save_checkpoint(tmp_path / "checkpoints" / f"{name}.pt", {"step": i, "model": weights[name]})
    return weights


def _same(learner, state):
    return all(torch.equal(v, state[k]) for k, v in learner.state_dict().items())


def test_load_run_never_swaps_an_explicit_checkpoint(tmp_path):
    from meta_learning.experiment import load_run

    weights = _run_with(tmp_path, "last")
    with pytest.raises(FileNotFoundError) as info:
        load_run(tmp_path, "best")
    assert str(tmp_path / "checkpoints" / "best.pt") in str(info.value)
    assert "checkpoint='last' is available" in str(info.value)
    assert _same(load_run(tmp_path, "last")[1], weights["last"])
    with pytest.warns(UserWarning, match=r"no checkpoints/best.pt .*loaded .*last.pt"):  # the default says so
        assert _same(load_run(tmp_path)[1], weights["last"])
    with pytest.raises(ValueError, match="checkpoint='final' is not supported"):
        load_run(tmp_path, "final")


def test_load_run_default_prefers_best(tmp_path, recwarn):
    from meta_learning.experiment import load_run

    weights = _run_with(tmp_path, "best", "last")
    assert _same(load_run(tmp_path)[1], weights["best"]) and not recwarn.list
    (tmp_path / "checkpoints" / "last.pt").unlink()
    (tmp_path / "checkpoints" / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"best.pt or .*last.pt; the folder has no checkpoint"):
        load_run(tmp_path)


FIVE_WAY = {"data": {"train_way": 5, "test_way": 5}}


def _omniglot_like_episode(way: int = 5, seed: int = 0):
    from meta_learning import Episode

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(way)
    return Episode(torch.rand(way, 1, 28, 28, generator=g), y, torch.rand(2 * way, 1, 28, 28, generator=g), y.repeat(2))


def test_maml_section_builds_maml_plus_plus_as_the_constructor_does():
    from meta_learning.maml import MAML, PerStepBatchNorm, per_step_batchnorm
    from meta_learning.models.conv4 import Conv4

    section = {"lr_inner": 0.1, "num_inner_steps": 2, "meta_batch_size": 2, "learn_inner_lr": "per_step",
               "multi_step_loss": True, "msl_iterations": 7, "first_order_iterations": 1,
               "per_step_bn": True}  # fmt: skip
    cfg = from_dict(ExperimentConfig, {**FIVE_WAY, "learner": {"name": "maml"}, "maml": section})
    torch.manual_seed(0)
    built = build_learner(cfg)
    torch.manual_seed(0)
    by_hand = MAML(
        per_step_batchnorm(Conv4(1, 64, num_classes=5, feature_size=64), 2), lr_inner=0.1, num_inner_steps=2,
        meta_batch_size=2, learn_inner_lr="per_step", multi_step_loss=True, msl_iterations=7,
        first_order_iterations=1,
    )  # fmt: skip
    bns = [m for m in built.model.modules() if isinstance(m, PerStepBatchNorm)]
    assert len(bns) == 4 and all(m.num_steps == 2 for m in bns)
    assert all(v.shape == (2,) for v in built.inner_lrs.values()) and len(built.inner_lrs) == len(by_hand.inner_lrs)
    assert (built.msl_iterations, built.first_order_iterations, built.multi_step_loss) == (7, 1, True)
    # the same meta-updates (a first-order one, then a second-order one with the multi-step loss) as by hand
    for i in range(2):
        batch = [_omniglot_like_episode(seed=2 * i), _omniglot_like_episode(seed=2 * i + 1)]
        a, b = built.meta_step(batch), by_hand.meta_step(batch)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    for (na, pa), (nb, pb) in zip(built.named_parameters(), by_hand.named_parameters(), strict=True):
        assert na == nb
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    plain = build_learner(
        from_dict(ExperimentConfig, {**FIVE_WAY, "learner": {"name": "maml"}, "maml": {"num_inner_steps": 2}})
    )
    assert len(plain.inner_lrs) == 0 and not any(isinstance(m, PerStepBatchNorm) for m in plain.modules())


def test_maml_section_refuses_options_its_learner_cannot_take():
    with pytest.raises(ValueError, match=r"maml.learn_inner_lr='per_step' with learner.name='metasgd'"):
        build_learner(from_dict(ExperimentConfig, {**FIVE_WAY, "learner": {"name": "metasgd"},
                                                  "maml": {"learn_inner_lr": "per_step"}}))  # fmt: skip
    with pytest.raises(ValueError, match=r"maml.learn_inner_lr='per_layer' is not supported"):
        from_dict(ExperimentConfig, {"learner": {"name": "maml"}, "maml": {"learn_inner_lr": "per_layer"}})
    with pytest.raises(ValueError, match="msl_iterations"):
        from_dict(ExperimentConfig, {"learner": {"name": "maml"}, "maml": {"msl_iterations": 0}})
    metasgd = build_learner(from_dict(ExperimentConfig, {**FIVE_WAY, "learner": {"name": "metasgd"}}))
    assert metasgd.learn_inner_lr == "per_parameter"
