#!/usr/bin/env bash
# The full few-shot Omniglot benchmark as run for benchmarks/RESULTS.md (73 minutes of training on 2 cores,
# plus about 20 minutes of evaluation).
set -euo pipefail
cd "$(dirname "$0")/.."
b=benchmarks/fewshot_omniglot.py
python $b --learners protonet --shots 1 --minutes 30 --out benchmarks/out/fewshot_protonet_1shot.json
python $b --no-throughput --learners protonet --shots 5 --minutes 15 --out benchmarks/out/fewshot_protonet_5shot.json
python $b --no-throughput --learners relationnet --shots 1 --minutes 20 --out benchmarks/out/fewshot_relationnet_1shot.json
python $b --no-throughput --learners relationnet --shots 5 --minutes 8 --out benchmarks/out/fewshot_relationnet_5shot.json
