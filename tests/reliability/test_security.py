"""Untrusted files never run code, and config values never steer a write outside the run folder.

A source scan of ``src/`` refuses ``torch.load`` without ``weights_only=True``, ``yaml.load``-family calls and
unsafe loaders, unrestricted ``pickle``, ``eval``/``exec``, ``marshal``/``shelve``, ``np.load(allow_pickle=True)``
and shell commands; behavioural tests check that a malicious pickle or YAML tag is refused without running, and
that a config ``name`` such as ``../../x`` or ``/abs/x`` (which builds ``runs/<name>-<time>``) is an error.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import yaml

import meta_learning
from _reliability import scan_library, tiny_config, write_config
from meta_learning._io import safe_torch_load
from meta_learning.cli import main
from meta_learning.config import ExperimentConfig, apply_overrides, load_config
from meta_learning.training.checkpoint import load_checkpoint

SRC = Path(meta_learning.__file__).resolve().parent

# (file relative to src/meta_learning, finding) -> why it is safe
ALLOWED = {
    ("data/cifar.py", "pickle.Unpickler"): "subclass whose find_class admits only NumPy array reconstruction",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_uses(tree: ast.AST) -> list[tuple[str, int]]:
    """Findings ``(what, line)`` of unsafe deserialisation or code execution in a module's AST."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [(f"import {n}", node.lineno) for n in names if n.split(".")[0] in ("marshal", "shelve", "dill")]
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "yaml", "torch"):
                risky = {"load", "loads", "Unpickler", "unsafe_load", "full_load", "Loader", "UnsafeLoader"}
                found += [(f"from {node.module} import {a.name}", node.lineno) for a in node.names if a.name in risky]
        if isinstance(node, ast.ClassDef):
            found += [(_dotted(b), node.lineno) for b in node.bases if _dotted(b) == "pickle.Unpickler"]
        if isinstance(node, ast.Attribute) and _dotted(node) in ("yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader"):
            found.append((_dotted(node), node.lineno))
        if not isinstance(node, ast.Call):
            continue
        name, kw = _dotted(node.func), {k.arg: k.value for k in node.keywords}
        if name == "torch.load" and not _true(kw.get("weights_only")):
            found.append(("torch.load without weights_only=True", node.lineno))
        elif (
            name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all")
            or name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads")
            or name in ("eval", "exec", "compile", "__import__", "os.system", "os.popen")
        ):
            found.append((name, node.lineno))
        elif name in ("np.load", "numpy.load") and _true(kw.get("allow_pickle")):
            found.append(("np.load(allow_pickle=True)", node.lineno))
        elif name.startswith("subprocess.") and _true(kw.get("shell")):
            found.append((f"{name}(shell=True)", node.lineno))
    return found


def test_the_library_never_deserialises_unsafely_or_runs_code():
    violations = scan_library(unsafe_uses, lambda rel, what: (rel, what) in ALLOWED)
    assert not violations, "unsafe loading or code execution in src/:\n" + "\n".join(violations)


def test_the_scan_finds_each_kind_of_violation():
    code = """
import marshal
from pickle import loads
torch.load(p)
torch.load(p, weights_only=False)
torch.load(p, weights_only=True)
yaml.load(text, Loader=yaml.Loader)
yaml.safe_load(text)
pickle.loads(b)
eval("1")
model.eval()
np.load(p, allow_pickle=True)
subprocess.run(cmd, shell=True)
class U(pickle.Unpickler): pass
"""
    assert sorted(w for w, _ in unsafe_uses(ast.parse(code))) == sorted([
        "import marshal", "from pickle import loads", "pickle.Unpickler", "yaml.Loader",
        "torch.load without weights_only=True", "torch.load without weights_only=True", "yaml.load", "pickle.loads",
        "eval", "np.load(allow_pickle=True)", "subprocess.run(shell=True)",
    ])  # fmt: skip


def test_the_cifar_unpickler_is_restricted():
    import io
    import pickle

    from meta_learning.data.cifar import safe_load_pickle

    with pytest.raises(pickle.UnpicklingError):
        safe_load_pickle(io.BytesIO(pickle.dumps(Path("/etc/passwd"))))


class _Payload:
    """Unpickling this object would create ``target``: proof that code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_malicious_checkpoint_is_refused_without_running_its_code(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "last.pt"
    torch.save({"version": 1, "model": _Payload(target)}, path)
    with pytest.raises(Exception) as info:
        safe_torch_load(path)
    assert "weights_only" in str(info.value) or "Unsupported" in str(info.value)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(path)
    assert not target.exists()


def test_a_yaml_python_tag_is_refused(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:pathlib.Path.touch [{str(target)!r}]\n")
    with pytest.raises(ValueError, match="plain YAML or JSON only"):
        load_config(path)
    with pytest.raises(ValueError, match="not valid YAML"):
        apply_overrides(ExperimentConfig(), [f"name=!!python/object/apply:os.system ['touch {target}']"])
    assert not target.exists()
    assert yaml.safe_load("a: 1") == {"a": 1}


# -- config values that would build a write path outside the run root ---------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "..", ".", "/abs/x", "a/b", "a\\b", "C:evil", "", "  ", "x\0y"])
def test_a_config_name_cannot_escape_the_runs_folder(name):
    with pytest.raises(ValueError, match=r"name=.* one path component") as info:
        load_config({"name": name})
    assert repr(name) in str(info.value)
    with pytest.raises(ValueError, match="name="):
        apply_overrides(ExperimentConfig(), [f"name={name}"] if name.strip() and "\0" not in name else ["name=.."])


@pytest.mark.parametrize("name", ["protonet-omniglot-5w1s", "my_run.v2", "Ω-run", "a b"])
def test_ordinary_names_are_accepted(name):
    assert load_config({"name": name}).name == name


def test_the_cli_refuses_an_escaping_name_and_writes_nothing(image_folder_root, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    config = write_config(tmp_path / "c.yaml", tiny_config(image_folder_root, num_episodes=2, checkpoint_every=1,
                                                             eval_every=1))  # fmt: skip
    assert main(["train", str(config), "--set", "name=../../../escaped", "--no-progress"]) == 2
    assert "name='../../../escaped'" in capsys.readouterr().err
    assert not list(tmp_path.rglob("escaped*")) and not (work / "runs").exists()
    # a plain name writes the run under ./runs/ and nowhere else
    assert main(["train", str(config), "--set", "name=ok", "--no-progress"]) == 0
    (run,) = (work / "runs").iterdir()
    assert (
        run.name.startswith("ok-") and (run / "results.json").is_file() and (run / "checkpoints" / "last.pt").is_file()
    )
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
