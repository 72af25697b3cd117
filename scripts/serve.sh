#!/usr/bin/env bash
# Set everything up, then serve (the default model unless HF_MODEL_ID says otherwise) on port 8080.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m serving "$@"
