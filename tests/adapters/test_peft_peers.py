"""Side by side with the real PEFT (0.21, in the peers venv, run in one subprocess): files written by one library load
in the other and give the same outputs; trainable-parameter counts agree for the same config and model."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from _adapter_models import randomise, tiny_bert_config_kwargs, toy_inputs, toy_net
from meta_learning.adapters import IA3Adapter, LoRAAdapter

pytestmark = pytest.mark.peers
PEERS = Path(os.environ.get("META_LEARNING_PEERS_PYTHON", "/work/peers-venv/bin/python"))
SCRIPT = Path(__file__).with_name("_peft_peer.py")
F64 = torch.float64
KINDS = ("toy", "bert")
TARGETS = {"toy": ["emb", "conv", "fc1", "fc2"], "bert": ["query", "value", "intermediate.dense"]}
SAVED = {"toy": ["head"], "bert": ["pooler.dense"]}
IA3_SPEC = {"target_modules": ["key", "value", "output.dense"], "feedforward_modules": ["output.dense"]}
COUNT_CONFIGS = [
    {"kind": "lora", "r": 8, "target_modules": ["query", "value"]},
    {"kind": "lora", "r": 4, "target_modules": ["query", "key", "value", "dense"], "modules_to_save": ["pooler"]},
    {"kind": "ia3", **IA3_SPEC},
]


class Setup:
    """Our models and inputs (the peer rebuilds the same ones from the saved files)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        transformers = pytest.importorskip("transformers")
        torch.manual_seed(0)
        config = transformers.BertConfig(**tiny_bert_config_kwargs(), attn_implementation="eager")
        transformers.BertModel(config).save_pretrained(root / "bert")
        self.bert_cls = transformers.BertModel
        ids, img = toy_inputs(dtype=F64)
        save_file({"ids": ids, "img": img}, str(root / "toy_inputs.safetensors"))
        tokens = torch.tensor([[2, 5, 9, 11, 3, 0, 0], [2, 7, 8, 4, 6, 12, 3]])
        mask = (tokens != 0).long()
        save_file({"input_ids": tokens, "attention_mask": mask}, str(root / "bert_inputs.safetensors"))
        self.inputs = {"toy": (ids, img), "bert": {"input_ids": tokens, "attention_mask": mask}}

    def model(self, kind):
        if kind == "toy":
            return toy_net(dtype=F64)
        return self.bert_cls.from_pretrained(self.root / "bert", attn_implementation="eager").double().eval()

    def fields(self, kind):
        fields = {"model": kind, "inputs": str(self.root / f"{kind}_inputs.safetensors")}
        return {**fields, "model_dir": str(self.root / "bert")} if kind == "bert" else fields

    def forward(self, model, kind):
        with torch.no_grad():
            if kind == "toy":
                return model(*self.inputs[kind])
            return model(**self.inputs[kind]).last_hidden_state


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    """Every PEFT-side job in one subprocess; returns our setup, our expected outputs and the peer's result files."""
    if not PEERS.exists():
        pytest.skip(f"peers venv not found at {PEERS} (set META_LEARNING_PEERS_PYTHON)")
    probe = subprocess.run([str(PEERS), "-c", "import peft, transformers"], capture_output=True, check=False)
    if probe.returncode:
        pytest.skip("peft is not installed in the peers venv")
    root = tmp_path_factory.mktemp("peft")
    setup = Setup(root)
    jobs, expected = [], {}
    for kind in KINDS:
        ad = LoRAAdapter(
            setup.model(kind), r=3, lora_alpha=6, lora_dropout=0.1, target_modules=TARGETS[kind],
            modules_to_save=SAVED[kind],
        ).add_adapter()  # fmt: skip
        randomise(ad.trainable_parameters())
        ad.eval()
        expected[kind] = setup.forward(ad, kind)
        ad.save_pretrained(root / f"ours_{kind}")
        jobs.append({"mode": "load", "adapter": str(root / f"ours_{kind}"), "out": str(root / f"load_{kind}.st"),
                     **setup.fields(kind)})  # fmt: skip
        config = {"kind": "lora", "r": 4, "lora_alpha": 8, "target_modules": TARGETS[kind],
                  "modules_to_save": SAVED[kind], "use_rslora": True}  # fmt: skip
        jobs.append({"mode": "make", "config": config, "seed": 3, "adapter": str(root / f"peft_{kind}"),
                     "out": str(root / f"make_{kind}.st"), **setup.fields(kind)})  # fmt: skip
    jobs.append({"mode": "make", "config": {"kind": "ia3", **IA3_SPEC}, "seed": 4, "out": str(root / "ia3.st"),
                 **setup.fields("bert")})  # fmt: skip
    jobs.append({"mode": "count", "configs": COUNT_CONFIGS, "out": str(root / "counts.json"), **setup.fields("bert")})
    (root / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run([str(PEERS), str(SCRIPT), str(root / "jobs.json")], check=True, timeout=600, capture_output=True)
    return setup, expected


@pytest.mark.parametrize("kind", KINDS)
def test_peft_loads_our_lora_export_and_gives_our_outputs(peer, kind):
    setup, expected = peer
    got = load_file(setup.root / f"load_{kind}.st")["out"]
    torch.testing.assert_close(got, expected[kind], rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_we_load_peft_lora_files_and_give_peft_outputs(peer, kind):
    setup, _ = peer
    ad = LoRAAdapter.from_pretrained(setup.model(kind), setup.root / f"peft_{kind}").eval()
    reference = load_file(setup.root / f"make_{kind}.st")["out"]
    torch.testing.assert_close(setup.forward(ad, kind), reference, rtol=0, atol=1e-10)


def test_ia3_outputs_match_peft_for_the_same_tensors(peer):
    setup, _ = peer
    result = load_file(setup.root / "ia3.st")
    ad = IA3Adapter(setup.model("bert"), **IA3_SPEC).add_adapter().eval()
    state = ad.adapter_state()
    prefix, suffix = "param:base_model.model.", ".default"
    copied = {k[len(prefix) : -len(suffix)]: v for k, v in result.items() if k.startswith(prefix)}
    assert set(copied) == set(state)
    with torch.no_grad():
        for key, p in state.items():
            p.copy_(copied[key])
    torch.testing.assert_close(setup.forward(ad, "bert"), result["out"], rtol=0, atol=1e-10)


def test_trainable_parameter_counts_equal_peft(peer):
    setup, _ = peer
    peft_counts = json.loads((setup.root / "counts.json").read_text())["counts"]
    ours = []
    for spec in COUNT_CONFIGS:
        spec = dict(spec)
        kind = spec.pop("kind")
        model = setup.model("bert")
        ad = (LoRAAdapter(model, **spec) if kind == "lora" else IA3Adapter(model, **spec)).add_adapter()
        ours.append([ad.efficiency().trainable, ad.efficiency().total])
    assert ours == peft_counts
