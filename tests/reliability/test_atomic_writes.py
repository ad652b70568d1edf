"""No checkpoint, config or results file is ever left half-written, and a damaged one is a clear error.

Three kinds of check: (1) a truncated or corrupt checkpoint gives ``--resume`` a ``ValueError`` that names the file
and the fix (never torch's advice to load with ``weights_only=False``); (2) every writer, interrupted in the middle
of a write (the serialiser raises after writing half its bytes, or the process dies before the rename), leaves the
previous file byte for byte and no temporary file; a training run interrupted inside a checkpoint write resumes to
the uninterrupted weights; (3) a source scan: every file write in ``src/`` goes through the atomic helpers of
``meta_learning._io``, except the listed, justified ones.
"""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import pytest
import torch

import meta_learning
from _reliability import scan_library, tiny_config
from meta_learning import _io
from meta_learning.adapters.base import write_safetensors
from meta_learning.cli import main
from meta_learning.config import ExperimentConfig, load_config, save_config
from meta_learning.experiment import train_experiment
from meta_learning.training.checkpoint import load_checkpoint, save_checkpoint

SRC = Path(meta_learning.__file__).resolve().parent


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def finished_run(image_folder_root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    cfg = load_config(tiny_config(image_folder_root, num_episodes=6, checkpoint_every=2, eval_every=3))
    train_experiment(cfg, run, progress=False)
    return run


# -- (1) a damaged checkpoint is a clear error -------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "first-10-bytes", "half", "all-but-last-byte", "garbage"])
def test_resume_from_a_damaged_checkpoint_names_the_file_and_the_fix(finished_run, tmp_path, capsys, damage):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (run / name).write_bytes((finished_run / name).read_bytes())
    data = (finished_run / "checkpoints" / "last.pt").read_bytes()
    cut = {"empty": b"", "first-10-bytes": data[:10], "half": data[: len(data) // 2], "all-but-last-byte": data[:-1]}
    (run / "checkpoints").mkdir()
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(cut.get(damage, b"not a checkpoint at all " * 40))

    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        load_checkpoint(last)
    message = str(info.value)
    assert str(last) in message and "without --resume" in message and "weights_only=False" not in message

    # through the command line: exit code 2 and the same message, no traceback
    assert main(["train", str(run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(last) in err and "truncated or corrupt" in err and "Traceback" not in err


def test_a_checkpoint_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(2)}, path)  # a valid torch file, but no version field
    with pytest.raises(ValueError, match="not a meta_learning checkpoint"):
        load_checkpoint(path)


# -- (2) an interrupted write leaves the previous file -----------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying: a BaseException, so no `except Exception` in the writer can swallow it."""


def _crash(*args, **kwargs):
    raise Crash


class _HalfWriter:
    """A file whose first ``write`` stores half of its data and then crashes."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise Crash

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, attr):
        return getattr(self._f, attr)


def _half_then_crash(real):
    """Wrap a serialiser ``real(obj, f)`` so that it writes half of its bytes to ``f`` and then crashes."""

    def write(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise Crash

    return write


def _writers(tmp_path):
    """(name, path, write-a-new-version) for every atomic writer a run uses."""
    cfg_a, cfg_b = ExperimentConfig(name="a"), ExperimentConfig(name="b")
    return [
        ("checkpoint", tmp_path / "last.pt", lambda p, v: save_checkpoint(p, {"step": v, "w": torch.full((50,), v)})),
        ("results", tmp_path / "results.json", lambda p, v: _io.atomic_write_json(p, {"step": v, "x": [v] * 100})),
        ("config", tmp_path / "config.yaml", lambda p, v: save_config(cfg_a if v == 1 else cfg_b, p)),
        ("text", tmp_path / "log.txt", lambda p, v: _io.atomic_write_text(p, f"version {v}\n" * 100)),
        ("adapter", tmp_path / "a.safetensors", lambda p, v: write_safetensors(p, {"w": torch.full((50,), v)}, {})),
    ]


@pytest.mark.parametrize("where", ["mid-write", "before-rename"])
@pytest.mark.parametrize("writer", range(5))
def test_an_interrupted_write_leaves_the_previous_file(tmp_path, monkeypatch, where, writer):
    name, path, write = _writers(tmp_path)[writer]
    write(path, 1)
    before = path.read_bytes()
    if where == "before-rename":
        monkeypatch.setattr(_io.os, "replace", _crash)
    else:  # the first write to the temporary file stores half its bytes, then the process dies
        real_fdopen = _io.os.fdopen
        monkeypatch.setattr(_io.os, "fdopen", lambda *a, **k: _HalfWriter(real_fdopen(*a, **k)))
    with pytest.raises(Crash):
        write(path, 2)
    assert path.read_bytes() == before, f"{name}: the previous file was damaged"
    assert _files(tmp_path) == [path.name], f"{name}: a temporary file was left behind"


def test_a_run_interrupted_inside_a_checkpoint_write_resumes_to_the_same_weights(
    image_folder_root, tmp_path, monkeypatch
):
    cfg = load_config(tiny_config(image_folder_root, num_episodes=12, checkpoint_every=2, eval_every=4))
    train_experiment(cfg, tmp_path / "reference", progress=False)

    real_save, calls = torch.save, []  # calls: writes of last.pt so far

    def crash_in_the_third_last_pt(obj, f, *args, **kwargs):
        calls.extend([1] if "optimizer" in obj else [])  # last.pt; best.pt holds only step and model
        if len(calls) == 3:  # last.pt at steps 2, 4 and 6: dies half-way through step 6's
            _half_then_crash(real_save)(obj, f, *args, **kwargs)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(_io.torch, "save", crash_in_the_third_last_pt)
    run = tmp_path / "interrupted"
    with pytest.raises(Crash):
        train_experiment(cfg, run, progress=False)
    monkeypatch.setattr(_io.torch, "save", real_save)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4  # the previous one, intact
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    train_experiment(load_config(run / "config.yaml"), run, resume=True, progress=False)
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (tmp_path / "reference", run))
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (tmp_path / "reference", run))
    assert ra["test"] == rb["test"]


# -- (3) every write in the library goes through the atomic helpers ----------------------------------------------

# (file relative to src/meta_learning, call) -> why it is not an atomic helper
ALLOWED_RAW_WRITES = {
    ("_io.py", "fdopen"): "the atomic helpers themselves",
    ("training/loop.py", "open"): "metrics.jsonl is an append-only log; resume drops a line torn by a kill",
    ("data/download.py", "fdopen"): "streams to a temporary file, checks its sha256, then os.replace",
    ("report/figures.py", "savefig"): "renders into an in-memory buffer written later by atomic_open",
}
_WRITE_MODES = set("wax+")


def _raw_writes(tree: ast.AST) -> list[tuple[str, int]]:
    """Calls that write a file without the atomic helpers: (callee, line)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("open", "fdopen"):
            mode = (
                node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            )
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and _WRITE_MODES & set(mode.value):
                found.append((name, node.lineno))
            elif mode is not None and not isinstance(mode, ast.Constant):
                found.append((name, node.lineno))  # a computed mode: cannot prove it read-only
        elif name in ("write_text", "write_bytes", "savefig", "savez", "savez_compressed", "to_csv", "copyfile"):
            found.append((name, node.lineno))
        elif name == "save" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") in ("torch", "np"):
            found.append((f"{func.value.id}.save", node.lineno))  # type: ignore[attr-defined]
    return found


def test_every_library_write_goes_through_an_atomic_helper():
    violations = scan_library(
        _raw_writes, lambda rel, call: (rel, call) in ALLOWED_RAW_WRITES or (rel, call) == ("_io.py", "torch.save")
    )
    assert not violations, "raw file writes (use meta_learning._io.atomic_*):\n" + "\n".join(violations)


def test_the_scan_finds_raw_writes():
    code = "open(p, 'w')\nopen(p)\nPath(p).write_text('x')\ntorch.save(x, p)\nopen(p, mode='ab')\nfig.savefig(p)\n"
    assert [c for c, _ in _raw_writes(ast.parse(code))] == ["open", "write_text", "torch.save", "open", "savefig"]


@pytest.mark.parametrize("writer", range(5))
def test_atomic_writes_get_the_permissions_a_plain_write_would(tmp_path, writer):
    """mkstemp creates 0o600 files: run folders shared with a group (or served for a report) became unreadable."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    name, path, write = _writers(tmp_path)[writer]
    write(path, 1)
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == _io.FILE_MODE, name
