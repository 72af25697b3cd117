"""`python -m serving.bench.engine_loop --adapters N`: the base model, one adapter and N adapters, round by round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.bench.engine_loop import main


def test_adapters_option_runs_the_three_cases_each_round(tiny_model_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "loop.json"
    assert main(["--model-dir", str(tiny_model_dir), "--concurrency", "4", "--requests", "4", "--output-tokens", "3",
                 "--adapters", "2", "--adapter-rank", "4", "--rounds", "2", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert len(results) == 6 and all(r["output_tokens"] == 4 * 3 for r in results)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("c=4 round")]
    assert len(lines) == 2 and all("base" in line and "one adapter" in line and "2 adapters" in line
                                   for line in lines)
