"""`GET /metrics`: TGI's metric names (no `_total`), labels and buckets, recorded per request and per generation."""

from __future__ import annotations

import re
import time

import pytest

from serving.api.metrics import duration_buckets, linear_buckets


def scrape(http) -> str:
    """The exposition text."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.content_type == "text/plain; charset=utf-8"
    return response.get_data(as_text=True)


def value(text: str, sample: str) -> float | None:
    """The value of one sample line (`name` or `name{labels}`), or None when absent."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return None if match is None else float(match.group(1))


def test_nothing_recorded_yet_shows_only_the_engine_gauges(http):
    text = scrape(http)
    assert "tgi_request_count" not in text
    assert value(text, "tgi_queue_size") == 0
    assert value(text, "tgi_batch_current_size") == 0
    assert value(text, "tgi_batch_current_max_tokens") == 0
    assert value(text, "tgi_batch_max_total_tokens") == 4096
    assert "# TYPE tgi_queue_size gauge" in text
    for gauge in ("serving_kv_cache_blocks_used", "serving_kv_cache_blocks_free", "serving_prefix_cache_hit_ratio",
                  "serving_preemptions"):
        assert value(text, gauge) == 0, gauge


def test_a_generation_is_counted_with_tgi_names_and_buckets(http):
    http.post("/generate", json={"inputs": "a b c", "parameters": {"max_new_tokens": 10}})
    text = scrape(http)
    assert "# TYPE tgi_request_count counter" in text
    assert not re.search(r"^\w+_(total|created)[{ ]", text, re.MULTILINE)
    assert value(text, "tgi_request_count") == 1
    assert value(text, "tgi_request_success") == 1
    assert value(text, "tgi_request_generated_tokens_count") == 1
    assert value(text, "tgi_request_generated_tokens_sum") == 4
    assert value(text, "tgi_request_input_length_sum") == 3
    assert value(text, "tgi_request_max_new_tokens_sum") == 10
    for name in ("duration", "validation_duration", "queue_duration", "inference_duration",
                 "mean_time_per_token_duration"):
        assert f"# TYPE tgi_request_{name} histogram" in text
        les = re.findall(rf'^tgi_request_{name}_bucket{{le="([^"]+)"}}', text, re.MULTILINE)
        assert [float(le) for le in les[:-1]] == duration_buckets() and les[-1] == "+Inf"
    assert value(text, 'tgi_request_queue_duration_bucket{le="+Inf"}') == 1
    input_les = re.findall(r'^tgi_request_input_length_bucket{le="([^"]+)"}', text, re.MULTILINE)
    assert [float(le) for le in input_les[:-1]] == linear_buckets(100)
    new_tokens_les = re.findall(r'^tgi_request_max_new_tokens_bucket{le="([^"]+)"}', text, re.MULTILINE)
    assert [float(le) for le in new_tokens_les[:-1]] == linear_buckets(128)


def test_duration_buckets_are_tgis():
    buckets = duration_buckets()
    assert len(buckets) == 35
    assert buckets[0] == pytest.approx(0.00015)
    assert all(b == pytest.approx(a * 1.5) for a, b in zip(buckets, buckets[1:]))


def test_failures_carry_tgis_err_label(http, engine):
    http.post("/generate", json={"inputs": "a", "parameters": {"temperature": 0}})
    http.post("/generate_stream", json={"inputs": "a", "parameters": {"top_k": 0}})
    http.post("/v1/completions", json={"prompt": "a", "suffix": "b"})
    engine.fail_at_admission = True
    engine.fail_kind, engine.fail_message = engine.fail_kind.OVERLOADED, "Model is overloaded"
    http.post("/generate", json={"inputs": "a"})
    text = scrape(http)
    assert value(text, 'tgi_request_failure{err="validation"}') == 3
    assert value(text, 'tgi_request_failure{err="overloaded"}') == 1
    assert value(text, "tgi_request_count") == 4
    assert "tgi_request_success" not in text


def test_framework_errors_are_not_counted(http):
    http.post("/generate", data="{", content_type="application/json")
    assert "tgi_request_count" not in scrape(http)


def test_chat_and_completions_count_each_generation_too(http):
    http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a b"}]})
    assert value(scrape(http), "tgi_request_count") == 2
    http.post("/v1/completions", json={"prompt": ["a", "b"]})
    assert value(scrape(http), "tgi_request_count") == 5
    http.post("/chat_tokenize", json={"messages": [{"role": "user", "content": "a b"}]})
    text = scrape(http)
    assert value(text, "tgi_request_count") == 6
    assert value(text, "tgi_request_success") == 3


def test_a_stream_left_early_counts_as_dropped(http, engine):
    engine.token_delay = 0.05
    response = http.post("/generate_stream", json={"inputs": "a b c d e f g h"}, buffered=False)
    next(iter(response.response))
    response.close()
    deadline = time.monotonic() + 5
    while value(scrape(http), 'tgi_request_failure{err="dropped"}') != 1:
        assert time.monotonic() < deadline, scrape(http)
        time.sleep(0.05)


def test_constrained_generations_and_grammar_failures_are_counted(http):
    http.post("/generate", json={"inputs": "a", "parameters": {"grammar": {"type": "regex", "value": "[ab]+"}}})
    http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}], "n": 2,
                                            "response_format": {"type": "json_object"}})
    http.post("/generate", json={"inputs": "a", "parameters": {"grammar": {"type": "regex", "value": "(ab"}}})
    text = scrape(http)
    assert value(text, 'serving_constrained_requests{kind="regex"}') == 1
    assert value(text, 'serving_constrained_requests{kind="json_schema"}') == 2
    assert value(text, "serving_grammar_failures") == 1
    assert "# TYPE serving_grammar_failures counter" in text


def test_a_grammar_the_engine_cannot_compile_is_counted(http, engine):
    engine.fail_at_admission, engine.fail_message = True, "Input validation error: grammar is not valid: no token"
    http.post("/generate", json={"inputs": "a", "parameters": {"grammar": {"type": "regex", "value": "b"}}})
    assert value(scrape(http), "serving_grammar_failures") == 1
