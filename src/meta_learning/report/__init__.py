"""Visual reports of run folders: ``meta-learning report RUN_DIR [RUN_DIR ...] -o OUT_DIR``.

:func:`build_report` writes one self-contained HTML page (figures embedded as base64 PNGs, also written beside
it) with a comparison table, learning curves, adaptation curves, accuracy-matrix heatmaps and
parameter-efficiency bars; :func:`load_run_record` reads one run folder into a :class:`RunRecord`. Plots need
matplotlib (``pip install 'meta-learning-framework[report]'``), imported only when a figure is drawn.

Example:
    >>> from meta_learning.report import build_report
    >>> build_report(["runs/protonet-omniglot-5w1s"], "report")  # doctest: +SKIP
    PosixPath('report/report.html')
"""

from __future__ import annotations

from meta_learning.report.page import build_report
from meta_learning.report.runs import Curve, RunRecord, load_run_record

__all__ = ["Curve", "RunRecord", "build_report", "load_run_record"]
