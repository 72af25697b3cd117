#!/usr/bin/env bash
# Set everything up, then run the whole test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Test files run in parallel (pytest-xdist), each file's tests in one worker so that a module's server starts
# once: most tests wait on servers they start, so two workers on two cores halve the wall time. At most four;
# `-n 0` (or any later -n) overrides it.
workers=$(nproc); [ "$workers" -gt 4 ] && workers=4
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
