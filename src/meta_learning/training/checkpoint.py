"""Training checkpoints: everything a resumed run needs to continue exactly where it stopped.

A checkpoint holds the model, optimizer and scheduler states, the episode stream's generator state, the global
torch RNG state (dropout), the step and the loop's bookkeeping. Files are written atomically and read with
``weights_only=True``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from meta_learning._io import atomic_torch_save, safe_torch_load

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Atomically write ``state`` (plain containers of tensors and numbers) to ``path``."""
    atomic_torch_save({"version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated, corrupt or not such a checkpoint (the message names it and the fix).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}; was the run started with this run_dir?")
    try:
        state = safe_torch_load(p)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        # torch's own message for a failed weights-only load advises weights_only=False: never repeat that advice
        raise ValueError(
            f"checkpoint {p} is truncated or corrupt and cannot be read ({type(err).__name__}); checkpoints are "
            "written atomically, so the file was damaged after it was saved. Delete it (or restore a copy) and "
            "start the run again without --resume/resume=True"
        ) from err
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{p} is not a meta_learning checkpoint of version {CHECKPOINT_VERSION}")
    return state


def load_model_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the ``model`` entry of a checkpoint into ``model`` and return the whole checkpoint."""
    state = load_checkpoint(path)
    model.load_state_dict(state["model"])
    return state
