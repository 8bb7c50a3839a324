#!/usr/bin/env bash
# Set up if needed, then run the default test suite. Extra arguments go to pytest (-m slow: the long ones).
# The test files are spread over pytest-xdist workers, one per core up to 4 (TEST_WORKERS=N to
# choose, TEST_WORKERS=0 for one process); each worker trains with one thread.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
workers=${TEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}
if [ "$workers" -gt 1 ]; then
  exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
fi
exec .venv/bin/python -m pytest -p no:xdist "$@"
