from __future__ import annotations

import pytest
import torch

from meta_learning import Conv4, PrototypicalNetwork, RelationNetwork, ResNet12
from meta_learning.config import ExperimentConfig, LearnerConfig, ModelConfig, from_dict
from meta_learning.experiment import build_learner, resolve_config_path, shipped_configs


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


def test_shipped_configs_resolve_and_build():
    names = shipped_configs()
    assert len(names) == 10
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
