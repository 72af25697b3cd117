"""TGI's routes: `/generate`, `/generate_stream`, `POST /`, `/info`, `/tokenize`, `/health`."""

from __future__ import annotations

import pytest
from api_helpers import sse_events

from serving.messages import ErrorKind

DETAILS_KEYS = ["finish_reason", "generated_tokens", "seed", "prefill", "tokens"]


def test_generate_response_shape_and_key_order(http):
    response = http.post("/generate", json={"inputs": "hello big world",
                                            "parameters": {"details": True, "max_new_tokens": 10}})
    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = response.get_json()
    assert list(body) == ["generated_text", "details"]
    assert body["generated_text"] == "hello big world"
    details = body["details"]
    assert list(details) == DETAILS_KEYS
    assert details["finish_reason"] == "eos_token"
    assert details["generated_tokens"] == 4
    assert details["prefill"] == []
    assert details["tokens"][0] == {"id": 100, "text": "hello", "logprob": -0.5, "special": False}
    assert details["tokens"][-1] == {"id": 2, "text": "</s>", "logprob": -0.25, "special": True}
    assert response.data.startswith(b'{"generated_text":"hello big world","details":{"finish_reason"')


def test_generate_without_details_has_only_the_text(http):
    body = http.post("/generate", json={"inputs": "a b", "parameters": {}}).get_json()
    assert body == {"generated_text": "a b"}


def test_top_tokens_and_decoder_input_details(http):
    body = http.post("/generate", json={"inputs": "a b", "parameters": {
        "top_n_tokens": 2, "decoder_input_details": True, "max_new_tokens": 2}}).get_json()
    assert list(body["details"]) == DETAILS_KEYS + ["top_tokens"]
    assert body["details"]["top_tokens"][0] == [
        {"id": 200, "text": "t0", "logprob": -1.0, "special": False},
        {"id": 201, "text": "t1", "logprob": -2.0, "special": False}]
    assert body["details"]["finish_reason"] == "length"
    assert body["details"]["prefill"] == [{"id": 100, "text": "a", "logprob": None},
                                          {"id": 101, "text": "b", "logprob": -1.5}]


def test_prefill_logprobs_are_asked_for_only_with_decoder_input_details(http, engine):
    http.post("/generate", json={"inputs": "a b", "parameters": {"details": True}})
    assert engine.requests[-1].prefill_logprobs is False
    http.post("/generate", json={"inputs": "a b", "parameters": {"decoder_input_details": True, "best_of": 2,
                                                                 "do_sample": True}})
    assert [r.prefill_logprobs for r in engine.requests[-2:]] == [True, True]


def test_parameters_absent_samples_and_present_is_greedy(http, engine):
    http.post("/generate", json={"inputs": "a"})
    assert engine.requests[-1].sampling.do_sample is True
    http.post("/generate", json={"inputs": "a", "parameters": {}})
    assert engine.requests[-1].sampling.do_sample is False


def test_parameters_reach_the_engine(http, engine):
    http.post("/generate", json={"inputs": "a b", "parameters": {
        "temperature": 0.5, "top_k": 10, "top_p": 0.9, "typical_p": 0.9, "repetition_penalty": 1.2,
        "frequency_penalty": 0.1, "seed": 7, "stop": ["x"], "max_new_tokens": 3, "truncate": 5,
        "top_n_tokens": 1, "watermark": True}})
    request = engine.requests[-1]
    sampling, stopping = request.sampling, request.stopping
    assert (sampling.temperature, sampling.top_k, sampling.top_p, sampling.typical_p) == (0.5, 10, 0.9, 0.9)
    assert (sampling.repetition_penalty, sampling.frequency_penalty, sampling.seed) == (1.2, 0.1, 7)
    assert sampling.top_n_tokens == 1
    assert (stopping.max_new_tokens, stopping.stop) == (3, ("x",))
    assert (request.prompt, request.truncate, request.add_special_tokens) == ("a b", 5, True)


def test_top_p_one_means_no_top_p(http, engine):
    assert http.post("/generate", json={"inputs": "a", "parameters": {"top_p": 1.0}}).status_code == 200
    assert engine.requests[-1].sampling.top_p == 1.0


@pytest.mark.parametrize("path, parameters, expected", [
    ("/generate", {}, "a b"),
    ("/generate", {"return_full_text": True}, "a ba b"),
    ("/", {}, "a ba b"),
    ("/", {"return_full_text": False}, "a b"),
])
def test_return_full_text_defaults(http, path, parameters, expected):
    body = http.post(path, json={"inputs": "a b", "parameters": parameters}).get_json()
    assert (body[0] if path == "/" else body)["generated_text"] == expected


def test_compat_full_text_default_follows_the_pipeline_tag(http, engine):
    engine.pipeline_tag = "text2text-generation"
    assert http.post("/", json={"inputs": "a b"}).get_json() == [{"generated_text": "a b"}]


def test_compat_route_wraps_in_a_list(http):
    response = http.post("/", json={"inputs": "a", "parameters": {"details": True}})
    assert response.status_code == 200
    body = response.get_json()
    assert isinstance(body, list) and len(body) == 1 and list(body[0]) == ["generated_text", "details"]


def test_generate_headers(http):
    response = http.post("/generate", json={"inputs": "héllo"})
    for name in ("x-compute-type", "x-compute-time", "x-compute-characters", "x-total-time", "x-validation-time",
                 "x-queue-time", "x-inference-time", "x-time-per-token", "x-prompt-tokens", "x-generated-tokens"):
        assert name in response.headers, name
    assert response.headers["x-compute-type"] == "gpu+optimized"
    assert response.headers["x-compute-characters"] == "5"
    assert response.headers["x-prompt-tokens"] == "1"
    assert response.headers["x-generated-tokens"] == "2"
    float(response.headers["x-compute-time"])


def test_best_of_returns_the_best_sequence_and_the_others(http, engine):
    body = http.post("/generate", json={"inputs": "a b", "parameters": {
        "best_of": 2, "do_sample": True, "details": True}}).get_json()
    assert len(engine.requests) == 2
    assert list(body["details"]) == DETAILS_KEYS + ["best_of_sequences"]
    sequence = body["details"]["best_of_sequences"][0]
    assert list(sequence) == ["generated_text", "finish_reason", "generated_tokens", "seed", "prefill", "tokens"]


def test_generate_stream_is_byte_exact(http):
    response = http.post("/generate_stream", json={"inputs": "hi yo",
                                                   "parameters": {"details": True, "max_new_tokens": 10}})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["x-compute-type"] == "gpu+optimized"
    assert response.headers["x-compute-characters"] == "5"
    assert response.data == (
        b'data:{"index":1,"token":{"id":100,"text":"hi","logprob":-0.5,"special":false},'
        b'"generated_text":null,"details":null}\n\n'
        b'data:{"index":2,"token":{"id":101,"text":" yo","logprob":-1.5,"special":false},'
        b'"generated_text":null,"details":null}\n\n'
        b'data:{"index":3,"token":{"id":2,"text":"</s>","logprob":-0.25,"special":true},'
        b'"generated_text":"hi yo","details":{"finish_reason":"eos_token","generated_tokens":3,"seed":null,'
        b'"input_length":2}}\n\n'
    )


def test_generate_stream_without_details_and_with_top_tokens(http):
    events = sse_events(http.post("/generate_stream", json={
        "inputs": "a b", "parameters": {"top_n_tokens": 1, "return_full_text": True}}).data)
    assert "[DONE]" not in events
    assert list(events[0]) == ["index", "token", "top_tokens", "generated_text", "details"]
    assert events[-1]["generated_text"] == "a ba b" and events[-1]["details"] is None


def test_compat_stream(http):
    events = sse_events(http.post("/", json={"inputs": "a b", "stream": True}).data)
    assert [event["index"] for event in events] == [1, 2, 3]
    assert events[-1]["generated_text"] == "a ba b"


def test_info_keys_in_order(http):
    body = http.get("/info").get_json()
    assert list(body) == [
        "model_id", "model_sha", "model_pipeline_tag", "max_concurrent_requests", "max_best_of",
        "max_stop_sequences", "max_input_tokens", "max_total_tokens", "validation_workers",
        "max_client_batch_size", "router", "version", "sha", "docker_label",
        "model_dtype", "model_device_type", "device_map", "kv_cache_block_size", "kv_cache_blocks",
        "prefix_caching", "max_lora_adapters", "max_lora_rank", "lora_adapters"]
    assert body["model_id"] == "test-org/tiny-model"
    assert (body["model_dtype"], body["model_device_type"], body["device_map"]) == ("torch.float32", "cpu", {})
    assert body["router"] == "text-generation-router"
    assert body["version"] == "3.3.6"


def test_tokenize(http):
    response = http.post("/tokenize", json={"inputs": "hé yo"})
    assert response.get_json() == [{"id": 100, "text": "hé", "start": 0, "stop": 3},
                                   {"id": 101, "text": "yo", "start": 4, "stop": 6}]


def test_chat_tokenize(http, engine):
    response = http.post("/chat_tokenize", json={"messages": [{"role": "user", "content": "hi yo"}]})
    assert response.get_json() == {"tokenize_response": [{"id": 100, "text": "hi", "start": 0, "stop": 2},
                                                         {"id": 101, "text": "yo", "start": 3, "stop": 5}],
                                   "templated_text": "hi yo"}
    engine.fail_at_admission, engine.fail_kind = True, ErrorKind.TEMPLATE
    engine.fail_message = "Template error: template not found"
    response = http.post("/chat_tokenize", json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 422
    assert response.get_json() == {"error": "Template error: template not found", "error_type": "template_error"}


@pytest.mark.parametrize("path", ["/health", "/", "/ping"])
def test_health(http, engine, path):
    response = http.get(path)
    assert (response.status_code, response.data) == (200, b"")
    engine.healthy = False
    response = http.get(path)
    assert response.status_code == 503
    assert response.get_json() == {"error": "unhealthy", "error_type": "healthcheck"}
    engine.healthy = None
    assert http.get(path).status_code == 503
