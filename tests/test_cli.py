from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import yaml

from meta_learning._io import safe_torch_load
from meta_learning.cli import main
from meta_learning.config import load_config
from meta_learning.experiment import evaluate_learner, load_run
from meta_learning.fewshot import EpisodicLearner


@pytest.fixture
def real_env(monkeypatch, data_root, omniglot_session_cache):
    monkeypatch.setenv("META_LEARNING_DATA", str(data_root))
    monkeypatch.setenv("META_LEARNING_CACHE", str(omniglot_session_cache))


TINY = [
    "--set", "train.num_episodes=4", "--set", "train.eval_every=2", "--set", "train.val_episodes=3",
    "--set", "train.checkpoint_every=2", "--set", "eval.episodes=5", "--set", "data.train_way=5",
    "--set", "data.download=false", "--no-progress",
]  # fmt: skip


def test_train_then_evaluate_reproduces_the_reported_accuracy(real_env, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "protonet_omniglot_5w1s", "--run-dir", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "test 5-way 1-shot:" in out and f"run folder: {run}" in out
    page = run / "report" / "report.html"  # the train command ends with the run's report
    assert f"report: {page}" in out and "<img" in page.read_text()
    results = json.loads((run / "results.json").read_text())
    acc = results["test"]["5-way 1-shot"]
    assert acc["n"] == 5 and 0.0 <= acc["mean"] <= 1.0
    assert results["steps"] == 4
    cfg = load_config(run / "config.yaml")  # the resolved config, overrides included
    assert cfg.train.num_episodes == 4 and cfg.data.train_way == 5 and cfg.run_dir == str(run)
    assert safe_torch_load(run / "checkpoints" / "best.pt")["step"] == results["best_step"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "val"] == [2, 4]

    # evaluate rebuilds the learner from the run folder and gets the same number on the same episodes
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint: {run / 'checkpoints' / 'best.pt'}" in out  # which file was evaluated
    reported = json.loads(out.strip().splitlines()[-1])
    assert reported["mean"] == pytest.approx(acc["mean"]) and reported["n"] == 5
    assert main(["evaluate", str(run), "--way", "20", "--episodes", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["way"] == 20
    # --batch-norm episode: the learner's evaluate with each episode's BatchNorm statistics, on the same episodes
    modes = []  # what the learner's evaluate was asked for (the accuracies alone could agree by chance)
    original = EpisodicLearner.evaluate
    monkeypatch.setattr(
        EpisodicLearner, "evaluate", lambda self, eps, **kw: modes.append(kw) or original(self, eps, **kw)
    )
    assert main(["evaluate", str(run), "--batch-norm", "episode"]) == 0
    assert modes == [{"batch_norm": "episode"}]
    transductive = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg, learner = load_run(run, "best")
    expected = evaluate_learner(replace(cfg, eval=replace(cfg.eval, batch_norm="episode")), learner)
    assert transductive["mean"] == pytest.approx(expected.mean) and transductive["n"] == 5


def test_resume_continues_a_run_folder(real_env, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "relationnet_omniglot_5w1s", "--run-dir", str(run), *TINY]) == 0
    assert main(["train", str(run), "--resume", "--set", "train.num_episodes=6", "--no-progress"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 6
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "val"] == [2, 4, 6]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["num_episodes"] == 6


def test_errors_are_reported_with_exit_code_2(tmp_path, capsys):
    assert main(["train", "no_such_config"]) == 2
    err = capsys.readouterr().err
    assert "no_such_config" in err and "protonet_omniglot_5w1s" in err
    assert main(["train", "protonet_omniglot_5w1s", "--set", "train.nun_episodes=3"]) == 2
    assert "did you mean 'num_episodes'" in capsys.readouterr().err
    assert main(["train", "protonet_omniglot_5w1s", "--run-dir", str(tmp_path / "x"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["datasets"], ["configs"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: meta-learning" in capsys.readouterr().out


def test_datasets_and_configs_listing(real_env, capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    line = out.split("omniglot", 1)[1].splitlines()[0]
    assert "found:" in line and "incomplete" not in line
    assert "images_background 964 characters / 19280 drawings" in line
    assert "images_evaluation 659 characters / 13180 drawings" in line
    assert main(["configs"]) == 0
    names = capsys.readouterr().out.split()
    shipped = {"protonet_omniglot_5w1s", "relationnet_omniglot_20w5s", "maml_omniglot_5w1s", "mamlpp_omniglot_5w1s"}
    assert shipped <= set(names)
    assert len(names) == 11


def _tiny_maml_run(config: str, run, iterations: int) -> list[str]:
    """`train` arguments for a shipped MAML-family config cut to a few meta-batches of 2 tasks and 4 test tasks."""
    n = str(iterations)
    return ["train", config, "--run-dir", str(run), "--set", "maml.meta_batch_size=2",
            "--set", f"train.num_episodes={n}", "--set", f"train.eval_every={n}", "--set", "train.val_episodes=2",
            "--set", "eval.episodes=4", "--set", "data.download=false", "--no-progress"]  # fmt: skip


def test_maml_config_trains_and_evaluates_through_the_cli(real_env, tmp_path, capsys):
    run = tmp_path / "maml"
    assert main(_tiny_maml_run("maml_omniglot_5w1s", run, iterations=3)) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 3 and results["test"]["5-way 1-shot"]["n"] == 4
    state = safe_torch_load(run / "checkpoints" / "last.pt")
    assert int(state["model"]["iteration"]) == 3  # three meta-updates of the MAML learner
    assert main(["evaluate", str(run)]) == 0
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reported["mean"] == pytest.approx(results["test"]["5-way 1-shot"]["mean"])
    code = main(["train", "maml_omniglot_5w1s", "--set", "data.test_way=20", "--run-dir", str(tmp_path / "x")])
    assert code == 2 and "train_way=5 but data.test_way=20" in capsys.readouterr().err


def test_maml_plus_plus_config_trains_and_its_run_evaluates_through_the_cli(real_env, tmp_path, capsys):
    run = tmp_path / "mamlpp"
    assert main(_tiny_maml_run("mamlpp_omniglot_5w1s", run, iterations=2)) == 0
    results = json.loads((run / "results.json").read_text())
    state = safe_torch_load(run / "checkpoints" / "last.pt")["model"]
    lslr = state["inner_lrs.features__0__0__weight"]  # learned per-layer per-step rates (LSLR), trained
    assert lslr.shape == (5,) and not torch.equal(lslr, torch.full((5,), 0.1))
    assert any(k.endswith("running_mean") and v.shape == (6, 64) for k, v in state.items())  # per-step BatchNorm
    assert main(["evaluate", str(run)]) == 0  # the run's config rebuilds the same MAML++ learner
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reported["mean"] == pytest.approx(results["test"]["5-way 1-shot"]["mean"])


def _omniglot_names(zip_path, set_name, characters, drawings):
    """An archive in the official layout whose PNGs are empty: `datasets` only lists the names."""
    import zipfile

    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w") as zf:
        for c in range(1, characters + 1):
            for d in range(1, drawings + 1):
                zf.writestr(f"{set_name}/Alpha/character{c:02d}/{c:04d}_{d:02d}.png", b"")


def test_datasets_checks_both_omniglot_sets_and_their_counts(tmp_path, monkeypatch, capsys):
    from meta_learning.data import omniglot as omniglot_module

    def omniglot_line():
        assert main(["datasets", "--root", str(tmp_path)]) == 0
        return capsys.readouterr().out.split("omniglot", 1)[1].splitlines()[0]

    assert omniglot_line().split() == ["not", "found"]
    _omniglot_names(tmp_path / "omniglot" / "images_background.zip", "images_background", 2, 3)
    line = omniglot_line()  # only the background set: not "found"
    assert line.lstrip().startswith("incomplete:") and "images_evaluation not found" in line
    assert "images_background 2 characters / 6 drawings, expected 964 x 20" in line
    _omniglot_names(tmp_path / "omniglot" / "images_evaluation.zip", "images_evaluation", 1, 3)
    monkeypatch.setattr(omniglot_module, "OFFICIAL_CHARACTERS", {"images_background": 2, "images_evaluation": 1})
    monkeypatch.setattr(omniglot_module, "DRAWINGS_PER_CHARACTER", 3)
    line = omniglot_line()
    assert line.lstrip().startswith("found:") and "images_evaluation 1 characters / 3 drawings (" in line


def test_a_corrupt_archive_is_an_error_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("META_LEARNING_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data" / "omniglot").mkdir(parents=True)
    (tmp_path / "data" / "omniglot" / "images_background.zip").write_bytes(b"not a zip")
    args = ["train", "protonet_omniglot_5w1s", "--run-dir", str(tmp_path / "run"), "--no-progress",
            "--set", f"data.root={tmp_path / 'data'}", "--set", "data.download=false"]  # fmt: skip
    assert main(args) == 2  # Omniglot raises RuntimeError for a corrupt archive
    err = capsys.readouterr().err
    assert err.startswith("meta-learning train: error: ") and "is not a valid zip archive" in err
    assert main(["datasets", "--root", str(tmp_path / "data")]) == 0  # the listing says so and goes on
    assert "unreadable:" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--way", "--shot", "--episodes"])
def test_evaluate_refuses_non_positive_sizes(tmp_path, capsys, flag):
    assert main(["evaluate", str(tmp_path), flag, "0"]) == 2  # not replaced by the config's value
    assert f"{flag}=0 but it must be a positive integer" in capsys.readouterr().err


def test_evaluate_refuses_a_missing_explicit_checkpoint(tmp_path, capsys):
    from meta_learning.config import ExperimentConfig, save_config

    save_config(ExperimentConfig(), tmp_path / "config.yaml")
    assert main(["evaluate", str(tmp_path), "--checkpoint", "best"]) == 2
    assert f"no checkpoint at {tmp_path / 'checkpoints' / 'best.pt'}" in capsys.readouterr().err


def test_evaluate_batch_norm_choices_are_the_configs():
    from meta_learning.cli import _parser
    from meta_learning.config import BATCH_NORM_MODES

    sub = next(a for a in _parser()._actions if a.dest == "command")
    flag = next(a for a in sub.choices["evaluate"]._actions if a.dest == "batch_norm")
    assert tuple(flag.choices) == BATCH_NORM_MODES
