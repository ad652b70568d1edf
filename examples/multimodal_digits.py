"""Multi-modal meta-learning (seed section "Multi-Modal Meta-Learning"): fuse text, image and audio encoders.

What it shows: ``MultiModalAdapter(text_model=..., image_model=..., audio_model=..., fusion_method='attention')``
trained (with a linear head) to recognise spoken digits paired with images and text clues, all real data from the
data root: every FSDD recording (spoken digit, log-mel features) is paired with an MNIST image of the same digit and
a partial text clue (20% name the digit, the others say e.g. "an odd number"; clues embedded by all-MiniLM-L6-v2).
Training uses modality dropout, so the fused model still works when a modality is missing at test time
(``masks={"audio": ...}``). Test: FSDD's official test recordings (speaker takes 0-4) with MNIST images disjoint from
the training ones.

Expected output (``--fast``: 1 epoch over the 2,700 training recordings, about 10 s of CPU time plus loading MiniLM):
10-way test accuracy well above chance (0.1) with all three modalities (measured 0.89), and still far above chance
with any one modality removed (0.90 without text, 0.77 without audio, 0.41 without the image).
The last line reads like ``RESULT accuracy_all=0.89 accuracy_no_text=0.9 ... accuracy_no_audio=0.77 chance=0.1``.

    python examples/multimodal_digits.py --fast
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, parser, report, require, start, table

from meta_learning import MLP, MiniLMEncoder, MultiModalAdapter
from meta_learning.multimodal import AudioCNN, ImageCNN, modality_dropout
from meta_learning.multimodal.digits import build_digit_triples, embed_texts

WIDTH = 64


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__).parse_args(argv)
    root = require(data_root(args.root), "fsdd", "mnist")
    epochs = 1 if args.fast else 5
    started = start(args.seed)
    train = build_digit_triples(root, split="train", pairs_per_recording=1, seed=args.seed)
    test = build_digit_triples(root, split="test", pairs_per_recording=1, seed=args.seed + 1000)
    from transformers.utils import logging

    logging.disable_progress_bar()  # no "Loading weights" bar in the example's output
    minilm = MiniLMEncoder()
    text_train, text_test = embed_texts(list(train.text), minilm), embed_texts(list(test.text), minilm)
    n_mels = train.audio.shape[1]

    text_encoder = MLP(text_train.shape[1], [128], WIDTH)  # over the frozen MiniLM clue embeddings
    vision_encoder = ImageCNN(in_channels=1, out_features=WIDTH, hidden_channels=32)
    audio_encoder = AudioCNN(n_mels, out_features=WIDTH, channels=64)
    multimodal_adapter = MultiModalAdapter(
        text_model=text_encoder, image_model=vision_encoder, audio_model=audio_encoder, fusion_method="attention",
        dims={"text": WIDTH, "image": WIDTH, "audio": WIDTH},
    )  # fmt: skip
    head = nn.Linear(multimodal_adapter.embed_dim, 10)
    opt = torch.optim.Adam([*multimodal_adapter.parameters(), *head.parameters()], lr=1e-3)
    g = torch.Generator().manual_seed(args.seed)
    n = len(train)
    multimodal_adapter.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, 64):
            idx = order[i : i + 64]
            present = {m: torch.ones(len(idx), dtype=torch.bool) for m in ("text", "image", "audio")}
            masks = modality_dropout(present, 0.3, g)
            z = multimodal_adapter(text=text_train[idx], image=train.image[idx], audio=train.audio[idx], masks=masks)
            loss = F.cross_entropy(head(z), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    multimodal_adapter.eval()
    results = {}
    m = len(test)
    with torch.no_grad():
        for condition, dropped in (("all", None), ("no_text", "text"), ("no_image", "image"), ("no_audio", "audio")):
            masks = {k: torch.full((m,), k != dropped) for k in ("text", "image", "audio")}
            z = multimodal_adapter(text=text_test, image=test.image, audio=test.audio, masks=masks)
            results[condition] = float((head(z).argmax(1) == test.labels).float().mean())
    table([(c, a) for c, a in results.items()], ("modalities at test time", "10-way accuracy"))
    return report(
        {"train_examples": n, "test_examples": m, **{f"accuracy_{c}": a for c, a in results.items()}, "chance": 0.1},
        started,
    )


if __name__ == "__main__":
    main()
