"""axum's plain-text body errors (415, 400, 422, 413), empty 404/405, and 500 JSON for a server fault."""

from __future__ import annotations

import io

import pytest
from api_helpers import make_config

from serving.api.app import create_app

DESERIALIZE = "Failed to deserialize the JSON body into the target type: "


def assert_plain(response, status, text):
    assert response.status_code == status
    assert response.content_type.startswith("text/plain")
    assert response.get_data(as_text=True) == text


@pytest.mark.parametrize("path", ["/generate", "/invocations", "/tokenize"])
def test_wrong_content_type_is_415(http, path):
    assert_plain(http.post(path, data="{}", content_type="text/plain"), 415,
                 "Expected request with `Content-Type: application/json`")
    assert_plain(http.post(path, data="{}"), 415, "Expected request with `Content-Type: application/json`")


def test_json_suffix_content_types_are_accepted(http):
    response = http.post("/generate", data='{"inputs":"a"}', content_type="application/vnd.api+json; charset=utf-8")
    assert response.status_code == 200


def test_bad_json_is_400(http):
    assert_plain(http.post("/generate", data='{"inputs":', content_type="application/json"), 400,
                 "Failed to parse the request body as JSON: Expecting value at line 1 column 11")
    response = http.post("/generate", data='{"inputs": NaN}', content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("body, text", [
    ({}, "missing field `inputs`"),
    ({"inputs": 3}, "inputs: Input should be a valid string"),
    ({"inputs": "a", "parameters": {"max_new_tokens": -1}},
     "parameters.max_new_tokens: Input should be greater than or equal to 0"),
    ({"inputs": "a", "parameters": {"max_new_tokens": 1.5}}, "parameters.max_new_tokens: Input should be a valid integer"),
    ({"inputs": "a", "parameters": {"do_sample": None}}, "parameters.do_sample: Input should be a valid boolean"),
    ({"inputs": "a", "parameters": {"stop": ["a", 1]}}, "parameters.stop[1]: Input should be a valid string"),
    ({"inputs": "a", "parameters": None}, "parameters: Input should be a valid dictionary or instance of "
                                          "GenerateParameters"),
])
def test_wrong_shape_is_422_plain_text(http, body, text):
    assert_plain(http.post("/generate", json=body), 422, DESERIALIZE + text)


def test_unknown_fields_are_ignored(http):
    assert http.post("/generate", json={"inputs": "a", "foo": 1, "parameters": {"bar": 2}}).status_code == 200


def test_payload_limit_is_413(engine):
    http = create_app(make_config(payload_limit=100), engine).test_client()
    big = {"inputs": "a" * 200}
    assert_plain(http.post("/generate", json=big), 413, "Failed to buffer the request body: length limit exceeded")
    chunked = http.post("/generate", input_stream=io.BytesIO(b'{"inputs":"' + b"a" * 200 + b'"}'),
                        content_type="application/json", environ_overrides={"wsgi.input_terminated": True})
    assert_plain(chunked, 413, "Failed to buffer the request body: length limit exceeded")
    assert http.post("/generate", json={"inputs": "a"}).status_code == 200


def test_unknown_path_and_wrong_method_have_empty_bodies(http):
    response = http.get("/nope")
    assert (response.status_code, response.data) == (404, b"")
    response = http.get("/generate")
    assert (response.status_code, response.data) == (405, b"")
    assert "POST" in response.headers["Allow"]


def test_a_client_exception_is_a_500_json_and_the_server_keeps_serving(http, engine):
    engine.raise_on_generate = True
    for path, body in [("/generate", {"inputs": "a"}), ("/generate_stream", {"inputs": "a"})]:
        response = http.post(path, json=body)
        assert response.status_code == 500
        assert response.get_json() == {"error": "Internal server error", "error_type": "internal_error"}
    response = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}]})
    assert response.status_code == 500
    assert response.get_json()["error"]["type"] == "internal_error"
    engine.raise_on_generate = False
    assert http.post("/generate", json={"inputs": "a"}).status_code == 200


def test_unreachable_engine_is_503(http, engine, monkeypatch):
    from serving.client import EngineUnavailable

    def unavailable(refresh: bool = False):
        raise EngineUnavailable("the engine did not answer within 30 s")

    monkeypatch.setattr(engine, "info", unavailable)
    response = http.post("/generate", json={"inputs": "a"})
    assert response.status_code == 503
    assert response.get_json() == {"error": "Engine unavailable: the engine did not answer within 30 s",
                                   "error_type": "unavailable"}


@pytest.mark.parametrize("path, body", [
    ("/generate", '{"inputs": "a\\ud800"}'),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "\\udfff"}]}'),
    ("/invocations", '{"prompt": "\\ud83d"}'),
    ("/tokenize", '{"inputs": "x", "parameters": {"stop": ["\\ud800"]}}'),
])
def test_a_lone_surrogate_is_400(http, path, body):
    message = "Failed to parse the request body as JSON: lone surrogate in hex escape"
    response = http.post(path, data=body, content_type="application/json")
    if path.startswith("/v1/"):  # OpenAI's JSON body there
        assert response.status_code == 400 and response.get_json()["error"]["message"] == message
    else:
        assert_plain(response, 400, message)


def test_a_surrogate_pair_is_fine(http):
    response = http.post("/generate", data='{"inputs": "\\ud83d\\ude00"}', content_type="application/json")
    assert response.status_code == 200
