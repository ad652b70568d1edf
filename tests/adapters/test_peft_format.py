"""PEFT's LoRA file format without PEFT: the layout PEFT 0.21.2 writes for the toy model (recorded below from
``get_peft_model(ToyNet(), LoraConfig(r=2, lora_alpha=4, target_modules=[...], modules_to_save=["head"]))
.save_pretrained``), read and written by us, with the merged weights checked against W + (alpha/r) B A."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from _adapter_models import randomise, toy_inputs, toy_net
from meta_learning.adapters import LoRAAdapter

# what PEFT 0.21.2 wrote for ToyNet (key -> shape); config fields as PEFT wrote them
PEFT_LAYOUT = {
    "base_model.model.conv.lora_A.weight": (2, 2, 3, 3),
    "base_model.model.conv.lora_B.weight": (4, 2, 1, 1),
    "base_model.model.emb.lora_embedding_A": (2, 20),
    "base_model.model.emb.lora_embedding_B": (8, 2),
    "base_model.model.fc1.lora_A.weight": (2, 12),
    "base_model.model.fc1.lora_B.weight": (16, 2),
    "base_model.model.fc2.lora_A.weight": (2, 16),
    "base_model.model.fc2.lora_B.weight": (16, 2),
    "base_model.model.head.bias": (3,),
    "base_model.model.head.weight": (3, 16),
}
PEFT_CONFIG = {
    "peft_type": "LORA", "r": 2, "lora_alpha": 4, "lora_dropout": 0.0, "target_modules": ["emb", "conv", "fc2", "fc1"],
    "modules_to_save": ["head"], "bias": "none", "use_rslora": False, "fan_in_fan_out": False, "use_dora": False,
    "rank_pattern": {}, "alpha_pattern": {}, "task_type": None, "inference_mode": True, "init_lora_weights": True,
}  # fmt: skip


def adapter():
    return LoRAAdapter(
        toy_net(), r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["emb", "conv", "fc1", "fc2"],
        modules_to_save=["head"],
    ).add_adapter()  # fmt: skip


def test_export_has_peft_key_names_shapes_and_config(tmp_path):
    ad = adapter()
    ad.save_pretrained(tmp_path, base_model_name_or_path="toy")
    with safe_open(tmp_path / "adapter_model.safetensors", "pt") as f:
        names = f.keys()
        layout = {k: tuple(f.get_slice(k).get_shape()) for k in names}
        assert f.metadata() == {"format": "pt"}
    assert layout == PEFT_LAYOUT
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert {k: cfg[k] for k in PEFT_CONFIG if k != "target_modules"} == {
        k: v for k, v in PEFT_CONFIG.items() if k != "target_modules"
    }
    assert sorted(cfg["target_modules"]) == sorted(PEFT_CONFIG["target_modules"])
    assert cfg["base_model_name_or_path"] == "toy"
    with pytest.raises(ValueError, match=r"unknown adapter_config.json fields \['rank'\]"):
        ad.save_pretrained(tmp_path, rank=3)


def write_peft_folder(path, seed=0):
    """A folder in PEFT's exact layout with random tensors (as a trained PEFT adapter would hold)."""
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(shape, generator=g) for k, shape in PEFT_LAYOUT.items()}
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    (path / "adapter_config.json").write_text(json.dumps(PEFT_CONFIG))
    return state


def test_import_gives_the_closed_form_merged_weights(tmp_path):
    state = write_peft_folder(tmp_path)
    net = toy_net()
    w_fc1, w_emb = net.fc1.weight.detach().clone(), net.emb.weight.detach().clone()
    ad = LoRAAdapter.from_pretrained(net, tmp_path)
    assert ad.target_names() == ["emb", "conv", "fc1", "fc2"] and ad.adapter_config().scaling == 2.0
    p = "base_model.model."
    ad.merge()
    expected = w_fc1 + 2.0 * state[p + "fc1.lora_B.weight"] @ state[p + "fc1.lora_A.weight"]
    torch.testing.assert_close(net.fc1.base_layer.weight, expected, rtol=0, atol=1e-6)
    expected = w_emb + 2.0 * (state[p + "emb.lora_embedding_B"] @ state[p + "emb.lora_embedding_A"]).T
    torch.testing.assert_close(net.emb.base_layer.weight, expected, rtol=0, atol=1e-6)
    assert torch.equal(net.head.modules_to_save["default"].weight, state[p + "head.weight"])


def test_round_trip_through_the_peft_format(tmp_path):
    ad = adapter()
    randomise(ad.trainable_parameters())
    x = toy_inputs()
    out = ad(*x)
    ad.save_pretrained(tmp_path)
    again = LoRAAdapter.from_pretrained(toy_net(), tmp_path, name="imported")
    assert again.active_adapter == "imported"
    assert torch.equal(again(*x), out)
    both = LoRAAdapter(toy_net(), r=2, target_modules=["fc1"]).add_adapter("local")
    both.load_pretrained(tmp_path, "peft")
    both.set_active("peft")
    assert torch.equal(both(*x), out)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"peft_type": "IA3"}, "only 'LORA' is supported"),
        ({"use_dora": True}, "use_dora=True is not supported"),
        ({"fan_in_fan_out": True}, "fan_in_fan_out=True is not supported"),
        ({"rank_pattern": {"fc1": 4}}, "rank_pattern"),
        ({"bias": "all"}, "bias='all' is not supported"),
    ],
)
def test_unsupported_peft_features_are_refused(tmp_path, change, match):
    write_peft_folder(tmp_path)
    cfg = {**PEFT_CONFIG, **change}
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        LoRAAdapter.from_pretrained(toy_net(), tmp_path)


def test_a_file_from_another_model_structure_is_refused(tmp_path):
    write_peft_folder(tmp_path)
    from torch import nn

    other = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="adapts modules .* that the model lacks"):
        LoRAAdapter.from_pretrained(other, tmp_path)
    with pytest.raises(ValueError, match="not a meta_learning.adapters file .*a PEFT folder"):
        LoRAAdapter(toy_net()).load(tmp_path)
