"""SageMaker's `/invocations`: TGI's untagged dispatch on `inputs`, `messages`, `prompt`."""

from __future__ import annotations

import json

import pytest
from api_helpers import sse_events


def test_inputs_is_compat_generate_with_full_text(http):
    response = http.post("/invocations", json={"inputs": "a b", "parameters": {"max_new_tokens": 5}})
    assert response.status_code == 200
    assert response.get_json() == [{"generated_text": "a ba b"}]


def test_inputs_stream(http):
    events = sse_events(http.post("/invocations", json={"inputs": "a b", "stream": True}).data)
    assert [event["index"] for event in events] == [1, 2, 3]
    assert "[DONE]" not in events


def test_messages_is_chat(http):
    body = http.post("/invocations", json={"messages": [{"role": "user", "content": "a b"}]}).get_json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "a b"
    events = sse_events(http.post("/invocations", json={"messages": [{"role": "user", "content": "a"}],
                                                        "stream": True}).data)
    assert events[0]["object"] == "chat.completion.chunk" and events[-1] == "[DONE]"


def test_prompt_is_completion(http):
    body = http.post("/invocations", json={"prompt": "a b"}).get_json()
    assert body["object"] == "text_completion"


def test_inputs_wins_over_messages(http):
    body = http.post("/invocations", json={"inputs": "a", "messages": [{"role": "user", "content": "b"}]})
    assert body.get_json() == [{"generated_text": "aa"}]


def test_chat_errors_use_the_openai_shape(http):
    response = http.post("/invocations", json={"messages": [{"role": "user", "content": "a"}], "top_p": 0.0})
    assert response.status_code == 400
    assert response.get_json()["error"]["type"] == "invalid_request_error"


def test_no_variant_matches(http):
    for body in ('{"foo": 1}', '{"inputs": "a", "parameters": {"max_new_tokens": -1}}', '[1, 2]',
                 '{"inputs": 1, "messages": null}', '{\n  "foo": null\n}\n'):
        response = http.post("/invocations", data=body, content_type="application/json")
        assert response.status_code == 422
        assert response.content_type.startswith("text/plain")
        last_line = body.rstrip().split("\n")
        assert response.get_data(as_text=True) == (
            "Failed to deserialize the JSON body into the target type: data did not match any variant of "
            f"untagged enum SagemakerRequest at line {len(last_line)} column {len(last_line[-1])}")


@pytest.mark.parametrize("body, param", [({"messages": None}, "messages"), ({"messages": []}, "messages"),
                                         ({"prompt": 3}, "prompt"), ({"prompt": "a", "max_tokens": "x"}, "max_tokens")])
def test_a_broken_chat_or_completion_gets_that_routes_openai_error(http, body, param):
    response = http.post("/invocations", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["type"] == "invalid_request_error"
    assert response.get_json()["error"]["param"] == param


def test_invocations_framework_errors(http):
    assert http.post("/invocations", data="{", content_type="application/json").status_code == 400
    assert http.post("/invocations", data="{}").status_code == 415
    assert http.get("/invocations").status_code == 405


def test_grammar_and_response_format_reach_the_engine(http, engine):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert http.post("/invocations", json={"inputs": "x", "parameters": {
        "grammar": {"type": "json", "value": schema}}}).status_code == 200
    sent = json.loads(engine.requests[-1].sampling.grammar.value)
    assert sent == {**schema, "additionalProperties": False}
    assert http.post("/invocations", json={"messages": [{"role": "user", "content": "x"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}}}).status_code == 200
    assert json.loads(engine.requests[-1].sampling.grammar.value)["properties"] == schema["properties"]
    response = http.post("/invocations", json={"inputs": "x", "parameters": {"grammar": {"type": "regex",
                                                                                         "value": "(ab"}}})
    assert response.status_code == 422 and response.get_json()["error"].startswith(
        "Input validation error: grammar is not valid: ")
