#!/usr/bin/env bash
# The GPU check in one command, from anywhere: 4 trials at 0.25 GPU against 1 trial on the whole GPU
# (benchmarks/gpu_check.py, <= 8 minutes on one GPU). Without a GPU it says so and runs the CPU dry run.
# Uses .venv/bin/python when the project has one, else python3 from PATH. Extra arguments pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
