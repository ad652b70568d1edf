"""Helpers of the reliability tests: a tiny synthetic image-folder benchmark and its config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

SPLITS = {"train": 6, "val": 4, "test": 4}  # classes per split
IMAGES_PER_CLASS = 4
IMAGE_SIZE = 16  # Conv4 halves the side four times: 16 is the smallest that keeps one pixel


def write_image_folder(root: Path, seed: int = 0) -> Path:
    """``root/<split>/<class>/<i>.png``: per class one random pattern plus noise, so classes are learnable."""
    rng = np.random.default_rng(seed)
    for split, n_classes in SPLITS.items():
        for c in range(n_classes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            pattern = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE))
            for i in range(IMAGES_PER_CLASS):
                pixels = np.clip(pattern + rng.normal(0, 30, pattern.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "L").save(folder / f"{i}.png")
    return root


def tiny_config(root: Path, *, num_episodes: int, checkpoint_every: int, eval_every: int) -> dict:
    """A ProtoNet run on the synthetic folder that takes well under a second of training on one core."""
    return {
        "name": "reliability",
        "seed": 3,
        "data": {
            "dataset": "image_folder", "root": str(root), "image_size": IMAGE_SIZE,
            "train_way": 3, "train_shot": 1, "train_query": 2, "test_way": 3, "test_shot": 1, "test_query": 2,
        },
        "model": {"backbone": "conv4", "in_channels": 3, "hidden_channels": 4},
        "train": {
            "num_episodes": num_episodes, "lr": 0.01, "lr_decay_every": 7, "eval_every": eval_every,
            "val_episodes": 2, "checkpoint_every": checkpoint_every, "progress": False,
        },
        "eval": {"episodes": 2, "seed": 1},
    }  # fmt: skip


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def scan_library(find, allowed) -> list[str]:
    """``"path:line what"`` for each ``(what, line)`` that ``find(ast_tree)`` reports in the installed library's
    sources and that ``allowed`` (a predicate on the relative path and ``what``) does not excuse."""
    import ast

    import meta_learning

    src = Path(meta_learning.__file__).resolve().parent
    violations = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        for what, line in find(ast.parse(path.read_text(encoding="utf-8"))):
            if not allowed(rel, what):
                violations.append(f"{rel}:{line} {what}")
    return violations
