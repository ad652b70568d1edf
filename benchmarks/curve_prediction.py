"""Learning-curve extrapolation: predict the final held-out loss from the first 25% / 50% of real curves.

The curves are those recorded by ``adaptive_optim.py`` (every optimiser and task, a held-out loss every 10 steps);
run that first. For each curve with finite values the :class:`~meta_learning.optim.LearningCurveAnalyzer`
(``mode="min"``, ``bounds=(0, inf)``) predicts the last point from a prefix; the baseline predicts the prefix's
last value. Reported: mean and median absolute error, how often the analyzer beats the baseline, and how often the
truth falls in the analyzer's ±2σ interval.

Usage:
    python benchmarks/curve_prediction.py            # reads benchmarks/out/adaptive_optim.json
    python benchmarks/curve_prediction.py --fast     # the first 10 curves only
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from meta_learning._io import atomic_write_json  # noqa: E402
from meta_learning.optim import LearningCurveAnalyzer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--source", default=str(REPO / "benchmarks" / "out" / "adaptive_optim.json"))
    args = ap.parse_args()
    src = json.loads(Path(args.source).read_text())
    curves = {k: r["val_curve"] for k, r in src["runs"].items() if all(math.isfinite(v) for v in r["val_curve"])}
    skipped = len(src["runs"]) - len(curves)
    if args.fast:
        curves = dict(list(curves.items())[:10])
    analyzer = LearningCurveAnalyzer(mode="min", bounds=(0.0, float("inf")))
    from _machine import machine_info

    result: dict[str, Any] = {"machine": machine_info(), "source": args.source, "curves": len(curves),
                              "skipped_nonfinite": skipped, "steps_per_curve": None, "fractions": {}}  # fmt: skip
    t0 = time.perf_counter()
    for frac in (0.25, 0.5):
        ours, base, covered, wins, rel_ours, rel_base = [], [], 0, 0, [], []
        for curve in curves.values():
            n = len(curve)
            result["steps_per_curve"] = n
            k = max(analyzer.min_points, math.ceil(frac * n))
            if k >= n:  # too short to leave anything to predict
                continue
            pred = analyzer.predict(curve[:k], at=n)
            truth = curve[-1]
            e_ours, e_base = abs(pred.mean - truth), abs(curve[k - 1] - truth)
            ours.append(e_ours)
            base.append(e_base)
            rel_ours.append(e_ours / abs(truth))
            rel_base.append(e_base / abs(truth))
            wins += e_ours < e_base
            covered += abs(pred.mean - truth) <= 2 * pred.std
        result["fractions"][str(frac)] = {
            "mae": statistics.mean(ours), "mae_last_value": statistics.mean(base),
            "median_ae": statistics.median(ours), "median_ae_last_value": statistics.median(base),
            "median_rel_error": statistics.median(rel_ours), "median_rel_error_last_value": statistics.median(rel_base),
            "wins": wins, "coverage_2sigma": covered / len(ours), "n": len(ours),
        }  # fmt: skip
    result["seconds"] = time.perf_counter() - t0
    print(f"final-value prediction on {len(curves)} held-out loss curves of {result['steps_per_curve']} points "
          f"({skipped} non-finite skipped)")  # fmt: skip
    print(f"{'prefix':<8}{'MAE':>9}{'MAE last':>10}{'med rel':>9}{'med rel last':>14}{'wins':>7}{'2σ cover':>10}")
    for frac, r in result["fractions"].items():
        wins = f"{r['wins']}/{r['n']}"
        print(f"{float(frac):<8.0%}{r['mae']:>9.4f}{r['mae_last_value']:>10.4f}{r['median_rel_error']:>9.3f}"
              f"{r['median_rel_error_last_value']:>14.3f}{wins:>7}{r['coverage_2sigma']:>10.2f}")  # fmt: skip
    out = REPO / "benchmarks" / "out" / "curve_prediction.json"
    atomic_write_json(out, result)
    print(f"wrote {out} ({result['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
