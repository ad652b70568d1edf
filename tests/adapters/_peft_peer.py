"""Run by the peers venv's Python (which has PEFT): the PEFT side of tests/adapters/test_peft_peers.py.

Usage: python _peft_peer.py JOBS.json   (a list of jobs, run in one process so that PEFT is imported once); each job
names a model, a mode and file paths, and writes its results to job["out"].

Modes:
- ``load``: ``PeftModel.from_pretrained(model, job["adapter"])`` and the outputs on the saved inputs.
- ``make``: a PEFT adapter (LoRA or IA3) with seeded random weights; saves it (LoRA) or its tensors (IA3) and the
  outputs.
- ``count``: PEFT's trainable and total parameter counts for the given configs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for _adapter_models

from _adapter_models import toy_net


def build(job):
    if job["model"] == "toy":
        return toy_net(dtype=torch.float64)
    from transformers import BertModel

    return BertModel.from_pretrained(job["model_dir"], attn_implementation="eager").double().eval()


def forward(model, job):
    inputs = load_file(job["inputs"])
    with torch.no_grad():
        if job["model"] == "toy":
            return model(inputs["ids"], inputs["img"])
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state


def peft_config(spec):
    from peft import IA3Config, LoraConfig

    kind = spec.pop("kind")
    return LoraConfig(**spec) if kind == "lora" else IA3Config(**spec)


def main() -> None:
    for job in json.loads(Path(sys.argv[1]).read_text()):
        run(job)


def run(job) -> None:
    from peft import PeftModel, get_peft_model

    out: dict[str, object] = {}
    if job["mode"] == "load":
        model = PeftModel.from_pretrained(build(job), job["adapter"]).eval()
        save_file({"out": forward(model, job).contiguous()}, job["out"])
        return
    if job["mode"] == "count":
        counts = []
        for spec in job["configs"]:
            model = get_peft_model(build(job), peft_config(dict(spec)))
            trainable, total = model.get_nb_trainable_parameters()
            counts.append([trainable, total])
        out["counts"] = counts
        Path(job["out"]).write_text(json.dumps(out))
        return
    model = get_peft_model(build(job), peft_config(dict(job["config"]))).eval()
    g = torch.Generator().manual_seed(job["seed"])
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    tensors = {"out": forward(model, job).contiguous()}
    if job["config"]["kind"] == "lora":
        model.save_pretrained(job["adapter"])
    else:
        for name, p in model.named_parameters():
            if p.requires_grad:
                tensors["param:" + name] = p.detach().contiguous()
    save_file(tensors, job["out"])


if __name__ == "__main__":
    main()
