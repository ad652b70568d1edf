from __future__ import annotations

import json

import pytest
import yaml

from meta_learning._io import safe_torch_load
from meta_learning.cli import main
from meta_learning.config import load_config


@pytest.fixture
def real_env(monkeypatch, data_root, omniglot_session_cache):
    monkeypatch.setenv("META_LEARNING_DATA", str(data_root))
    monkeypatch.setenv("META_LEARNING_CACHE", str(omniglot_session_cache))


TINY = [
    "--set", "train.num_episodes=4", "--set", "train.eval_every=2", "--set", "train.val_episodes=3",
    "--set", "train.checkpoint_every=2", "--set", "eval.episodes=5", "--set", "data.train_way=5",
    "--set", "data.download=false", "--no-progress",
]  # fmt: skip


def test_train_then_evaluate_reproduces_the_reported_accuracy(real_env, tmp_path, capsys):
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
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reported["mean"] == pytest.approx(acc["mean"]) and reported["n"] == 5
    assert main(["evaluate", str(run), "--way", "20", "--episodes", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["way"] == 20


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
    assert "omniglot" in out and "found:" in out.split("omniglot", 1)[1].splitlines()[0]
    assert main(["configs"]) == 0
    names = capsys.readouterr().out.split()
    assert {"protonet_omniglot_5w1s", "relationnet_omniglot_20w5s", "maml_omniglot_5w1s"} <= set(names)
    assert len(names) == 10


def test_maml_config_trains_and_evaluates_through_the_cli(real_env, tmp_path, capsys):
    run = tmp_path / "maml"
    args = ["train", "maml_omniglot_5w1s", "--run-dir", str(run), "--set", "maml.meta_batch_size=2",
            "--set", "train.num_episodes=3", "--set", "train.eval_every=3", "--set", "train.val_episodes=2",
            "--set", "eval.episodes=4", "--set", "data.download=false", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 3 and results["test"]["5-way 1-shot"]["n"] == 4
    state = safe_torch_load(run / "checkpoints" / "last.pt")
    assert int(state["model"]["iteration"]) == 3  # three meta-updates of the MAML learner
    assert main(["evaluate", str(run)]) == 0
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reported["mean"] == pytest.approx(results["test"]["5-way 1-shot"]["mean"])
    code = main(["train", "maml_omniglot_5w1s", "--set", "data.test_way=20", "--run-dir", str(tmp_path / "x")])
    assert code == 2 and "train_way=5 but data.test_way=20" in capsys.readouterr().err
