#!/usr/bin/env bash
# Set up if needed, then run the default test suite. Extra arguments go to pytest (-m slow: the long ones).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
