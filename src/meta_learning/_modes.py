"""Eval mode for the length of a block, with every submodule's train/eval flag restored exactly afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module.eval()`` inside the block; on leaving it (also on an exception) each submodule's ``training`` flag
    is set back to what it was, one by one.

    ``module.train(was_training)`` would instead give every submodule the top module's flag: a BatchNorm the user
    had frozen with ``.eval()`` inside a model in training mode would come back training, its running statistics
    moving again. Modules whose ``train()`` keeps parts frozen (e.g. progressive networks' old columns) were in a
    consistent state before the block, and that state is what is restored.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag
