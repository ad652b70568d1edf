from __future__ import annotations

import base64
import io
import json
import re
import sys

import pytest
from PIL import Image

from _report_runs import EVIL_NAME, results, write_metrics_jsonl
from meta_learning.cli import main
from meta_learning.report import build_report, load_run_record
from meta_learning.report.figures import learning_curves, plain

pytest.importorskip("matplotlib", reason="the report's figures need matplotlib")

IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" data-file="([^"]+)">')


def sections(page: str) -> dict[str, str]:
    """``<h2>`` title -> that section's HTML."""
    parts = re.findall(r"<section><h2>(.*?)</h2>(.*?)</section>", page, flags=re.S)
    return dict(parts)


def images(html: str) -> list[tuple[bytes, str]]:
    return [(base64.b64decode(data), file) for data, file in IMG.findall(html)]


def test_load_run_record_reads_the_loop_and_finish_run_formats(protonet_run, continual_run):
    run = load_run_record(protonet_run)
    assert run.name == "protonet-omniglot-5w1s" and run.learner == "protonet"
    assert run.train_loss is not None and run.train_loss.steps == (10, 20, 30, 40)
    assert run.train_loss.values == pytest.approx((0.2, 0.1, 2 / 30, 0.05))
    assert run.val_accuracy is not None and run.val_accuracy.steps == (20, 40)
    assert run.val_accuracy.values == pytest.approx((0.625, 0.75)) and run.val_accuracy.ci95 == (0.02, 0.02)
    assert run.skipped_lines == 1  # the torn last line
    assert run.adaptation_speed is None and run.forgetting is None
    cont = load_run_record(continual_run)
    assert cont.learner == "EWC" and cont.name == "ewc" and cont.train_loss is None
    assert cont.forgetting is not None and cont.forgetting["accuracy_matrix"][2] == (0.70, 0.85, 0.98)
    assert cont.forgetting["bwt"] == -0.205


def test_report_has_every_section_figure_and_table_row(protonet_run, maml_run, continual_run, tmp_path):
    out = tmp_path / "report"
    path = build_report([protonet_run, maml_run, continual_run], out)
    assert path == out / "report.html"
    page = path.read_text()
    parts = sections(page)
    assert list(parts) == ["Comparison", "Learning curves", "Adaptation curves", "Accuracy matrices",
                           "Parameter efficiency"]  # fmt: skip
    embedded = images(page)
    files = [f for _, f in embedded]
    assert files == ["learning_curves.png", "adaptation_curves.png", "accuracy_matrix_3_ewc.png",
                     "parameter_efficiency.png"]  # fmt: skip
    for png, file in embedded:  # the embedded figure is the PNG written next to the page
        assert (out / file).read_bytes() == png
        assert Image.open(io.BytesIO(png)).format == "PNG"
    assert Image.open(out / "learning_curves.png").size == (1600, 440)

    rows = re.findall(r"<tr>(.*?)</tr>", parts["Comparison"], flags=re.S)[1:]
    assert len(rows) == 3
    proto, maml, ewc = rows
    for text in ("protonet-omniglot-5w1s", "5-way 1-shot: 98.61% ± 0.16% (n=1000)", "98.95% (40)", "30.1 min",
                 "376 ms", "2.5 GFLOP", "1.5 GiB", "cpu", "100% (112,980 of 112,980)"):  # fmt: skip
        assert f"{text}<" in proto or f"{text}<" in proto.replace("<br>", "<"), text
    assert "5-way 5-shot: 91.00% ± 1.00% (n=600)" in maml and "0.205% (2,048 of 1,000,000)" in maml
    assert "<td>3 (to 75%)</td>" in maml
    assert "<td>+20.50 pp</td><td>-20.50 pp</td>" in ewc and "<td>EWC</td>" in ewc


def test_missing_metrics_are_stated_not_drawn(protonet_run, maml_run, continual_run, tmp_path):
    page = build_report([protonet_run, maml_run, continual_run], tmp_path / "r").read_text()
    parts = sections(page)
    missing = re.compile(r'<p class="missing"><b>(.*?)</b>: not recorded for this run')
    assert missing.findall(parts["Learning curves"]) == ["&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; "
                                                         "$\\alpha$ maml", "ewc"]  # fmt: skip
    assert missing.findall(parts["Adaptation curves"]) == ["protonet-omniglot-5w1s", "ewc"]
    assert len(missing.findall(parts["Accuracy matrices"])) == 2
    assert missing.findall(parts["Parameter efficiency"]) == ["ewc"]
    assert "1 unreadable line(s) of metrics.jsonl skipped" in parts["Learning curves"]
    ewc_row = re.findall(r"<tr>(.*?)</tr>", parts["Comparison"], flags=re.S)[3]
    assert ewc_row.count("<td>—</td>") == 10  # everything but name, learner, forgetting and BWT

    # a report of runs that record none of a section's data draws no figure for it
    only = tmp_path / "only"
    page = build_report([protonet_run], only).read_text()
    assert [f for _, f in images(page)] == ["learning_curves.png", "parameter_efficiency.png"]
    assert not (only / "adaptation_curves.png").exists()
    assert "not recorded for this run" in sections(page)["Adaptation curves"]


def test_text_from_run_folders_is_escaped(maml_run, tmp_path):
    assert load_run_record(maml_run).name == EVIL_NAME
    page = build_report([maml_run], tmp_path / "r", title="<b>mine</b>").read_text()
    assert "<script>" not in page and "<b>mine</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp;" in page
    assert "<title>&lt;b&gt;mine&lt;/b&gt;</title>" in page


def test_learning_curves_draw_only_the_runs_that_log_them(protonet_run, maml_run):
    png = learning_curves([(0, "a", load_run_record(protonet_run)), (1, "b", load_run_record(maml_run))])
    assert png is not None
    colours = {c for _, c in Image.open(io.BytesIO(png)).convert("RGB").getcolors(1 << 20)}
    assert (0x1F, 0x77, 0xB4) in colours  # C0: the run with metrics.jsonl
    assert (0xFF, 0x7F, 0x0E) not in colours  # C1: no curves, so not drawn (nor in the legend)
    assert learning_curves([(0, "b", load_run_record(maml_run))]) is None


def test_labels_are_drawn_literally_not_as_mathtext():
    assert plain("$\\alpha$ costs $5") == "\\$\\alpha\\$ costs \\$5"  # no $ pair left to start mathtext


def test_duplicate_names_are_told_apart(protonet_run, tmp_path):
    page = build_report([protonet_run, protonet_run], tmp_path / "r").read_text()
    assert "protonet-omniglot-5w1s (" in page and "#2" in page


def test_bad_run_folders_are_refused_with_their_path(tmp_path, protonet_run):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope.*does not exist"):
        build_report([missing], tmp_path / "r")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*is not a run folder: it has neither results.json"):
        build_report([empty], tmp_path / "r")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text('{"name": ')
    with pytest.raises(ValueError, match="broken/results.json is not valid JSON"):
        build_report([broken], tmp_path / "r")
    (broken / "results.json").write_text(json.dumps(results("x", "maml", {"adaptation_speed": {
        "steps": [0, 1], "accuracy": [0.5]}})))  # fmt: skip
    with pytest.raises(ValueError, match=r"metrics.adaptation_speed: steps and accuracy must be .* equal length"):
        build_report([broken], tmp_path / "r")
    (broken / "results.json").write_text(json.dumps(results("x", "p", {"parameter_efficiency": {"trainable": "9"}})))
    with pytest.raises(ValueError, match=r"metrics.parameter_efficiency.trainable='9' but expected a number"):
        build_report([broken], tmp_path / "r")
    with pytest.raises(TypeError, match="sequence of run folders"):
        build_report(str(protonet_run), tmp_path / "r")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run_dirs is empty"):
        build_report([], tmp_path / "r")
    assert not (tmp_path / "r").exists()  # nothing is written before every folder has been read


def test_cli_report(protonet_run, continual_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", str(protonet_run), str(continual_run), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'report.html'}"
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_matrix_2_ewc.png", "learning_curves.png",
                                                      "parameter_efficiency.png", "report.html"]  # fmt: skip
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "RUN_DIR [RUN_DIR ...]" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing_run"), "-o", str(out)]) == 2
    assert "meta-learning report: error:" in (err := capsys.readouterr().err) and "missing_run" in err


def test_report_of_a_real_training_run(tmp_path):
    """A tiny real ``train_experiment`` on a synthetic image folder: the report shows what it wrote."""
    import numpy as np

    from meta_learning.config import ExperimentConfig, from_dict
    from meta_learning.experiment import train_experiment

    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for c in range(4):
            (tmp_path / "data" / split / f"c{c}").mkdir(parents=True)
            for i in range(3):
                pixels = (rng.random((8, 8, 3)) * 60 + 60 * c).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "data" / split / f"c{c}" / f"{i}.png")
    cfg = from_dict(ExperimentConfig, {
        "name": "tiny-protonet",
        "data": {"dataset": "image_folder", "root": str(tmp_path / "data"), "image_size": 16, "train_way": 3,
                 "train_shot": 1, "train_query": 2, "test_way": 3, "test_shot": 1, "test_query": 2},
        "model": {"in_channels": 3, "hidden_channels": 4},
        "train": {"num_episodes": 4, "eval_every": 2, "val_episodes": 2, "checkpoint_every": 2, "progress": False},
        "eval": {"episodes": 3},
    })  # fmt: skip
    written = train_experiment(cfg, tmp_path / "run")
    page = build_report([tmp_path / "run"], tmp_path / "report").read_text()
    row = re.findall(r"<tr>(.*?)</tr>", sections(page)["Comparison"], flags=re.S)[1]
    acc = written["test"]["3-way 1-shot"]
    assert f"3-way 1-shot: {100 * acc['mean']:.2f}% ± {100 * acc['ci95']:.2f}% (n=3)" in row
    assert "<td>protonet</td>" in row and "<td>4</td>" in row
    run = load_run_record(tmp_path / "run")
    assert run.val_accuracy is not None and run.val_accuracy.steps == (2, 4)
    assert run.train_loss is not None and run.train_loss.steps == (4,)  # fit logs every 10 steps and the last
    files = [f for _, f in images(page)]
    assert files[0] == "learning_curves.png"
    recorded = written.get("metrics", {})
    assert ("parameter_efficiency.png" in files) == ("parameter_efficiency" in recorded)
    assert ("adaptation_curves.png" in files) == ("adaptation_speed" in recorded)


def test_runs_without_any_figure_need_no_matplotlib_figure(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results("bare", "protonet")))
    page = build_report([run], tmp_path / "r").read_text()
    assert images(page) == []
    parts = sections(page)
    assert [title for title, body in parts.items() if "<b>bare</b>: not recorded for this run" in body] == [
        "Learning curves", "Adaptation curves", "Accuracy matrices", "Parameter efficiency"]  # fmt: skip
    assert "98.61% ± 0.16%" in page


def test_a_killed_run_with_only_metrics_jsonl(tmp_path):
    run = tmp_path / "killed"
    run.mkdir()
    write_metrics_jsonl(run, steps=30, log_every=10, eval_every=10)
    page = build_report([run], tmp_path / "r").read_text()
    row = re.findall(r"<tr>(.*?)</tr>", sections(page)["Comparison"], flags=re.S)[1]
    assert "<b>killed</b>" in row and "<td>30 (last logged)</td>" in row
    assert [f for _, f in images(page)] == ["learning_curves.png"]


def test_optional_metric_fields_may_be_null(tmp_path):
    run = tmp_path / "sine"
    run.mkdir()
    metrics = {
        "transfer_accuracy": {"mean": 0.5, "ci95": 0.25, "n": 4, "n_way": None, "k_shot": None},
        "computational_cost": {"flops_per_step": None, "train_wall_time_s": 90.0, "steps": 7, "step_time_s": 12.9,
                               "peak_memory_bytes": None, "device": "cpu"},
        "adaptation_speed": {"steps": [0, 1], "accuracy": [0.2, 0.4], "threshold": 0.9, "steps_to_threshold": None},
    }  # fmt: skip
    data = results("sine", "maml", metrics)
    del data["test"], data["steps"], data["train_wall_time_s"]
    (run / "results.json").write_text(json.dumps(data))
    row = re.findall(r"<tr>(.*?)</tr>", build_report([run], tmp_path / "r").read_text(), flags=re.S)[1]
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells[2:10] == ["transfer: 50.00% ± 25.00% (n=4)", "98.95% (40)", "7", "90 s", "12.9 s", "—", "—", "cpu"]
    assert cells[11] == "not reached in 1 (to 90%)"


def test_missing_matplotlib_is_a_clear_error(protonet_run, tmp_path, monkeypatch, capsys):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'meta-learning-framework\[report\]'"):
        build_report([protonet_run], tmp_path / "r")
    assert main(["report", str(protonet_run), "-o", str(tmp_path / "r")]) == 2
    assert "needs matplotlib" in capsys.readouterr().err


def test_figure_file_names_stay_in_the_output_folder(continual_run, tmp_path):
    data = json.loads((continual_run / "results.json").read_text())
    (continual_run / "results.json").write_text(json.dumps({**data, "name": "../../escape/.hidden"}))
    out = tmp_path / "deep" / "r"
    build_report([continual_run], out)
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_matrix_1_escape-.hidden.png", "report.html"]
    assert not (tmp_path / "escape").exists()
