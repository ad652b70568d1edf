#!/usr/bin/env bash
# The MAML-family Omniglot runs as measured for benchmarks/RESULTS.md, one process per run, each under the global
# benchmark lock (other heavy jobs wait). 5-way: all four algorithms.
set -euo pipefail
cd "$(dirname "$0")/.."
b=benchmarks/maml_omniglot.py
lock=${BENCH_LOCK:-/tmp/meta_learning_bench.lock}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for algo in maml fomaml anil metasgd; do
  flock "$lock" python $b --algo "$algo" --way 5 --iterations 200 --eval-every 20
done
# 20-way, as recorded for MAML and FOMAML on 2026-12-06 (each evaluation with the full curve: ~38 min on 1 thread):
for algo in maml fomaml; do
  flock "$lock" python $b --algo "$algo" --way 20 --iterations 200 --eval-every 20 --val-tasks 40
done
python $b --plot
