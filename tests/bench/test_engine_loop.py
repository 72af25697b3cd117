"""The engine-alone benchmark: time to first token per request, and the pacing check of a long prompt arriving."""

from __future__ import annotations

import dataclasses
import re

import pytest

from serving.bench.engine_loop import arrival, run_level


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from serving.config import from_env
    from serving.engine.engine import LLMEngine

    config = from_env({"HF_MODEL_ID": str(tiny_model_dir), "TORCH_NUM_THREADS": "1"}).engine
    return LLMEngine.from_config(dataclasses.replace(config, max_concurrent_requests=64))


def test_every_request_has_a_time_to_first_token(engine):
    result = run_level(engine, concurrency=3, total=5, output_tokens=4, words=(8, 70), seed=0)
    assert len(result.first_token_seconds) == 5 and all(t > 0 for t in result.first_token_seconds)
    assert 0 < result.ttft_p50 <= max(result.first_token_seconds)


def test_the_arriving_prompt_check_reports_both_cases(engine, capsys):
    arrival(engine, streams=2, words=60, seed=0, rounds=2, steps=6)
    lines = capsys.readouterr().out.splitlines()
    assert [re.search(r"(with|without) a 60-word", line).group(1) for line in lines[:4]] == ["without", "with"] * 2
    assert "the prompt's first token after" in lines[1] and "first token" not in lines[0]
    pooled = re.fullmatch(r"2 streams, 2 rounds pooled: p99 inter-token ([\d.]+) ms without, ([\d.]+) ms with the "
                          r"prompt arriving \(ratio ([\d.]+)\)", lines[4])
    assert pooled is not None and len(lines) == 5
    without, with_prompt, ratio = map(float, pooled.groups())
    assert without > 0 and ratio == pytest.approx(with_prompt / without, rel=0.15)  # of numbers rounded to 0.1 ms
    assert not engine.has_work()
