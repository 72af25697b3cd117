"""Streaming mechanics: keep-alives, aborting on disconnect, errors after the stream opened, framing helpers."""

from __future__ import annotations

import time

import pytest
from api_helpers import sse_events

from serving.api import streaming
from serving.messages import ErrorKind


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sse_framing():
    assert streaming.sse({"a": "é", "b": [1, None]}) == 'data:{"a":"é","b":[1,null]}\n\n'.encode()
    assert streaming.DONE == b"data: [DONE]\n\n"
    assert streaming.KEEPALIVE == b":\n\n"


def test_keepalive_comments_while_the_engine_is_quiet(http, engine, monkeypatch):
    monkeypatch.setattr(streaming, "KEEPALIVE_SECONDS", 0.01)
    engine.token_delay = 0.1
    body = http.post("/generate_stream", json={"inputs": "a"}).data
    assert b":\n\n" in body
    assert [event["index"] for event in sse_events(body)] == [1, 2]


def test_closing_a_stream_aborts_the_engine_request(http, engine):
    engine.token_delay = 0.05
    response = http.post("/generate_stream", json={"inputs": "a b c d e f g h i j"}, buffered=False)
    chunks = iter(response.response)
    assert next(chunks).startswith(b"data:")
    response.close()
    wait_for(lambda: engine.aborted)
    assert engine.aborted == [engine.requests[0].request_id]


def test_closing_an_openai_stream_aborts_every_choice(http, engine):
    engine.token_delay = 0.05
    response = http.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "a b c d e f g h"}], "n": 2, "stream": True}, buffered=False)
    next(iter(response.response))
    response.close()
    wait_for(lambda: len(engine.aborted) == 2)


def test_a_finished_stream_aborts_nothing(http, engine):
    http.post("/generate_stream", json={"inputs": "a b"})
    assert engine.aborted == []


def test_tgi_stream_error_event_ends_the_stream(http, engine):
    engine.fail_after, engine.fail_kind, engine.fail_message = 1, ErrorKind.OVERLOADED, "Model is overloaded"
    response = http.post("/generate_stream", json={"inputs": "a b c"})
    assert response.status_code == 200
    events = sse_events(response.data)
    assert [event.get("index") for event in events] == [1, None]
    assert events[-1] == {"error": "Model is overloaded", "error_type": "overloaded"}
    assert "[DONE]" not in events


def test_validation_failure_from_the_engine_is_a_stream_event(http, engine):
    engine.fail_at_admission = True
    events = sse_events(http.post("/generate_stream", json={"inputs": "a"}).data)
    assert events == [{"error": "Input validation error: scripted failure", "error_type": "validation"}]


def test_exception_after_the_stream_opened_is_an_error_event(http, engine, monkeypatch):
    def crashing(request):
        iterator = type(engine).generate(engine, request)
        yield next(iterator)
        yield next(iterator)
        raise RuntimeError("lost the engine")

    monkeypatch.setattr(engine, "generate", crashing)
    events = sse_events(http.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "a b c"}], "stream": True}).data)
    assert events[-2:] == [{"error": {"message": "Internal server error", "type": "internal_error", "param": None,
                                      "code": None}, "error_type": "internal_error"}, "[DONE]"]
    assert http.get("/health").status_code == 200


@pytest.mark.parametrize("path, body", [
    ("/generate_stream", {"inputs": "a"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "stream": True}),
    ("/v1/completions", {"prompt": "a", "stream": True}),
])
def test_done_only_on_openai_routes(http, path, body):
    events = sse_events(http.post(path, json=body).data)
    assert (events[-1] == "[DONE]") == path.startswith("/v1/")
    assert events.count("[DONE]") == (1 if path.startswith("/v1/") else 0)


def test_an_event_that_cannot_be_serialised_ends_the_stream_with_tgis_error(http, monkeypatch):
    monkeypatch.setattr("serving.api.protocol.body._lone_surrogate", lambda data: False)  # let one reach the engine
    response = http.post("/generate_stream", data='{"inputs": "a \\ud800 b", "parameters": {}}',
                         content_type="application/json")
    events = sse_events(response.data)
    assert events[-1] == {"error": "Stream event serialization error", "error_type": "stream_serialization_error"}
    assert events[0]["token"]["text"] == "a"


def test_non_finite_logprobs_are_null():
    from serving.api.protocol.tokens import logprob

    assert [logprob(value) for value in (float("-inf"), float("inf"), float("nan"), None, -0.5)] == [
        None, None, None, None, -0.5]
