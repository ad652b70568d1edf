"""FewGLUE-32 loader on tiny JSONL files in the real layout, and on the real files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from meta_learning.data.fewglue import SHA256, TASKS, FewGLUE


def write_jsonl(root: Path, folder: str, split: str, rows: list) -> Path:
    path = root / "superglue_fewglue32" / folder / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


CB_ROWS = [
    {"premise": "It rained.", "hypothesis": "The ground is wet.", "label": "entailment", "idx": 7},
    {"premise": "He left.", "hypothesis": "He stayed.", "label": "contradiction", "idx": 3},
    {"premise": "She sang.", "hypothesis": "She is a singer.", "label": "neutral", "idx": 11},
]


def test_cb_pairs_labels_and_ids(tmp_path):
    write_jsonl(tmp_path, "CB", "train", CB_ROWS)
    cb = FewGLUE(tmp_path, task="cb", split="train", verify=False)
    assert len(cb) == 3 and cb.num_classes == 3
    assert cb.texts == [(r["premise"], r["hypothesis"]) for r in CB_ROWS]
    assert cb.labels.tolist() == [0, 1, 2] and cb.labels.dtype.name == "int64"
    assert cb.idx.tolist() == [7, 3, 11]
    assert cb[1] == (("He left.", "He stayed."), 1) and cb[-1][1] == 2
    assert [cb.label_names[y] for y in cb.labels] == [r["label"] for r in CB_ROWS]
    assert repr(cb) == "FewGLUE(task='cb', split='train', n=3)"
    with pytest.raises(IndexError, match="index 3 is out of range"):
        cb[3]


def test_boolq_is_question_then_passage_with_json_booleans(tmp_path, monkeypatch):
    rows = [
        {"question": "is it blue", "passage": "The sky is blue.", "idx": 0, "label": True},
        {"question": "is it red", "passage": "The sky is blue.", "idx": 1, "label": False},
    ]
    write_jsonl(tmp_path, "BoolQ", "val", ["", *rows, "  "])  # blank lines are skipped
    monkeypatch.setenv("META_LEARNING_DATA", str(tmp_path))  # root=None reads $META_LEARNING_DATA
    boolq = FewGLUE(task="boolq", split="val", verify=False)
    assert boolq.texts == [("is it blue", "The sky is blue."), ("is it red", "The sky is blue.")]
    assert boolq.labels.tolist() == [1, 0] and boolq.label_names == ("False", "True")


def test_missing_files_and_bad_arguments_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"superglue_fewglue32/RTE/val\.jsonl.*META_LEARNING_DATA"):
        FewGLUE(tmp_path, task="rte", split="val")
    with pytest.raises(ValueError, match="task='copa' is not supported; choose one of 'boolq', 'cb', 'rte'"):
        FewGLUE(tmp_path, task="copa")
    with pytest.raises(ValueError, match="split='test' is not supported"):
        FewGLUE(tmp_path, task="cb", split="test")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('{"premise": "a", ', r"train\.jsonl:2 is not valid JSON"),
        ("[1, 2]", r"train\.jsonl:2 holds a list, expected a JSON object"),
        ({"premise": "a", "label": "entailment", "idx": 1}, r":2 has no 'hypothesis' field"),
        ({"premise": "a", "hypothesis": 5, "label": "entailment", "idx": 1}, r"'hypothesis' is 5, expected a str"),
        ({"premise": "a", "hypothesis": "b", "label": "maybe", "idx": 1}, r":2 has label 'maybe'; this task's labels"),
        ({"premise": "a", "hypothesis": "b", "idx": 1}, r":2 has no 'label' field"),
        ({"premise": "a", "hypothesis": "b", "label": "neutral", "idx": True}, r"field 'idx' is True, expected a int"),
    ],
)
def test_malformed_lines_are_reported_with_file_and_line(tmp_path, row, message):
    write_jsonl(tmp_path, "CB", "train", [CB_ROWS[0], row])
    with pytest.raises(ValueError, match=message):
        FewGLUE(tmp_path, task="cb", split="train", verify=False)


def test_verify_rejects_a_file_that_is_not_the_known_release(tmp_path):
    write_jsonl(tmp_path, "CB", "train", CB_ROWS)
    with pytest.raises(ValueError, match=f"has sha256 [0-9a-f]{{64}} but .* has {SHA256[('cb', 'train')]}"):
        FewGLUE(tmp_path, task="cb", split="train")


@pytest.fixture(scope="module")
def fewglue_root() -> Path:
    from conftest import shared_data_root

    root = shared_data_root()
    if not (root / "superglue_fewglue32").is_dir():
        pytest.skip(f"FewGLUE not found at {root}/superglue_fewglue32 (set META_LEARNING_DATA to ../shared/data)")
    return root


@pytest.mark.parametrize(
    ("task", "split", "counts"),
    [  # class counts of the released files (SuperGLUE val sizes: BoolQ 3,270, CB 56, RTE 277)
        ("boolq", "train", {"True": 18, "False": 14}),
        ("boolq", "val", {"True": 2033, "False": 1237}),
        ("cb", "train", {"entailment": 19, "contradiction": 10, "neutral": 3}),
        ("cb", "val", {"contradiction": 28, "entailment": 23, "neutral": 5}),
        ("rte", "train", {"not_entailment": 19, "entailment": 13}),
        ("rte", "val", {"entailment": 146, "not_entailment": 131}),
        ("rte", "dev32", None),
    ],
)
def test_real_files(fewglue_root, task, split, counts):
    data = FewGLUE(fewglue_root, task=task, split=split)
    if counts is None:
        assert len(data) == 32
    else:
        assert Counter(data.label_names[y] for y in data.labels) == counts
    assert len(set(data.idx.tolist())) == len(data)  # ids are unique within a split
    first_field = TASKS[task].text_fields[0]
    raw = json.loads((fewglue_root / "superglue_fewglue32" / TASKS[task].folder / f"{split}.jsonl").open().readline())
    assert data.texts[0][0] == raw[first_field]


def test_download_fetches_the_pinned_release_and_refuses_other_bytes(fewglue_root, tmp_path, monkeypatch):
    import shutil

    from meta_learning.data import fewglue

    served = tmp_path / "server" / "CB"
    served.mkdir(parents=True)
    shutil.copy(fewglue_root / "superglue_fewglue32" / "CB" / "train.jsonl", served / "train.jsonl")
    monkeypatch.setattr(fewglue, "BASE_URL", (tmp_path / "server").as_uri())
    data = FewGLUE(tmp_path / "root", task="cb", split="train", download=True)
    assert len(data) == 32 and (tmp_path / "root" / "superglue_fewglue32" / "CB" / "train.jsonl").is_file()
    with (served / "train.jsonl").open("a", encoding="utf-8") as f:
        f.write("\n")  # one byte more: not the release
    with pytest.raises(RuntimeError, match="sha256"):
        FewGLUE(tmp_path / "other", task="cb", split="train", download=True)
    assert not (tmp_path / "other" / "superglue_fewglue32" / "CB" / "train.jsonl").exists()
    with pytest.raises(FileNotFoundError, match="download=True"):
        FewGLUE(tmp_path / "other", task="cb", split="val")
