#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the package (editable) and test tools.
# TORCH_SPEC overrides the torch pin (e.g. TORCH_SPEC="torch torchvision" for the newest CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import aprelu_exp, torch, pytorch_lightning, hydra, keras_preprocessing, mlflow, optuna, sklearn, pandas, xdist, psycopg, submitit" 2>/dev/null \
    || [ ! -x .venv/bin/aprelu-exp ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
  .venv/bin/python -m pip install -q -e ".[test,slurm,mlflow,search]"
fi
