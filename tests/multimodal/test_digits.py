from __future__ import annotations

import pytest
import torch

from meta_learning.multimodal.digits import DIGIT_WORDS, build_digit_triples, digit_clue, embed_texts


def test_clues_are_true_of_the_digit_and_name_it_at_the_exact_rate():
    g = torch.Generator().manual_seed(0)
    exact = 0
    for i in range(2000):
        d = i % 10
        text, candidates = digit_clue(d, g, p_exact=0.25)
        assert d in candidates and len(candidates) >= 1
        exact += text == f"the digit {DIGIT_WORDS[d]}"
        # the candidate set is what the words say (spot checks of each clue kind)
        if text == "an odd number":
            assert candidates == {1, 3, 5, 7, 9}
        if text == "a prime number":
            assert candidates == {2, 3, 5, 7}
        if text == "not a multiple of three":
            assert candidates == {1, 2, 4, 5, 7, 8}
        if text.startswith("a number less than "):
            k = DIGIT_WORDS.index(text.rsplit(" ", 1)[1])
            assert candidates == set(range(k))
    assert abs(exact / 2000 - 0.25) < 0.03
    with pytest.raises(ValueError, match="digit=10"):
        digit_clue(10, g)


def test_embed_texts_encodes_each_distinct_text_once():
    seen = []

    def encoder(texts):
        seen.extend(texts)
        return torch.tensor([[float(len(t))] for t in texts])

    out = embed_texts(["aa", "b", "aa", "ccc", "b"], encoder, batch_size=2)
    assert out.flatten().tolist() == [2.0, 1.0, 2.0, 3.0, 1.0] and seen == ["aa", "b", "ccc"]


def test_real_triples_pair_the_same_digit(data_root):
    if not (data_root / "fsdd").is_dir() or not (data_root / "mnist").is_dir():
        pytest.skip("fsdd or mnist not in the shared data")
    from meta_learning.data.mnist import load_mnist

    test = build_digit_triples(data_root, "test", pairs_per_recording=2, seed=0, digits=range(5, 10))
    assert len(test) == 150 * 2 and test.audio.shape == (300, 40, 101) and test.image.shape == (300, 1, 28, 28)
    assert set(test.labels.tolist()) == set(range(5, 10))
    _, mnist_test = load_mnist(data_root, source="test10k")
    assert torch.equal(torch.as_tensor(mnist_test.labels)[test.image_index], test.labels)
    assert all(int(d) in c for d, c in zip(test.labels, test.candidates, strict=True))
    again = build_digit_triples(data_root, "test", pairs_per_recording=2, seed=0, digits=range(5, 10))
    assert again.text == test.text and torch.equal(again.image_index, test.image_index)
