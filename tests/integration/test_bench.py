"""The benchmark command against the real server on the tiny model, for a few seconds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from servers import REPO_ROOT

pytestmark = pytest.mark.integration


def test_bench_run_against_our_server(server, tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "serving.bench", "run", "--url", server.url, "--concurrency", "1,4",
               "--requests", "4", "--output-tokens", "8", "--prompt-words", "4,12", "--deadline", "60",
               "--server-pid", str(server.process.pid), "--label", "ours", "--json", str(out)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| ours" in result.stdout and "out tok/s" in result.stdout
    assert "c=4: 4/4 requests" in result.stderr  # progress
    levels = json.loads(out.read_text())["levels"]
    assert [level["concurrency"] for level in levels] == [1, 4]
    for level in levels:
        assert level["completed"] == 4 and level["errors"] == 0
        assert level["output_tokens"] == 4 * 8  # ignore_eos and min_tokens hold every request to 8 tokens
        assert level["ttft_p50"] > 0 and level["itl_p50"] > 0 and level["e2e_p95"] >= level["e2e_p50"]
        assert level["peak_rss_mib"] > 50


def test_bench_run_on_tgi_route(server, tmp_path):
    command = [sys.executable, "-m", "serving.bench", "run", "--url", server.url, "--api", "tgi",
               "--concurrency", "2", "--requests", "2", "--output-tokens", "4", "--prompt-words", "6",
               "--quiet"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| server | 2" in result.stdout.replace("  ", " ").replace("  ", " ")


def test_bench_conversations_against_our_server(server, tmp_path):
    out = tmp_path / "chat.json"
    command = [sys.executable, "-m", "serving.bench", "run", "--url", server.url, "--concurrency", "2",
               "--requests", "6", "--turns", "3", "--turn-words", "5", "--output-tokens", "6", "--prompt-words", "8",
               "--deadline", "60", "--quiet", "--json", str(out)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    level = json.loads(out.read_text())["levels"][0]
    assert level["completed"] == 6 and level["errors"] == 0 and level["output_tokens"] == 6 * 6
    # a third turn resends two prompts and replies: the mean prompt is well over the 8-word opening's tokens
    assert level["mean_prompt_tokens"] > 16
