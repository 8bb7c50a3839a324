#!/usr/bin/env bash
# Set up if needed, then train (default: experiment=record_16). Extra arguments are Hydra overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m aprelu_exp "$@"
