#!/usr/bin/env bash
# The GPU check: on a machine with CUDA, in under 10 minutes, the bench (fp32 and bf16, compiled and
# with CUDA graphs), a 20-epoch record-16 run, 1/2/4/8 runs at once and 1/4/16/64 packed, into results/<date>_gpu/.
# Without CUDA it runs a CPU-sized version of itself. Arguments go to python -m aprelu_exp.bench.gpu_check
# (--out DIR, --cpu-sized, --budget-s S). Exit status 1 when a step failed (each is recorded).
# GPU_CHECK_PYTHON=/path/to/python uses that interpreter and skips the set-up (the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${GPU_CHECK_PYTHON:-}" ]; then
  bash scripts/setup.sh
fi
exec "${GPU_CHECK_PYTHON:-.venv/bin/python}" -m aprelu_exp.bench.gpu_check "$@"
