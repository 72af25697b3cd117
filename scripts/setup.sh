#!/usr/bin/env bash
# Create (or update) .venv with everything needed to serve and to test. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
. .venv/bin/activate
quiet() { "$@" 2>&1 | grep -v "^WARNING: Location" || true; test "${PIPESTATUS[0]}" -eq 0; }
quiet pip install -q --upgrade pip
# torch first and pinned: 2.13.0 is the CPU wheel on this kind of machine; a range would pull a CUDA build.
quiet pip install -q "torch==2.13.0"
quiet pip install -q -e ".[test,sagemaker]"
# TGI's own client pins huggingface_hub<1, which transformers 5 outgrew; its code works with the newer hub.
quiet pip install -q --no-deps "text-generation==0.7.0"
# The CPU decode kernel, built once per machine with g++ (the server builds it at its first start otherwise; without
# a compiler it runs with torch's gathered SDPA, so this step never fails the setup).
python -m serving.engine.cpu_kernels || true
