"""TGI's info routes, `/metrics`, `/docs` and the options TGI reads (API_KEY, CORS_ALLOW_ORIGIN, PAYLOAD_LIMIT,
MAX_*) against real servers; the options server runs two HTTP workers, so its metrics are merged across them."""

from __future__ import annotations

import re

import pytest
import requests
from compat_helpers import API_KEY, exact, post

from serving.api.protocol import responses

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_KEY}"}
INFO_KEYS = ["model_id", "model_sha", "model_pipeline_tag", "max_concurrent_requests", "max_best_of",
             "max_stop_sequences", "max_input_tokens", "max_total_tokens", "validation_workers",
             "max_client_batch_size", "router", "version", "sha", "docker_label"]


def metric(text: str, sample: str) -> float:
    """One sample's value in an exposition (0 when absent)."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return 0.0 if match is None else float(match.group(1))


def test_info_has_tgis_key_set_and_order(server):
    info = exact(responses.Info, requests.get(server.url + "/info", timeout=10).json())
    assert list(info)[:len(INFO_KEYS)] == INFO_KEYS  # TGI's keys in TGI's order; ours follow (README)
    assert info["router"] == "text-generation-router"
    assert (info["max_best_of"], info["max_stop_sequences"], info["max_client_batch_size"]) == (2, 4, 4)


def test_info_reports_the_options(options_server):
    info = requests.get(options_server.url + "/info", timeout=10).json()
    assert (info["max_best_of"], info["max_stop_sequences"], info["max_client_batch_size"]) == (1, 2, 2)
    assert (info["max_input_tokens"], info["max_total_tokens"], info["max_concurrent_requests"]) == (64, 128, 2)


def test_models(server):
    body = exact(responses.ModelList, requests.get(server.url + "/v1/models", timeout=10).json())
    assert body["data"][0] == {"id": server.env["HF_MODEL_ID"], "object": "model", "created": 0,
                               "owned_by": server.env["HF_MODEL_ID"]}


def test_tokenize_shape(server):
    tokens = post(server.url + "/tokenize", {"inputs": "Hello world"}).json()
    assert [exact(responses.SimpleToken, token) for token in tokens]


def test_metrics_count_requests_with_tgi_names(server):
    before = requests.get(server.url + "/metrics", timeout=10).text
    post(server.url + "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 3}})
    post(server.url + "/generate", {"inputs": "Hello", "parameters": {"top_k": 0}})
    post(server.url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    response = requests.get(server.url + "/metrics", timeout=10)
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert metric(text, "tgi_request_count") - metric(before, "tgi_request_count") == 4
    assert metric(text, "tgi_request_success") - metric(before, "tgi_request_success") == 2
    assert metric(text, 'tgi_request_failure{err="validation"}') - metric(
        before, 'tgi_request_failure{err="validation"}') == 1
    for name in ("tgi_request_count", "tgi_request_success", "tgi_request_failure"):
        assert f"# TYPE {name} counter" in text
    for name in ("tgi_request_duration", "tgi_request_validation_duration", "tgi_request_queue_duration",
                 "tgi_request_inference_duration", "tgi_request_mean_time_per_token_duration",
                 "tgi_request_generated_tokens", "tgi_request_input_length", "tgi_request_max_new_tokens"):
        assert f"# TYPE {name} histogram" in text and f'{name}_bucket{{le="+Inf"}}' in text
    assert len(re.findall(r"^tgi_request_duration_bucket", text, re.MULTILINE)) == 36
    assert len(re.findall(r"^tgi_request_input_length_bucket", text, re.MULTILINE)) == 101
    for gauge in ("tgi_queue_size", "tgi_batch_current_size", "tgi_batch_current_max_tokens",
                  "tgi_batch_max_total_tokens"):
        assert f"# TYPE {gauge} gauge" in text
    assert not re.search(r"^\w+_(total|created)[{ ]", text, re.MULTILINE)


def test_metrics_are_merged_across_workers(options_server):
    before = metric(requests.get(options_server.url + "/metrics", timeout=10).text, "tgi_request_success")
    for _ in range(8):  # two workers: the requests land on both
        post(options_server.url + "/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 2}}, headers=AUTH)
    scrapes = {metric(requests.get(options_server.url + "/metrics", timeout=10).text, "tgi_request_success")
               for _ in range(4)}
    assert scrapes == {before + 8}


def test_vertex(server):
    answer = post(server.url + "/vertex", {"instances": [
        {"inputs": "Hello", "parameters": {"max_new_tokens": 3, "seed": 1}},
        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}]})
    predictions = exact(responses.VertexResponse, answer.json())["predictions"]
    assert len(predictions) == 2 and all(isinstance(text, str) for text in predictions)


def test_docs(server):
    document = requests.get(server.url + "/api-doc/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.")
    assert {"/generate", "/generate_stream", "/v1/chat/completions", "/metrics"} <= set(document["paths"])
    page = requests.get(server.url + "/docs", timeout=10)
    assert page.status_code == 200 and "/api-doc/openapi.json" in page.text


@pytest.mark.parametrize("path, body", [
    ("/", {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}),
    ("/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}),
    ("/generate_stream", {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}),
    ("/v1/completions", {"prompt": "Hi", "max_tokens": 1}),
    ("/invocations", {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}),
    ("/tokenize", {"inputs": "Hi"}),
    ("/vertex", {"instances": [{"inputs": "Hi", "parameters": {"max_new_tokens": 1}}]}),
    ("/chat_tokenize", {"messages": [{"role": "user", "content": "Hi"}]}),
])
def test_api_key_protects_the_generation_routes(options_server, path, body):
    refused = post(options_server.url + path, body)
    assert (refused.status_code, refused.content) == (401, b"")
    for wrong in ("Bearer wrong", f"Bearer {API_KEY.swapcase()}"):  # the key is compared exactly, unlike TGI
        assert post(options_server.url + path, body, headers={"Authorization": wrong}).status_code == 401
    assert post(options_server.url + path, body, headers={"Authorization": f"BEARER {API_KEY}"}).ok


def test_api_key_leaves_the_other_routes_open(options_server):
    for path in ("/", "/health", "/ping", "/info", "/metrics", "/v1/models", "/docs", "/api-doc/openapi.json"):
        assert requests.get(options_server.url + path, timeout=10).status_code == 200, path


def test_openai_client_with_the_api_key(options_server):
    from openai import OpenAI

    with OpenAI(base_url=options_server.url + "/v1", api_key=API_KEY) as client:
        assert client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=2).choices


def test_cors(server, options_server):
    anywhere = requests.get(server.url + "/info", headers={"Origin": "https://x.example"}, timeout=10)
    assert anywhere.headers["access-control-allow-origin"] == "*"
    preflight = requests.options(options_server.url + "/generate", timeout=10, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert preflight.headers["access-control-allow-methods"] == "GET,POST"
    assert preflight.headers["access-control-allow-headers"] == "content-type"
    listed = requests.get(options_server.url + "/info", headers={"Origin": "https://other.example"}, timeout=10)
    assert listed.headers["access-control-allow-origin"] == "https://other.example"
    other = requests.get(options_server.url + "/info", headers={"Origin": "https://evil.example"}, timeout=10)
    assert "access-control-allow-origin" not in other.headers


def test_request_limits_follow_the_options(options_server):
    def error(path: str, body: dict) -> str:
        response = post(options_server.url + path, body, headers=AUTH)
        assert response.status_code == (400 if path.startswith("/v1/") else 422), response.text
        detail = response.json()["error"]
        return detail["message"] if isinstance(detail, dict) else detail

    assert error("/generate", {"inputs": "Hi", "parameters": {"stop": ["a", "b", "c"]}}) == (
        "Input validation error: `stop` supports up to 2 stop sequences. Given: 3")
    assert error("/generate", {"inputs": "Hi", "parameters": {"top_n_tokens": 4}}) == (
        "Input validation error: `top_n_tokens` must be >= 0 and <= 3. Given: 4")
    assert error("/v1/completions", {"prompt": ["a", "b", "c"]}) == (
        "Number of prompts exceeds the maximum allowed batch size of 2")
    ok = post(options_server.url + "/generate", {"inputs": "Hi", "parameters": {
        "stop": ["a", "b"], "top_n_tokens": 3, "max_new_tokens": 2, "details": True}}, headers=AUTH)
    assert ok.headers["x-compute-type"] == "1-tiny-cpu"
    assert all(len(top) == 3 for top in ok.json()["details"]["top_tokens"])
