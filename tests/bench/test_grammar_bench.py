"""The structured-output benchmarks run: the mask cost alone, and the engine loop with constrained requests."""

from __future__ import annotations

import dataclasses

import jsonschema

from serving.bench.grammar_mask import MEDIUM_SCHEMA, measure


def test_mask_cost_is_measured_per_step(tiny_model_dir):
    times = measure(str(tiny_model_dir), rows=3, steps=5)
    assert len(times) == 5 and all(t > 0 for t in times)


def test_engine_loop_with_every_other_request_constrained(tiny_model_dir):
    from serving.bench.engine_loop import run_level
    from serving.config import from_env
    from serving.engine.engine import LLMEngine

    config = from_env({"HF_MODEL_ID": str(tiny_model_dir), "TORCH_NUM_THREADS": "1"}).engine
    engine = LLMEngine.from_config(dataclasses.replace(config, max_concurrent_requests=64))
    result = run_level(engine, concurrency=4, total=6, output_tokens=40, words=(5,), seed=0, grammar="mixed")
    assert result.requests == 6 and 0 < result.output_tokens <= 6 * 40


def test_sharing_pairs_a_half_constrained_run_with_a_free_one_of_the_same_lengths(tiny_model_dir, capsys):
    from serving.bench.engine_loop import sharing
    from serving.config import from_env
    from serving.engine.engine import LLMEngine

    config = from_env({"HF_MODEL_ID": str(tiny_model_dir), "TORCH_NUM_THREADS": "1"}).engine
    engine = LLMEngine.from_config(dataclasses.replace(config, max_concurrent_requests=64))
    results = sharing(engine, concurrency=4, total=6, output_tokens=30, words=(5,), seed=0, rounds=2)
    for mixed, free in (results[:2], results[2:]):
        assert mixed.lengths == free.lengths and free.lengths[1::2] == (30, 30, 30)
        assert [len(gaps) for gaps in free.gaps] == [length - 1 for length in free.lengths]
    out = capsys.readouterr().out
    assert "unconstrained half beside constrained rows" in out
    assert "round 1 (constrained first)" in out and "round 2 (unconstrained first)" in out  # the order alternates


def test_the_medium_schema_is_a_valid_schema():
    jsonschema.Draft202012Validator.check_schema(MEDIUM_SCHEMA)
