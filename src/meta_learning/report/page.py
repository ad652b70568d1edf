"""One self-contained HTML page comparing run folders, with its figures also written as PNG files beside it.

Every figure is embedded as a base64 ``data:`` URI, so ``report.html`` works alone (mailed, archived, opened
offline); the same PNGs are written next to it for papers and slides. All text from the run folders is escaped.
A section is drawn only from what the runs record; a run that does not record it is named as such.
"""

from __future__ import annotations

import base64
import datetime
import html
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meta_learning._io import atomic_open, atomic_write_text
from meta_learning.report import figures
from meta_learning.report.runs import RunRecord, load_run_record

HTML_FILE = "report.html"
NOT_RECORDED = "not recorded for this run"


@dataclass(frozen=True)
class _Image:
    file: str
    png: bytes
    alt: str


def build_report(
    run_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *, title: str = "meta-learning report"
) -> Path:
    """Write ``out_dir/report.html`` (figures embedded) and its PNG figures for the run folders ``run_dirs``.

    Sections: a comparison table (test accuracy with its 95% CI, best validation accuracy, steps, wall time,
    FLOPs per step, peak memory, trainable parameters, steps to the adaptation threshold, forgetting, BWT),
    learning curves (training loss/accuracy and validation accuracy against the step, from ``metrics.jsonl``),
    adaptation curves (accuracy against inner steps), accuracy-matrix heatmaps (continual runs) and
    parameter-efficiency bars (from ``results.json``'s ``"metrics"``; see :mod:`meta_learning.report.runs`).

    Args:
        run_dirs: one or more run folders (``results.json`` and/or ``metrics.jsonl`` inside).
        out_dir: folder for ``report.html`` and the PNGs (created; files of the same name are replaced).
        title: the page's title.

    Returns:
        The path of ``report.html``.

    Raises:
        TypeError: ``run_dirs`` is a single path rather than a sequence of paths.
        ValueError: ``run_dirs`` is empty, or a run folder's files are malformed (the message names the file).
        FileNotFoundError: a run folder is missing or is not a run folder (the message names it).
        ImportError: matplotlib is not installed (the message says how to install it).

    Example:
        >>> build_report(["runs/protonet-5w1s", "runs/maml-5w1s"], "report")  # doctest: +SKIP
        PosixPath('report/report.html')
    """
    if isinstance(run_dirs, (str, bytes, os.PathLike)):
        raise TypeError(f"run_dirs must be a sequence of run folders, got the single path {run_dirs!r}; wrap it in [ ]")
    if len(run_dirs) == 0:
        raise ValueError("run_dirs is empty; pass at least one run folder")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileNotFoundError(f"out_dir {str(out)!r} exists and is not a folder; pass a folder for the report")
    runs = [load_run_record(d) for d in run_dirs]
    labelled = list(zip(range(len(runs)), _labels(runs), runs, strict=True))
    sections = [
        _table_section(labelled),
        _figure_section(
            "Learning curves",
            "Training loss and accuracy (averaged over each logging interval) and validation accuracy on the fixed "
            "validation episodes, against the training step, from each run's <code>metrics.jsonl</code>.",
            figures.learning_curves(labelled),
            "learning_curves.png",
            labelled,
            lambda run: run.val_accuracy or run.train_loss,
            "no metrics.jsonl with train/val records",
            "".join(
                f'<p class="note"><b>{_e(label)}</b>: {run.skipped_lines} unreadable line(s) of metrics.jsonl '
                "skipped (torn by a kill).</p>"
                for _, label, run in labelled
                if run.skipped_lines
            ),
        ),
        _figure_section(
            "Adaptation curves",
            "Query accuracy after k inner-loop steps on held-out tasks (MAML family), from "
            "<code>metrics.adaptation_speed</code>.",
            figures.adaptation_curves(labelled),
            "adaptation_curves.png",
            labelled,
            lambda run: run.adaptation_speed,
            "no metrics.adaptation_speed",
        ),
        _matrix_section(labelled),
        _figure_section(
            "Parameter efficiency",
            "Trainable parameters as a share of all the model's parameters, from "
            "<code>metrics.parameter_efficiency</code>.",
            figures.parameter_efficiency(labelled),
            "parameter_efficiency.png",
            labelled,
            lambda run: run.parameter_efficiency,
            "no metrics.parameter_efficiency",
        ),
    ]
    images = [image for _, section_images in sections for image in section_images]
    for image in images:
        with atomic_open(out / image.file, "wb") as f:
            f.write(image.png)
    page = _page(title, labelled, [body for body, _ in sections])
    path = out / HTML_FILE
    atomic_write_text(path, page)
    return path


def _labels(runs: Sequence[RunRecord]) -> list[str]:
    """Run names, with the folder added where two runs share a name."""
    names = [run.name for run in runs]
    labels = [f"{run.name} ({run.path})" if names.count(run.name) > 1 else run.name for run in runs]
    return [f"{label} #{i + 1}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(image: _Image, caption: str) -> str:
    data = base64.b64encode(image.png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(image.alt)}" data-file="{_e(image.file)}">'
        f'<figcaption>{_e(caption)} (<a href="{_e(image.file)}">{_e(image.file)}</a>)</figcaption></figure>'
    )


def _missing(labelled: Sequence[tuple[int, str, RunRecord]], has: Callable[[RunRecord], Any], why: str) -> str:
    rows = [label for _, label, run in labelled if not has(run)]
    return "".join(f'<p class="missing"><b>{_e(label)}</b>: {NOT_RECORDED} ({_e(why)}).</p>' for label in rows)


def _figure_section(
    title: str,
    intro: str,
    png: bytes | None,
    file: str,
    labelled: Sequence[tuple[int, str, RunRecord]],
    has: Callable[[RunRecord], Any],
    why: str,
    extra: str = "",
) -> tuple[str, list[_Image]]:
    body = f"<section><h2>{_e(title)}</h2><p>{intro}</p>"
    images: list[_Image] = []
    if png is not None:
        image = _Image(file, png, title)
        images.append(image)
        body += _img(image, title)
    return body + _missing(labelled, has, why) + extra + "</section>", images


def _matrix_section(labelled: Sequence[tuple[int, str, RunRecord]]) -> tuple[str, list[_Image]]:
    body = (
        "<section><h2>Accuracy matrices</h2><p>Continual runs: entry R[i, j] is the test accuracy (%) on "
        "experience j after training on experiences 0..i; below the diagonal is what was kept, above it what was "
        "not learnt yet.</p>"
    )
    images: list[_Image] = []
    for index, label, run in labelled:
        matrix = run.forgetting["accuracy_matrix"] if run.forgetting is not None else None
        if matrix is None:
            continue
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.")[:60] or "run"
        image = _Image(f"accuracy_matrix_{index + 1}_{slug}.png", figures.accuracy_matrix(label, matrix), label)
        images.append(image)
        body += _img(image, f"{label}: accuracy matrix")
    body += _missing(
        labelled,
        lambda run: run.forgetting is not None and run.forgetting["accuracy_matrix"] is not None,
        "no accuracy matrix: not a continual run",
    )
    return body + "</section>", images


# -- comparison table ---------------------------------------------------------------------------------------------

_HEADERS = (
    "run", "learner", "test accuracy ± 95% CI", "best val. accuracy (step)", "steps", "train wall time",
    "time / step", "FLOPs / step", "peak memory", "device", "trainable parameters", "steps to threshold",
    "avg. forgetting", "BWT",
)  # fmt: skip


def _table_section(labelled: Sequence[tuple[int, str, RunRecord]]) -> tuple[str, list[_Image]]:
    head = "".join(f"<th>{_e(h)}</th>" for h in _HEADERS)
    rows = []
    for _, label, run in labelled:
        cells = _row(label, run)
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    body = (
        "<section><h2>Comparison</h2><p>— : not recorded for this run. Accuracies are means over the fixed test "
        "episodes with their 95% confidence half-width.</p>"
        f'<div class="scroll"><table id="comparison"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )
    return body, []


def _row(label: str, run: RunRecord) -> list[str]:
    results = run.results or {}
    cost = run.computational_cost or {}
    eff, speed, forget = run.parameter_efficiency, run.adaptation_speed, run.forgetting or {}
    best = results.get("best_val_accuracy")
    steps = results.get("steps", cost.get("steps"))
    if steps is None and run.train_loss is not None:
        steps = f"{run.train_loss.steps[-1]:.0f} (last logged)"
    wall = cost.get("train_wall_time_s", results.get("train_wall_time_s"))
    return [
        f'<b>{_e(label)}</b><br><span class="path">{_e(run.path)}</span>',
        _e(run.learner) if run.learner else "—",
        _accuracy_cell(run),
        "—" if best is None else _e(f"{100 * best:.2f}% ({results.get('best_step')})"),
        "—" if steps is None else _e(steps),
        _e(_duration(wall)),
        _e(_duration(cost.get("step_time_s"))),
        _e(_si(cost.get("flops_per_step"), "FLOP")),
        _e(_bytes(cost.get("peak_memory_bytes"))),
        _e(cost.get("device") or "—"),
        "—" if eff is None else _e(f"{100 * eff['fraction']:.3g}% ({eff['trainable']:,} of {eff['total']:,})"),
        _threshold_cell(speed),
        _e(_percent(forget.get("average_forgetting"))),
        _e(_percent(forget.get("bwt"))),
    ]


def _accuracy_cell(run: RunRecord) -> str:
    lines = [f"{s}: {100 * a['mean']:.2f}% ± {100 * a['ci95']:.2f}% (n={a['n']:.0f})" for s, a in run.test.items()]
    ta = run.transfer_accuracy
    if ta is not None:
        known = ta.get("n_way") is not None and ta.get("k_shot") is not None
        setting = f"{ta['n_way']:.0f}-way {ta['k_shot']:.0f}-shot" if known else "transfer"
        if setting not in run.test:
            lines.append(f"{setting}: {100 * ta['mean']:.2f}% ± {100 * ta['ci95']:.2f}% (n={ta['n']:.0f})")
    return "<br>".join(_e(line) for line in lines) or "—"


def _threshold_cell(speed: dict[str, Any] | None) -> str:
    if speed is None:
        return "—"
    threshold = speed.get("threshold")
    reached = speed.get("steps_to_threshold")
    at = "" if threshold is None else f" (to {100 * threshold:.0f}%)"
    return _e(f"not reached in {speed['steps'][-1]:.0f}{at}" if reached is None else f"{reached:.0f}{at}")


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.2f} pp"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{1000 * seconds:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    for prefix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "—"
    for prefix, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.3g} {prefix}"
    return f"{value:.0f} B"


# -- page ---------------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1600px; padding: 0 1.5em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
.meta, .path { color: #666; font-size: 0.85em; } .missing { color: #8a4b00; margin: 0.25em 0; }
.note { color: #555; }
.scroll { overflow-x: auto; } table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
td { white-space: nowrap; } td:first-child { white-space: normal; min-width: 14em; }
th { background: #f3f3f3; } tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; } figcaption { color: #555; font-size: 0.85em; }
"""


def _page(title: str, labelled: Sequence[tuple[int, str, RunRecord]], sections: Sequence[str]) -> str:
    from meta_learning import __version__

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    folders = "".join(f"<li><b>{_e(label)}</b>: <code>{_e(run.path)}</code></li>" for _, label, run in labelled)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{_e(title)}</h1><p class="meta">{len(labelled)} run(s); generated {_e(now)} by meta-learning '
        f"{_e(__version__)}</p><ul>{folders}</ul>{''.join(sections)}</body></html>\n"
    )
