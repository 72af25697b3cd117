"""`POST /vertex`: TGI's Google Vertex AI route."""

from __future__ import annotations

from api_helpers import FakeEngineClient, make_config

from serving.api.app import create_app
from serving.messages import ErrorKind


def test_generate_and_chat_instances(http, engine):
    response = http.post("/vertex", json={"instances": [
        {"inputs": "a b", "parameters": {"max_new_tokens": 5, "seed": 3, "temperature": 0.1, "top_k": 2}},
        {"messages": [{"role": "user", "content": "c d e"}], "max_tokens": 9},
        {"inputs": "f"},
    ]})
    assert response.status_code == 200
    assert response.get_json() == {"predictions": ["a b", "c d e", "f"]}
    first = next(r for r in engine.requests if r.prompt == "a b")
    assert (first.sampling.do_sample, first.sampling.seed, first.stopping.max_new_tokens) == (True, 3, 5)
    assert (first.sampling.temperature, first.sampling.top_k) == (1.0, 0)  # only max_new_tokens and seed are kept


def test_no_instances_and_bad_instances(http):
    empty = http.post("/vertex", json={"instances": []})
    assert (empty.status_code, empty.get_json()) == (
        422, {"error": "Input validation error", "error_type": "Input validation error"})
    bad = http.post("/vertex", json={"instances": [{"inputs": "a"}, {"foo": 1}]})
    assert bad.status_code == 422
    assert bad.get_data(as_text=True) == ("Failed to deserialize the JSON body into the target type: instances[1]: "
                                          "data did not match any variant of untagged enum VertexInstance")
    assert http.post("/vertex", json={}).status_code == 422


def test_bad_input_is_a_4xx(http, engine):
    invalid = http.post("/vertex", json={"instances": [{"inputs": ""}]})
    assert (invalid.status_code, invalid.get_json()) == (
        422, {"error": "Input validation error: `inputs` cannot be empty", "error_type": "validation"})
    no_messages = http.post("/vertex", json={"instances": [{"messages": []}]})
    assert no_messages.status_code == 422
    engine.fail_at_admission, engine.fail_message = True, "Input validation error: too long"
    too_long = http.post("/vertex", json={"instances": [{"inputs": "a b"}]})
    assert (too_long.status_code, too_long.get_json()["error"]) == (422, "Input validation error: too long")


def test_a_failure_during_generation_is_an_incomplete_generation(http, engine):
    engine.fail_after, engine.fail_kind = 1, ErrorKind.GENERATION
    failed = http.post("/vertex", json={"instances": [{"inputs": "a b c"}]})
    assert failed.status_code == 500 and failed.get_json()["error"] == "Incomplete generation"


def test_vertex_is_protected_by_the_api_key():
    http = create_app(make_config(api_key="k"), FakeEngineClient()).test_client()
    assert http.post("/vertex", json={"instances": [{"inputs": "a"}]}).status_code == 401
    assert http.post("/vertex", json={"instances": [{"inputs": "a"}]},
                     headers={"Authorization": "Bearer k"}).status_code == 200


def test_chat_instance_with_response_format(http, engine):
    instance = {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}
    assert http.post("/vertex", json={"instances": [instance]}).status_code == 200
    assert engine.requests[-1].sampling.grammar.value == '{"type":"object"}'
