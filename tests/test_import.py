from __future__ import annotations

import subprocess
import sys

import pytest

import meta_learning


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_is_lazy():
    out = _run(
        "import sys, meta_learning\n"
        "heavy = [m for m in ('meta_learning.fewshot', 'meta_learning.data.omniglot', 'yaml', 'tqdm', 'PIL')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    assert out == "[]"


def test_import_time_beyond_torch_is_small():
    code = (
        "import time, torch\n"
        "t = time.perf_counter(); import meta_learning; from meta_learning import PrototypicalNetwork\n"
        "print(time.perf_counter() - t)"
    )
    best = min(float(_run(code)) for _ in range(3))
    assert best < 0.3


def test_every_public_name_resolves():
    for name in meta_learning.__all__:
        assert getattr(meta_learning, name) is not None, name
    from meta_learning.fewshot.protonet import PrototypicalNetwork

    assert meta_learning.PrototypicalNetwork is PrototypicalNetwork


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'NotAThing'"):
        meta_learning.NotAThing  # noqa: B018


def test_a_learner_does_not_import_the_dataset_modules():
    out = _run(
        "import sys\nfrom meta_learning import PrototypicalNetwork, MAML\n"
        "heavy = ('PIL', 'meta_learning.data.omniglot', 'meta_learning.data.image_folder')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    assert out == "[]"
