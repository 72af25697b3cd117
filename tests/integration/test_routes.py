"""The real server over raw HTTP: health, info, every generation route, SSE framing and errors."""

from __future__ import annotations

import json

import pytest
import requests

from servers import start_server

pytestmark = pytest.mark.integration


def sse_events(response: requests.Response) -> list[str]:
    """The `data:` payloads of an SSE response, in order."""
    lines = response.iter_lines(decode_unicode=True)
    return [line[len("data:"):].removeprefix(" ") for line in lines if line.startswith("data:")]


def test_ping_and_health_are_empty_200(server):
    for path in ("/ping", "/health", "/"):
        response = requests.get(server.url + path, timeout=10)
        assert response.status_code == 200, path
        assert response.content == b"", path


def test_info_has_tgi_keys_and_resolved_limits(server):
    info = requests.get(server.url + "/info", timeout=10).json()
    assert list(info)[:8] == [
        "model_id", "model_sha", "model_pipeline_tag", "max_concurrent_requests", "max_best_of",
        "max_stop_sequences", "max_input_tokens", "max_total_tokens",
    ]
    assert info["model_id"] == server.env["HF_MODEL_ID"]
    assert info["max_total_tokens"] == 256
    assert info["max_input_tokens"] == 255


def test_generate_returns_text_and_details(server):
    response = requests.post(server.url + "/generate", json={
        "inputs": "The model", "parameters": {"max_new_tokens": 5, "details": True, "decoder_input_details": True},
    }, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["generated_text"], str)
    details = body["details"]
    assert details["finish_reason"] in ("length", "eos_token")
    assert 1 <= details["generated_tokens"] <= 5
    assert len(details["tokens"]) == details["generated_tokens"]
    assert details["seed"] is None
    assert int(response.headers["x-generated-tokens"]) == details["generated_tokens"]
    assert int(response.headers["x-prompt-tokens"]) > 0


def test_compat_route_wraps_in_a_list_and_echoes_the_prompt(server):
    response = requests.post(server.url + "/", json={
        "inputs": "Hello", "parameters": {"max_new_tokens": 3}}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list) and len(body) == 1
    assert body[0]["generated_text"].startswith("Hello")


def test_generate_stream_sse_framing(server):
    response = requests.post(server.url + "/generate_stream", json={
        "inputs": "Stream this", "parameters": {"max_new_tokens": 6, "details": True}}, stream=True, timeout=60)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.raw.read().decode()
    assert raw.startswith("data:{")
    assert "[DONE]" not in raw
    events = [json.loads(chunk[len("data:"):]) for chunk in raw.split("\n\n") if chunk]
    assert [event["index"] for event in events] == list(range(1, len(events) + 1))
    assert all(event["generated_text"] is None for event in events[:-1])
    last = events[-1]
    assert last["details"]["generated_tokens"] == len(events)
    assert last["details"]["input_length"] > 0
    assert last["generated_text"] == "".join(e["token"]["text"] for e in events if not e["token"]["special"])


def test_invocations_dispatches_three_shapes(server):
    generate = requests.post(server.url + "/invocations", json={
        "inputs": "Hi", "parameters": {"max_new_tokens": 2}}, timeout=60)
    assert generate.status_code == 200 and isinstance(generate.json(), list)
    chat = requests.post(server.url + "/invocations", json={
        "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}, timeout=60)
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    completion = requests.post(server.url + "/invocations", json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
    assert completion.status_code == 200 and completion.json()["object"] == "text_completion"
    neither = requests.post(server.url + "/invocations", json={"foo": 1}, timeout=60)
    assert neither.status_code == 422
    assert "untagged enum SagemakerRequest" in neither.text


def test_invocations_streams_chat_with_done(server):
    response = requests.post(server.url + "/invocations", json={
        "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": True}, stream=True, timeout=60)
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")


def test_tokenize_gives_byte_offsets_into_the_input(server):
    ascii_text = "Hello world, the model"
    tokens = requests.post(server.url + "/tokenize", json={"inputs": ascii_text}, timeout=10).json()
    assert "".join(ascii_text[t["start"]:t["stop"]] for t in tokens) == ascii_text
    assert all(ascii_text[t["start"]:t["stop"]] == t["text"] for t in tokens)
    text = "café 日本"
    tokens = requests.post(server.url + "/tokenize", json={"inputs": text}, timeout=10).json()
    raw = text.encode()
    assert tokens[-1]["stop"] == len(raw)
    assert all(raw[t["start"]:t["stop"]].decode(errors="replace") == t["text"] for t in tokens)


def test_models_lists_the_served_model(server):
    body = requests.get(server.url + "/v1/models", timeout=10).json()
    assert body["object"] == "list"
    assert body["data"][0]["id"] == server.env["HF_MODEL_ID"]


@pytest.mark.parametrize("body, message", [
    ({"inputs": "hi", "parameters": {"temperature": 0}}, "`temperature` must be strictly positive"),
    ({"inputs": "", "parameters": {}}, "`inputs` cannot be empty"),
    ({"inputs": "hi", "parameters": {"max_new_tokens": 0}}, "`max_new_tokens` must be strictly positive"),
    ({"inputs": "hi " * 300, "parameters": {"max_new_tokens": 5}}, "must be <= 256"),
])
def test_validation_errors_are_422_with_tgi_messages(server, body, message):
    response = requests.post(server.url + "/generate", json=body, timeout=60)
    assert response.status_code == 422, response.text
    assert response.json()["error_type"] == "validation"
    assert message in response.json()["error"]


def test_validation_error_in_a_stream_is_an_sse_event(server):
    response = requests.post(server.url + "/generate_stream", json={
        "inputs": "hi " * 300, "parameters": {"max_new_tokens": 5}}, stream=True, timeout=60)
    assert response.status_code == 200
    events = [json.loads(event) for event in sse_events(response)]
    assert len(events) == 1 and events[0]["error_type"] == "validation"


def test_framework_errors_are_plain_text(server):
    bad_json = requests.post(server.url + "/generate", data="{", headers={"Content-Type": "application/json"},
                             timeout=10)
    assert bad_json.status_code == 400
    assert bad_json.text.startswith("Failed to parse the request body as JSON")
    wrong_type = requests.post(server.url + "/generate", data="{}", headers={"Content-Type": "text/plain"},
                               timeout=10)
    assert wrong_type.status_code == 415
    missing = requests.post(server.url + "/generate", json={}, timeout=10)
    assert missing.status_code == 422
    assert "missing field `inputs`" in missing.text
    assert requests.get(server.url + "/nope", timeout=10).status_code == 404


def test_chat_without_template_is_a_clear_400(tiny_model_no_template_dir, tmp_path):
    proc = start_server(tiny_model_no_template_dir, tmp_path)
    try:
        proc.wait_ready()
        response = requests.post(proc.url + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
        assert response.status_code == 400
        assert "template not found" in response.json()["error"]["message"]
        streamed = requests.post(proc.url + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "stream": True}, timeout=60)
        assert streamed.status_code == 400
    finally:
        assert proc.stop() == 0
