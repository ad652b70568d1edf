"""SuperGLUE few-shot text-pair classification: FewGLUE-32 (BoolQ, CB, RTE).

FewGLUE (Schick & Schütze 2021, "It's Not Just Size That Matters", NAACL) fixes 32 training examples per SuperGLUE
task (Wang et al. 2019); FewGLUE_32dev (Liu et al. 2021, P-tuning) adds a 32-example dev set; the official SuperGLUE
validation set (``val``) is the usual evaluation set. Files are JSONL in the original SuperGLUE format, read in place
from ``root/superglue_fewglue32/<Task>/{train,dev32,val}.jsonl``.

Tasks read here are the sentence-pair classification ones: each example is a ``(first, second)`` text pair (encode
it as a pair) and an integer label, in the label order of the SuperGLUE / Hugging Face ``super_glue`` datasets:

| task | text pair | labels (0, 1, ...) |
| --- | --- | --- |
| ``boolq`` | (question, passage) | False, True |
| ``cb`` | (premise, hypothesis) | entailment, contradiction, neutral |
| ``rte`` | (premise, hypothesis) | entailment, not_entailment |

CB is customarily scored by accuracy and macro-F1 over its three classes, BoolQ and RTE by accuracy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from meta_learning._checks import check_choice
from meta_learning._io import data_root, sha256_file
from meta_learning.data.download import download_url

FOLDER = "superglue_fewglue32"
SPLITS = ("train", "dev32", "val")
# the release the checksums below belong to: THUDM/P-tuning, folder FewGLUE_32dev/, at a fixed commit
BASE_URL = "https://raw.githubusercontent.com/THUDM/P-tuning/f4225d4d8003868b31ed659dfe9732a351ad42d9/FewGLUE_32dev"


@dataclass(frozen=True)
class FewGLUETask:
    """How one task's JSON objects map to a text pair and a label."""

    folder: str
    text_fields: tuple[str, str]
    label_names: tuple[str, ...]


TASKS: dict[str, FewGLUETask] = {
    "boolq": FewGLUETask("BoolQ", ("question", "passage"), ("False", "True")),
    "cb": FewGLUETask("CB", ("premise", "hypothesis"), ("entailment", "contradiction", "neutral")),
    "rte": FewGLUETask("RTE", ("premise", "hypothesis"), ("entailment", "not_entailment")),
}

# sha256 of the files this loader was checked against (the data folder's README; THUDM/P-tuning @ f4225d4)
SHA256: dict[tuple[str, str], str] = {
    ("boolq", "dev32"): "0af324b658a72fdd7767aa3c27c1dfafbc03e8e987a148b29e42a72d84b9f9e3",
    ("boolq", "train"): "317245ba0842129234a368274701dfc196139aa627eff44aefc827c6888935e1",
    ("boolq", "val"): "0c86a5045886e5795fe9052003873f7d94b88ed3028a33007c51d99e44fd66d9",
    ("cb", "dev32"): "ec7e1bfe37a7ea4514fc2335bfa3b35be77bfe084aae2e7ca55f765aaee41337",
    ("cb", "train"): "e6f446e5f117cbfbcd156d8221d163cc370924fa594a1d67f44a151ce5c171b2",
    ("cb", "val"): "c6125587e9601560cb16ea223c33964c5a915568d2af68a81f651b6ef25395ec",
    ("rte", "dev32"): "a3ba6200d2f27691d927ab97d387292b045316956f877fbfccc9a4658af2b351",
    ("rte", "train"): "91a83197e3a286a8bf102e483646f87cd8b1e4c9c5ccd893bc0b9dba0643d580",
    ("rte", "val"): "ab990507bf5f35dc176cba7770a72bfa2c50a88ed72b8cc95cfbf9db95ab1af1",
}


class FewGLUE(Dataset[tuple[tuple[str, str], int]]):
    """One split of a FewGLUE-32 text-pair task, as ``(text pair, label)`` examples.

    Args:
        root: data root (``None``: ``$META_LEARNING_DATA``); files are read from ``root/superglue_fewglue32``.
        task: ``"boolq"``, ``"cb"`` or ``"rte"``.
        split: ``"train"`` (the 32 FewGLUE examples), ``"dev32"`` (32 dev examples) or ``"val"`` (the official
            SuperGLUE validation set: BoolQ 3,270, CB 56, RTE 277).
        verify: check the file's sha256 against the release this loader knows (``False`` for other copies).
        download: fetch a missing file from the release (``BASE_URL``, pinned commit) into the data root; it
            appears only once its sha256 matches.

    Attributes:
        texts: one ``(first, second)`` pair per example (see the module's table); ``labels``: ``[N]`` int64;
        ``idx``: the SuperGLUE example ids; ``label_names``: the class names in label order.

    Example:
        >>> cb = FewGLUE(task="cb", split="train")
        >>> (premise, hypothesis), label = cb[0]
        >>> cb.label_names[label]
        'entailment'
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        task: str = "rte",
        split: str = "train",
        verify: bool = True,
        download: bool = False,
    ) -> None:
        self.task = check_choice("task", task, TASKS)
        self.split = check_choice("split", split, SPLITS)
        spec = TASKS[self.task]
        path = data_root(root) / FOLDER / spec.folder / f"{self.split}.jsonl"
        if not path.is_file() and download:
            download_url(f"{BASE_URL}/{spec.folder}/{self.split}.jsonl", path, SHA256[(self.task, self.split)])
        if not path.is_file():
            raise FileNotFoundError(
                f"FewGLUE {spec.folder} {self.split} not found: expected {path}; set META_LEARNING_DATA (or root=) to "
                f"the folder that holds {FOLDER}/, or pass download=True"
            )
        if verify:
            digest, expected = sha256_file(path), SHA256[(self.task, self.split)]
            if digest != expected:
                raise ValueError(
                    f"{path} has sha256 {digest} but the FewGLUE release this loader knows has {expected}; the file is "
                    "corrupt or a different version (re-fetch it, or pass verify=False to read it anyway)"
                )
        self.label_names = spec.label_names
        self.texts: list[tuple[str, str]] = []
        labels: list[int] = []
        ids: list[int] = []
        for line_no, row in _read_jsonl(path):
            first, second = (_field(row, name, str, path, line_no) for name in spec.text_fields)
            self.texts.append((first, second))
            labels.append(_label(row, spec.label_names, path, line_no))
            ids.append(_field(row, "idx", int, path, line_no))
        if not labels:
            raise ValueError(f"{path} holds no examples")
        self.labels = np.array(labels, dtype=np.int64)
        self.idx = np.array(ids, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[tuple[str, str], int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} examples")
        return self.texts[index], int(self.labels[index])

    def __repr__(self) -> str:
        return f"FewGLUE(task={self.task!r}, split={self.split!r}, n={len(self)})"


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no} is not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no} holds a {type(row).__name__}, expected a JSON object")
            rows.append((line_no, row))
    return rows


def _field(row: dict[str, Any], name: str, kind: type, path: Path, line_no: int) -> Any:
    if name not in row:
        raise ValueError(f"{path}:{line_no} has no {name!r} field (fields: {sorted(row)})")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{path}:{line_no} field {name!r} is {value!r}, expected a {kind.__name__}")
    return value


def _label(row: dict[str, Any], names: tuple[str, ...], path: Path, line_no: int) -> int:
    if "label" not in row:
        raise ValueError(f"{path}:{line_no} has no 'label' field; FewGLUE train/dev32/val examples are labelled")
    value = row["label"]
    name = str(value) if isinstance(value, bool) else value  # BoolQ stores JSON true/false
    if name not in names:
        raise ValueError(f"{path}:{line_no} has label {value!r}; this task's labels are {', '.join(names)}")
    return names.index(name)
