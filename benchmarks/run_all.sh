#!/usr/bin/env bash
# Every benchmark's full run, one after another (timings must not overlap each other), from the project
# root: bash benchmarks/run_all.sh [NAME ...]. Figures land in benchmarks/results/, logs in /tmp.
# The GPU check is not here: it needs a GPU machine (bash benchmarks/gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
declare -A CMD=(
  [input_pipeline]="benchmarks/input_pipeline.py"
  [bookkeeping]="benchmarks/bookkeeping.py"
  [bookkeeping_before]="benchmarks/bookkeeping.py --before"
  [bookkeeping_fresh]="benchmarks/bookkeeping.py --fresh-workers --trials 40"
  [warm_workers]="benchmarks/warm_workers.py"
  [atomic_storage]="benchmarks/atomic_storage.py"
  [tpe_ask]="benchmarks/tpe_ask.py"
  [harness_overhead]="benchmarks/harness_overhead.py"
  [asha_vs_fifo]="benchmarks/asha_vs_fifo.py"
  [memory]="benchmarks/memory.py"
  [searcher_quality]="benchmarks/searcher_quality.py"
  [reference_study]="benchmarks/reference_study.py --epochs 3"
)
ORDER=(input_pipeline bookkeeping bookkeeping_before bookkeeping_fresh warm_workers atomic_storage tpe_ask harness_overhead asha_vs_fifo memory searcher_quality reference_study)
for name in "${@:-${ORDER[@]}}"; do
  echo "== $name: $PY ${CMD[$name]} (log /tmp/bench-$name.log)"
  # shellcheck disable=SC2086 - the command's words are meant to split
  $PY ${CMD[$name]} > "/tmp/bench-$name.log" 2>&1 || { echo "$name failed, see /tmp/bench-$name.log"; continue; }
  sed -n '/^== /,$p' "/tmp/bench-$name.log"
done
