#!/usr/bin/env bash
# Set up if needed, then run the default test suite. Extra arguments go to pytest (-m slow: the long ones).
# TEST_WORKERS=N: the number of test processes. By default one per core up to 4, the test files
# spread over them by pytest-xdist, each training with one thread; TEST_WORKERS=1 runs everything
# in this one process, without xdist.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${TEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}
if ! [[ "$workers" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: TEST_WORKERS=$workers: give the number of test processes, 1 or more (1: one process, no xdist)." >&2
  exit 2
fi
bash scripts/setup.sh
if [ "$workers" -gt 1 ]; then
  exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
fi
exec .venv/bin/python -m pytest -p no:xdist "$@"
