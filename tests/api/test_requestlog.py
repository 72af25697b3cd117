"""Request ids and the one structured log line per request."""

from __future__ import annotations

import json
import logging

import pytest

from api_helpers import sse_events


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    """The JSON lines of the access logger."""
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "serving.access"]


def test_a_request_id_is_made_and_returned_in_both_headers(http, caplog):
    caplog.set_level(logging.INFO, logger="serving.access")
    response = http.post("/generate", json={"inputs": "secret prompt words", "parameters": {"max_new_tokens": 2}})
    response.close()  # the server closes every response; the line is written then
    request_id = response.headers["X-Request-Id"]
    assert len(request_id) == 32 and response.headers["X-Amzn-SageMaker-Inference-Id"] == request_id
    [line] = access_lines(caplog)
    assert line == {
        "request_id": request_id, "method": "POST", "route": "/generate", "status": 200, "prompt_tokens": 3,
        "generated_tokens": 2, "queue_time": 0.001, "inference_time": 0.002, "total_time": line["total_time"],
        "finish_reason": "length", "adapter": None, "error_type": None,
    }
    assert "secret" not in caplog.text


@pytest.mark.parametrize("header", ["X-Request-Id", "X-Amzn-SageMaker-Inference-Id"])
def test_the_callers_id_is_kept(http, caplog, header):
    caplog.set_level(logging.INFO, logger="serving.access")
    response = http.post("/generate_stream", json={"inputs": "a b"}, headers={header: "abc-123"})
    assert sse_events(response.data)
    response.close()
    assert response.headers["X-Request-Id"] == "abc-123"
    assert response.headers["X-Amzn-SageMaker-Inference-Id"] == "abc-123"
    [line] = access_lines(caplog)
    assert line["request_id"] == "abc-123" and line["route"] == "/generate_stream"
    assert line["generated_tokens"] == 3 and line["finish_reason"] in ("length", "eos_token")


def test_an_unsafe_id_is_replaced(http):
    response = http.post("/generate", json={"inputs": "a"}, headers={"X-Request-Id": "x" * 300})
    assert len(response.headers["X-Request-Id"]) == 32


def test_a_stream_that_ends_in_an_error_event_logs_its_type(http, engine, caplog):
    caplog.set_level(logging.INFO, logger="serving.access")
    engine.fail_after = 1
    engine.fail_kind = engine.fail_kind.GENERATION
    response = http.post("/generate_stream", json={"inputs": "a b c"})
    response.get_data()
    response.close()
    [line] = access_lines(caplog)
    assert line["status"] == 200 and line["error_type"] == "generation"


def test_health_calls_are_logged_at_debug_only(http, caplog):
    caplog.set_level(logging.INFO, logger="serving.access")
    http.get("/health").close()
    assert access_lines(caplog) == []
