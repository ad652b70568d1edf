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
# 20-way (not run for the recorded figures: the shared 2-core machine had no time left in that session):
# flock "$lock" python $b --algo maml --way 20 --iterations 100 --eval-every 20 --val-tasks 40 --curve-tasks 200
python $b --plot
