#!/usr/bin/env bash
# The tool-selection and multimodal benchmarks at the size reported in RESULTS.md (~10 min on 2 cores).
# Run under the shared lock: flock /work/bench.lock bash benchmarks/run_tools_multimodal.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export META_LEARNING_DATA="${META_LEARNING_DATA:-../shared/data}"
python benchmarks/tools_bandit.py --rounds 5000 --seeds 10 --minilm-seeds 2
python benchmarks/multimodal_digits.py --seeds 3 --epochs 10
python benchmarks/multimodal_fewshot.py --train-episodes 1000 --test-episodes 600
