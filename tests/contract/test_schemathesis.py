"""The OpenAPI document against the live server: a bounded schemathesis run (every operation, every check, a fixed
seed and example count) must find nothing, so the document tells the truth about what the routes accept and answer.

The server's context is large (16,000 input tokens) so that no schema-valid prompt is too long for it, the one
check a schema cannot state; `contract_hooks.py` keeps every body's generation short. Run with `-s` to see the
report's summary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from servers import start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
TIMEOUT_SECONDS = 540


def test_schemathesis_finds_no_failure(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = start_server(tiny_model_dir, tmp_path, MAX_INPUT_TOKENS="16000", MAX_TOTAL_TOKENS="17100")
    try:
        proc.wait_ready()
        env = {**os.environ, "PYTHONPATH": str(HERE), "NO_COLOR": "1"}
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(HERE / "schemathesis.toml"), "run",
             f"{proc.url}/api-doc/openapi.json"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT_SECONDS)
    finally:
        proc.stop()
    report = run.stdout + run.stderr
    summary = re.search(r"(\d+) generated, (\d+) passed", report)
    print("\n".join(line for line in report.splitlines() if re.search(r"generated|=====", line)))
    assert run.returncode == 0, report[-20000:]
    assert summary is not None and summary[1] == summary[2] and int(summary[1]) > 1000, report[-5000:]
    assert "Operations:       21 selected / 23 total" in report
