from __future__ import annotations

import pytest
import torch
from torch import nn

from meta_learning.data.episode import Episode
from meta_learning.fewshot.protonet import PrototypicalNetwork
from meta_learning.multimodal import (
    FUSION_METHODS,
    ModalityLayout,
    MultiModalAdapter,
    drop_modalities,
    modality_dropout,
)

E = 16


class Recording(nn.Module):
    """Linear encoder that records the batch sizes it was called with."""

    def __init__(self, inp, out, seq=None):
        super().__init__()
        self.lin, self.seq, self.calls = nn.Linear(inp, out), seq, []
        self.out_features = out

    def forward(self, x):
        self.calls.append(x.shape[0])
        h = self.lin(x.flatten(1))
        return h if self.seq is None else h.unsqueeze(1).expand(-1, self.seq, -1) + torch.arange(self.seq)[:, None]


def adapter(method, **kw):
    torch.manual_seed(0)
    return MultiModalAdapter(
        text_model=Recording(5, 8),
        image_model=Recording(12, 6),
        audio_model=Recording(7, 4, seq=3),
        fusion_method=method,
        embed_dim=E,
        num_heads=2,
        **kw,
    ).eval()


def batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "text": torch.randn(b, 5, generator=g),
        "image": torch.randn(b, 3, 4, generator=g),
        "audio": torch.randn(b, 7, generator=g),
    }


@pytest.mark.parametrize("method", FUSION_METHODS)
def test_output_shape_for_every_fusion(method):
    out = adapter(method)(**batch())
    assert out.shape == (4, E) and torch.isfinite(out).all()


@pytest.mark.parametrize("method", FUSION_METHODS)
def test_a_masked_modality_is_ignored_and_equals_leaving_it_out(method):
    net = adapter(method)
    if method == "film":  # move FiLM off its identity initialisation so that audio changes the output
        with torch.no_grad():
            net.fusion.film["audio"].weight.normal_(generator=torch.Generator().manual_seed(0))
    x = batch()
    mask = torch.tensor([True, False, True, False])
    out = net(**x, masks={"audio": mask})
    garbage = x["audio"].clone()
    garbage[~mask] = 1000.0
    torch.testing.assert_close(net(**dict(x, audio=garbage), masks={"audio": mask}), out)  # absent data never read
    without = net(text=x["text"][~mask], image=x["image"][~mask])  # same samples with no audio at all
    torch.testing.assert_close(out[~mask], without, rtol=1e-5, atol=1e-6)
    with_audio = net(**{k: v[mask] for k, v in x.items()})
    torch.testing.assert_close(out[mask], with_audio, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[mask], net(text=x["text"][mask], image=x["image"][mask]))  # audio matters


def test_encoders_run_only_on_present_samples():
    net = adapter("concat")
    net(**batch(), masks={"image": torch.tensor([True, False, False, True])})
    assert net.encoders["image"].calls == [2] and net.encoders["text"].calls == [4]


def test_gated_weights_renormalise_and_film_starts_at_identity():
    net = adapter("gated")
    x = batch()
    only_text = net(text=x["text"])
    p = net.projections["text"](net.encoders["text"](x["text"]))
    torch.testing.assert_close(only_text, net.fusion.out(torch.tanh(p)))  # a single present modality has weight 1
    film = adapter("film")
    p_image = film.projections["image"](film.encoders["image"](x["image"]))
    torch.testing.assert_close(film(**x), film.fusion.out(p_image))  # gamma = beta = 0 at initialisation
    concat = adapter("concat")
    q = torch.cat(
        [
            concat.fusion.missing[0].expand(4, -1),
            p_image * 0 + concat.projections["image"](concat.encoders["image"](x["image"])),
            concat.fusion.missing[2].expand(4, -1),
        ],
        dim=1,
    )
    torch.testing.assert_close(concat(image=x["image"]), concat.fusion.mlp(q))


def test_sequence_outputs_with_padding_masks():
    class Seq(nn.Module):
        out_features = 3

        def forward(self, x):  # (n, 5) -> (n, 5, 3) tokens, last two positions padding
            tokens = x.unsqueeze(-1).expand(-1, -1, 3)
            pad = torch.zeros(x.shape[0], 5, dtype=torch.bool)
            pad[:, 3:] = True
            return tokens, pad

    net = MultiModalAdapter(text_model=Seq(), fusion_method="attention", embed_dim=8, num_heads=2).eval()
    x = torch.randn(2, 5)
    changed = x.clone()
    changed[:, 3:] = 100.0  # padding positions
    torch.testing.assert_close(net(text=x), net(text=changed))


def test_packed_layout_round_trip_and_packed_forward():
    layout = ModalityLayout({"audio": (7,), "image": (3, 4), "text": (5,)})
    assert layout.modalities == ("text", "image", "audio") and layout.width == 3 + 5 + 12 + 7
    x = batch()
    present = {"image": torch.tensor([True, True, False, True])}
    packed = layout.pack(x, present)
    data, masks = layout.unpack(packed)
    assert masks["image"].tolist() == [True, True, False, True] and masks["text"].all()
    torch.testing.assert_close(data["image"][masks["image"]], x["image"][present["image"]])
    assert data["image"][2].abs().sum() == 0
    net = adapter("attention", layout=layout)
    torch.testing.assert_close(net(packed), net(**x, masks=present))
    dropped = drop_modalities(layout, packed, ["text"])
    torch.testing.assert_close(net(dropped), net(image=x["image"], audio=x["audio"], masks=present))


def test_embeddings_feed_a_prototypical_network():
    layout = ModalityLayout({"image": (3, 4), "audio": (7,)})
    torch.manual_seed(0)
    net = MultiModalAdapter(
        image_model=Recording(12, 6), audio_model=Recording(7, 4), fusion_method="concat", embed_dim=E, layout=layout
    )
    proto = PrototypicalNetwork(encoder=net)
    g = torch.Generator().manual_seed(1)
    centres = {"image": torch.randn(3, 3, 4, generator=g) * 3, "audio": torch.randn(3, 7, generator=g) * 3}

    def make(labels):
        data = {m: c[labels] + 0.3 * torch.randn(c[labels].shape, generator=g) for m, c in centres.items()}
        return layout.pack(data, {"audio": torch.rand(len(labels), generator=g) > 0.3})

    sy, qy = torch.arange(3).repeat_interleave(2), torch.arange(3).repeat_interleave(5)
    episodes = [Episode(make(sy), sy, make(qy), qy) for _ in range(30)]
    before = proto.evaluate(episodes[:10]).mean
    opt = torch.optim.Adam(proto.parameters(), 1e-2)
    for ep in episodes[10:]:
        opt.zero_grad()
        proto.training_step(ep).loss.backward()
        opt.step()
    assert proto.evaluate(episodes[:10]).mean >= max(before, 0.9)
    classifier = nn.Sequential(net, nn.Linear(E, 3))  # and a classifier head
    assert classifier(make(qy)).shape == (15, 3)


def test_modality_dropout_keeps_one_modality_and_drops_at_rate_p():
    g = torch.Generator().manual_seed(0)
    present = {
        "text": torch.ones(20000, dtype=torch.bool),
        "image": torch.ones(20000, dtype=torch.bool),
        "audio": torch.rand(20000, generator=g) > 0.5,
    }
    kept = modality_dropout(present, 0.3, g)
    stacked = torch.stack(list(kept.values()), 1)
    assert stacked.any(1).all()
    assert not (kept["audio"] & ~present["audio"]).any()  # never adds a modality
    assert abs(kept["text"].float().mean().item() - 0.7) < 0.03  # ~p, plus the rare restores
    with pytest.raises(ValueError, match="p=1.0"):
        modality_dropout(present, 1.0, g)


def test_lazy_projection_when_the_width_is_unknown():
    net = MultiModalAdapter(image_model=nn.Flatten(), fusion_method="concat", embed_dim=8)
    assert net(image=torch.randn(2, 3, 4)).shape == (2, 8)
    assert net.projections["image"][0].weight.shape == (8, 12)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs at least one of"):
        MultiModalAdapter()
    with pytest.raises(ValueError, match="fusion_method='sum' is not supported"):
        MultiModalAdapter(text_model=nn.Identity(), fusion_method="sum", dims={"text": 3})
    with pytest.raises(TypeError, match="image_model must be a torch.nn.Module"):
        MultiModalAdapter(image_model=lambda x: x)
    with pytest.raises(ValueError, match="dims has"):
        MultiModalAdapter(text_model=nn.Identity(), dims={"audio": 3})
    with pytest.raises(ValueError, match="film_base='audio' has no encoder"):
        MultiModalAdapter(text_model=nn.Identity(), dims={"text": 3}, fusion_method="film", film_base="audio")
    net = adapter("concat")
    x = batch()
    with pytest.raises(ValueError, match=r"samples \[1\] have no modality present"):
        net(text=x["text"], masks={"text": torch.tensor([True, False, True, True])})
    with pytest.raises(ValueError, match="disagree on the batch size"):
        net(text=x["text"], image=x["image"][:2])
    with pytest.raises(ValueError, match="needs layout="):
        net(torch.zeros(2, 10))
    with pytest.raises(ValueError, match=r"masks\['text'\] must be a bool tensor"):
        net(text=x["text"], masks={"text": torch.ones(4)})
    with pytest.raises(ValueError, match="must return"):
        MultiModalAdapter(text_model=nn.Flatten(0), dims={"text": 20}, fusion_method="concat")(text=x["text"])


def test_a_layout_may_hold_modalities_the_adapter_does_not_encode():
    layout = ModalityLayout({"text": (5,), "image": (3, 4)})
    x = batch()
    image_only = MultiModalAdapter(
        image_model=Recording(12, 6), fusion_method="concat", embed_dim=E, layout=layout
    ).eval()
    packed = layout.pack({"text": x["text"], "image": x["image"]})
    torch.testing.assert_close(image_only(packed), image_only(image=x["image"]))
    with pytest.raises(ValueError, match="have no modality present"):
        image_only(drop_modalities(layout, packed, ["image"]))
    with pytest.raises(ValueError, match="layout packs"):
        MultiModalAdapter(audio_model=Recording(7, 4), layout=layout)
