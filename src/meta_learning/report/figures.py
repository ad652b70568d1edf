"""The report's figures as PNG bytes, drawn with matplotlib's object API on the Agg canvas.

No ``pyplot``: nothing here touches matplotlib's global state (backend, open figures), so a report can be built
inside a notebook or a training script. Each function draws only what the runs record and returns ``None`` when
no run records it. Runs keep their colour (``C{index}``) in every figure.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from meta_learning.report.runs import Curve, RunRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
LOG_STEPS_RATIO = 10
INSTALL_HINT = "the report needs matplotlib: pip install 'meta-learning-framework[report]' (or pip install matplotlib)"

Labelled = Sequence[tuple[int, str, RunRecord]]  # (colour index, legend label, run)


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def plain(text: str) -> str:
    """``text`` shown literally by matplotlib (a ``$`` would start mathtext)."""
    return text.replace("$", r"\$")


def _plot_curve(ax: Axes, curve: Curve, colour: str, label: str, scale: float = 1.0) -> Any:
    """Draw ``curve`` (times ``scale``) with its 95% band if any; return the line (for a legend)."""
    ys = [scale * v for v in curve.values]
    marker = "o" if len(curve.steps) <= 30 else None
    (line,) = ax.plot(curve.steps, ys, color=colour, label=plain(label), marker=marker, markersize=3, linewidth=1.4)
    if curve.ci95 is not None:
        half = [scale * c for c in curve.ci95]
        low = [y - h for y, h in zip(ys, half, strict=True)]
        high = [y + h for y, h in zip(ys, half, strict=True)]
        ax.fill_between(curve.steps, low, high, color=colour, alpha=0.18, linewidth=0)
    return line


def learning_curves(runs: Labelled) -> bytes | None:
    """Training loss, training accuracy and validation accuracy (with its 95% band) against the step.

    The step axis is logarithmic when the runs' lengths differ by more than ``LOG_STEPS_RATIO`` times, so that a
    short run is not squeezed against the axis by a long one.
    """
    panels = [
        ("training loss", "train_loss", 1.0, "loss"),
        ("training accuracy", "train_accuracy", 100.0, "accuracy (%)"),
        ("validation accuracy (95% CI band)", "val_accuracy", 100.0, "accuracy (%)"),
    ]
    if not any(getattr(run, attr) is not None for _, _, run in runs for _, attr, _, _ in panels):
        return None
    fig = _figure(16, 4.4)
    axes = fig.subplots(1, 3)
    legend: dict[str, Any] = {}  # one legend for the three panels: label -> line
    ends = [c.steps[-1] for _, _, run in runs for _, attr, _, _ in panels if (c := getattr(run, attr)) is not None]
    log_steps = min(ends) > 0 and max(ends) / min(ends) > LOG_STEPS_RATIO
    for ax, (title, attr, scale, ylabel) in zip(axes, panels, strict=True):
        for index, label, run in runs:
            curve = getattr(run, attr)
            if curve is not None:
                legend.setdefault(plain(label), _plot_curve(ax, curve, f"C{index}", label, scale))
        ax.set_title(title)
        ax.set_xlabel("step (log scale)" if log_steps else "step")
        if log_steps:
            ax.set_xscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="0.4")
    fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize="small")
    return _png(fig)


def adaptation_curves(runs: Labelled) -> bytes | None:
    """Query accuracy after each number of inner steps; each run's threshold as a dashed line of its colour."""
    rows = [(i, label, run.adaptation_speed) for i, label, run in runs if run.adaptation_speed is not None]
    if not rows:
        return None
    fig = _figure(7.5, 4.6)
    ax = fig.subplots()
    for index, label, speed in rows:
        colour = f"C{index}"
        ax.plot(speed["steps"], [100 * a for a in speed["accuracy"]], color=colour, marker="o", markersize=4,
                label=plain(label))  # fmt: skip
        if speed.get("threshold") is not None:
            ax.axhline(100 * speed["threshold"], color=colour, linestyle="--", linewidth=0.9, alpha=0.7)
        if speed.get("steps_to_threshold") is not None:
            ax.axvline(speed["steps_to_threshold"], color=colour, linestyle=":", linewidth=0.9, alpha=0.7)
    ax.set_xlabel("inner (adaptation) steps")
    ax.set_ylabel("query accuracy (%)")
    ax.set_title("adaptation curves (dashed: threshold, dotted: steps to reach it)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig)


def accuracy_matrix(label: str, matrix: Sequence[Sequence[float]]) -> bytes:
    """Heatmap of ``R[i][j]`` (row: after training experience ``i``; column: tested on experience ``j``)."""
    rows, cols = len(matrix), len(matrix[0])
    side = min(max(3.2 + 0.45 * cols, 4.5), 12)
    fig = _figure(side + 1.2, min(max(2.4 + 0.45 * rows, 3.2), 12))
    ax = fig.subplots()
    image = ax.imshow([[100 * v for v in row] for row in matrix], cmap="viridis", vmin=0, vmax=100, aspect="auto")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    if cols <= 12:
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=8,
                        color="black" if value > 0.6 else "white")  # fmt: skip
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_xlabel("tested on experience j")
    ax.set_ylabel("after training experience i")
    done = "" if rows == cols else f" ({rows} of {cols} experiences trained)"
    ax.set_title(plain(f"{label}: accuracy matrix R[i, j]{done}"), fontsize="medium")
    return _png(fig)


def parameter_efficiency(runs: Labelled) -> bytes | None:
    """Trainable share of the parameters per run (log axis when the shares span more than 10x), counts annotated."""
    rows = [(i, label, run.parameter_efficiency) for i, label, run in runs if run.parameter_efficiency is not None]
    if not rows:
        return None
    fig = _figure(9, 1.4 + 0.5 * len(rows))
    ax = fig.subplots()
    shares = [100 * float(eff["fraction"]) for _, _, eff in rows]
    positions = list(range(len(rows)))
    ax.barh(positions, shares, color=[f"C{i}" for i, _, _ in rows])
    ax.set_yticks(positions, [plain(label) for _, label, _ in rows])
    ax.invert_yaxis()
    positive = [s for s in shares if s > 0]
    if positive and max(positive) / min(positive) > 10:
        ax.set_xscale("log")
        ax.set_xlim(min(positive) / 3, 300)
    else:
        ax.set_xlim(0, max(100.0, *shares) * 1.3)
    for pos, share, (_, _, eff) in zip(positions, shares, rows, strict=True):
        ax.text(share, pos, f"  {share:.3g}%  ({_count(eff['trainable'])} of {_count(eff['total'])})",
                va="center", fontsize="small")  # fmt: skip
    ax.set_xlabel("trainable parameters (% of total)")
    ax.set_title("parameter efficiency")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _count(n: Any) -> str:
    n = float(n)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}" if math.isfinite(n) else str(n)
