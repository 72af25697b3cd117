"""OpenAI-compatible routes: chat completions, completions and models, streaming and not."""

from __future__ import annotations

import json

import pytest
from api_helpers import sse_events

from serving.messages import ErrorKind

CHAT_KEYS = ["object", "id", "created", "model", "system_fingerprint", "choices", "usage"]


def chat(http, **fields):
    return http.post("/v1/chat/completions",
                     json={"messages": [{"role": "user", "content": "hello big world"}], **fields})


def test_chat_completion_shape(http, engine):
    response = chat(http, max_tokens=10)
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == CHAT_KEYS
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == "test-org/tiny-model"
    assert body["system_fingerprint"] == "3.3.6-native"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "hello big world"},
                                "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    request = engine.requests[-1]
    assert request.add_special_tokens is False and request.prompt is None
    assert [(m.role, m.content) for m in request.chat.messages] == [("user", "hello big world")]
    assert "x-generated-tokens" in response.headers


def test_chat_ids_are_unique(http):
    assert chat(http).get_json()["id"] != chat(http).get_json()["id"]


@pytest.mark.parametrize("model, echoed", [(None, "test-org/tiny-model"), ("tgi", "test-org/tiny-model"),
                                           ("my-model", "my-model")])
def test_chat_model_echo(http, model, echoed):
    assert chat(http, model=model).get_json()["model"] == echoed


@pytest.mark.parametrize("temperature, do_sample, sent", [(0.0, False, 1.0), (None, True, 1.0), (0.7, True, 0.7)])
def test_chat_temperature(http, engine, temperature, do_sample, sent):
    chat(http, temperature=temperature)
    sampling = engine.requests[-1].sampling
    assert (sampling.do_sample, sampling.temperature) == (do_sample, sent)


@pytest.mark.parametrize("extra, read", [({}, False), ({"logprobs": False}, False), ({"logprobs": True}, True)])
def test_chat_asks_the_engine_for_logprobs_only_when_they_are_shown(http, engine, extra, read):
    chat(http, **extra)
    assert engine.requests[-1].sampling.logprobs is read


@pytest.mark.parametrize("extra, read", [({}, False), ({"logprobs": 0}, True), ({"logprobs": 2}, True)])
def test_completion_asks_the_engine_for_logprobs_only_when_they_are_shown(http, engine, extra, read):
    assert http.post("/v1/completions", json={"prompt": "a b", "max_tokens": 2, **extra}).status_code == 200
    assert engine.requests[-1].sampling.logprobs is read


def test_tgi_routes_always_read_logprobs(http, engine):
    http.post("/generate", json={"inputs": "a b", "parameters": {"max_new_tokens": 2}})
    assert engine.requests[-1].sampling.logprobs is True


def test_chat_openai_parameters(http, engine):
    response = chat(http, presence_penalty=0.5, frequency_penalty=0.25, logit_bias={"50": -100, "7": 2.5},
                    stop="world", seed=3, top_p=1.0, max_completion_tokens=9)
    assert response.get_json()["choices"][0]["finish_reason"] == "stop"
    request = engine.requests[-1]
    assert request.sampling.presence_penalty == 0.5 and request.sampling.frequency_penalty == 0.25
    assert request.sampling.logit_bias == {50: -100.0, 7: 2.5}
    assert request.sampling.seed == 3 and request.sampling.top_p == 1.0
    assert request.stopping.stop == ("world",) and request.stopping.max_new_tokens == 9


@pytest.mark.parametrize("fields, message", [
    ({"temperature": -1.0}, "`temperature` must be strictly positive"),
    ({"presence_penalty": 3.0}, "`presence_penalty` must be >= -2.0 and <= 2.0"),
    ({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_logprobs": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
    ({"max_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"logit_bias": {"x": 1}}, "`logit_bias` keys must be token ids. Given: 'x'"),
    ({"logit_bias": {"²": 1}}, "`logit_bias` keys must be token ids. Given: '²'"),
    ({"logit_bias": {"1": 101}}, "`logit_bias` values must be >= -100 and <= 100. Given: 101.0"),
    ({"n": 0}, "`n` must be >= 1 and <= 4. Given: 0"),
    ({"n": 5}, "`n` must be >= 1 and <= 4. Given: 5"),
    ({"response_format": {"type": "json_object", "value": {"type": "objekt"}}},
     "grammar is not valid: Invalid type: objekt"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}}},
     "grammar is not valid: Pointer '/$defs/missing' does not exist"),
    ({"response_format": {"type": "xml"}}, "grammar is not valid: unknown response_format type 'xml': expected "
                                           "text, json_object or json_schema"),
    ({"response_format": {"type": "json_object"}, "ignore_eos": True},
     "a grammar (`grammar`, `response_format` or `tools`) cannot be combined with `min_tokens` or `ignore_eos`: "
     "the grammar ends the text with EOS once it is complete"),
])
def test_chat_validation_errors(http, fields, message):
    response = chat(http, **fields)
    assert response.status_code == 400
    body = response.get_json()
    assert body == {"error": {"message": "Input validation error: " + message, "type": "invalid_request_error",
                              "param": None, "code": None}, "error_type": "validation"}


def test_chat_accepts_tgis_logit_bias_array_and_ignores_it(http, engine):
    assert chat(http, logit_bias=[0.5, -1.0]).status_code == 200
    assert engine.requests[-1].sampling.logit_bias == {}


def test_chat_tools(http, engine):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert chat(http, tools=tools).status_code == 200
    sent = engine.requests[-1]
    assert sent.sampling.grammar.kind.value == "lark" and "trigger[lazy]" in sent.sampling.grammar.value
    assert sent.chat.messages[0].role == "system" and '"name": "f"' in sent.chat.messages[0].content
    assert chat(http, tools=tools, tool_choice="required").status_code == 200
    assert "trigger" not in engine.requests[-1].sampling.grammar.value
    for choice in ("g", {"type": "function", "function": {"name": "g"}}):
        response = chat(http, tools=tools, tool_choice=choice)
        assert (response.status_code, response.get_json()["error"]["message"]) == (
            400, "Tool error: Tool with name g not found")
        assert response.get_json()["error_type"] == "tool_error"
    assert chat(http, tools=tools, tool_choice="f").status_code == 200
    assert chat(http, tools=[{"type": "function"}]).status_code == 400
    assert chat(http, tools=tools, response_format={"type": "json", "value": {"type": "object"}}).status_code == 200
    assert "answer: %json" in engine.requests[-1].sampling.grammar.value
    assert chat(http, tools=tools, tool_choice="none").status_code == 200
    assert engine.requests[-1].sampling.grammar is None


def test_chat_message_shapes(http, engine):
    body = {"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "assistant", "tool_calls": [{"id": "0", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": [{"type": "text", "text": "look "},
                                     {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
    ]}
    # Flask's test client sorts keys; send the body as written to check that the tool calls keep their order.
    response = http.post("/v1/chat/completions", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    messages = engine.requests[-1].chat.messages
    assert messages[1].content == '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    assert messages[2].content == "look ![](http://x/y.png)"
    assert engine.requests[-1].chat.continue_final_message is False


def test_continue_final_message(http, engine):
    http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"},
                                                         {"role": "assistant", "content": "Once upon"}]})
    assert engine.requests[-1].chat.continue_final_message is True


@pytest.mark.parametrize("message, text, param", [
    ({"role": "user", "content": None}, "messages[0]: data did not match any variant of untagged "
                                        "enum MessageBody", "messages[0]"),
    ({"role": "user"}, "messages[0]: data did not match any variant of untagged enum MessageBody", "messages[0]"),
    ({"role": "user", "content": [{"type": "video"}]},
     "messages[0].content: data did not match any variant of untagged enum MessageChunk", "messages[0].content"),
    ({"content": "a"}, "messages[0]: missing field `role`", "messages[0].role"),
])
def test_bad_messages_are_400_openai_json(http, message, text, param):
    response = http.post("/v1/chat/completions", json={"messages": [message]})
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "message": "Failed to deserialize the JSON body into the target type: " + text,
        "type": "invalid_request_error", "param": param, "code": None}


def test_chat_logprobs(http):
    body = chat(http, logprobs=True, top_logprobs=2, max_tokens=1).get_json()
    assert body["choices"][0]["logprobs"] == {"content": [
        {"token": "hello", "logprob": -0.5, "top_logprobs": [{"token": "t0", "logprob": -1.0},
                                                              {"token": "t1", "logprob": -2.0}]}]}
    assert body["choices"][0]["finish_reason"] == "length"


def test_chat_n_fans_out_with_seeds(http, engine):
    body = chat(http, n=3, seed=10).get_json()
    assert [choice["index"] for choice in body["choices"]] == [0, 1, 2]
    assert [request.sampling.seed for request in engine.requests] == [10, 11, 12]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 12, "total_tokens": 15}


def test_chat_stream(http):
    response = chat(http, stream=True, max_tokens=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    events = sse_events(response.data)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) == 4
    for chunk in chunks:
        assert list(chunk) == CHAT_KEYS
        assert chunk["object"] == "chat.completion.chunk" and chunk["usage"] is None
        assert chunk["choices"][0]["delta"]["role"] == "assistant"
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert [chunk["choices"][0]["delta"]["content"] for chunk in chunks] == ["hello", " big", " world", ""]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks] == [None, None, None, "stop"]
    assert list(chunks[0]["choices"][0]) == ["index", "delta", "logprobs", "finish_reason"]


def test_chat_stream_include_usage(http):
    events = sse_events(chat(http, stream=True, stream_options={"include_usage": True}).data)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert all(event["usage"] is None for event in events[:-2])


def test_chat_stream_error_event_then_done(http, engine):
    engine.fail_after, engine.fail_kind, engine.fail_message = 1, ErrorKind.GENERATION, "boom"
    response = chat(http, stream=True)
    assert response.status_code == 200
    events = sse_events(response.data)
    assert events[-2:] == [{"error": {"message": "boom", "type": "generation", "param": None, "code": None},
                            "error_type": "generation"}, "[DONE]"]


def test_chat_stream_validation_error_is_http_400(http):
    response = chat(http, stream=True, temperature=-1.0)
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "message": "Input validation error: `temperature` must be strictly positive",
        "type": "invalid_request_error", "param": None, "code": None}


def test_template_failure_before_streaming_is_http_400(http, engine):
    engine.fail_at_admission, engine.fail_kind = True, ErrorKind.TEMPLATE
    engine.fail_message = "Template error: template not found"
    response = chat(http, stream=True)
    assert response.status_code == 400
    assert response.content_type == "application/json"
    assert response.get_json()["error"] == {"message": "Template error: template not found",
                                            "type": "invalid_request_error", "param": None, "code": None}


def completions(http, **fields):
    return http.post("/v1/completions", json={"prompt": "hello world", **fields})


def test_completion_shape(http, engine):
    body = completions(http, max_tokens=10).get_json()
    assert list(body) == CHAT_KEYS
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"] == [{"index": 0, "text": "hello world", "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert engine.requests[-1].add_special_tokens is True
    assert completions(http, model="other").get_json()["model"] == "test-org/tiny-model"


def test_completion_of_several_prompts(http, engine):
    response = http.post("/v1/completions", json={"prompt": ["a b", "c", "d e f"], "max_tokens": 2})
    body = response.get_json()
    assert [(c["index"], c["text"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "a b", "length"), (1, "c", "length"), (2, "d e", "length")]
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 6, "total_tokens": 12}
    assert response.headers["x-prompt-tokens"] == "6"
    assert len(engine.requests) == 3


def test_completion_errors(http):
    response = completions(http, suffix="")
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == (
        "Suffix is not supported and can be achieved by preprocessing the prompt.")
    assert response.get_json()["error_type"] == "suffix not supported"
    response = http.post("/v1/completions", json={"prompt": ["a"] * 5})
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == "Number of prompts exceeds the maximum allowed batch size of 4"
    assert response.get_json()["error_type"] == "batch size exceeded"
    response = http.post("/v1/completions", json={"prompt": []})
    assert response.get_json()["error"]["message"] == (
        "Failed to deserialize the JSON body into the target type: prompt: Empty array detected. Do not use an "
        "empty array for the prompt.")


def test_completion_stream(http):
    response = http.post("/v1/completions", json={"prompt": ["a b", "c"], "stream": True, "max_tokens": 5})
    events = sse_events(response.data)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(list(chunk) == ["object", "id", "created", "model", "system_fingerprint", "choices"]
               for chunk in chunks)
    finals = [chunk for chunk in chunks if chunk["choices"][0]["finish_reason"] is not None]
    assert sorted((f["choices"][0]["index"], f["choices"][0]["text"], f["choices"][0]["finish_reason"])
                  for f in finals) == [(0, "", "stop"), (1, "", "stop")]
    texts = {0: "", 1: ""}
    for chunk in chunks:
        texts[chunk["choices"][0]["index"]] += chunk["choices"][0]["text"]
    assert texts == {0: "a b", 1: "c"}


def test_completion_stream_sends_usage_once_with_include_usage(http):
    events = sse_events(http.post("/v1/completions", json={
        "prompt": ["a b", "c"], "stream": True, "stream_options": {"include_usage": True}}).data)
    with_usage = [event for event in events[:-1] if event["usage"] is not None]
    assert with_usage == [events[-2]] and events[-2]["choices"] == []
    assert events[-2]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def test_completion_echo_and_token_id_prompts(http, engine):
    body = http.post("/v1/completions", json={"prompt": "a b", "echo": True}).get_json()
    assert body["choices"][0]["text"] == "a ba b"
    events = sse_events(http.post("/v1/completions", json={"prompt": "a b", "echo": True, "stream": True}).data)
    assert "".join(event["choices"][0]["text"] for event in events[:-1]) == "a ba b"
    for prompt, sent in [([5, 6], [(5, 6)]), ([[5], [7, 8]], [(5,), (7, 8)])]:
        engine.requests.clear()
        assert http.post("/v1/completions", json={"prompt": prompt}).status_code == 200
        assert [request.prompt_ids for request in engine.requests] == sent
        assert all(request.prompt is None and not request.echo for request in engine.requests)
    body = http.post("/v1/completions", json={"prompt": [5, 6], "echo": True}).get_json()
    assert engine.requests[-1].echo is True and body["choices"][0]["text"] == "t5 t6t5 t6"
    for bad in ([[]], [-1], [[1, -2]], [1.5], [True]):
        assert http.post("/v1/completions", json={"prompt": bad}).status_code == 400
    events = sse_events(http.post("/v1/completions", json={"prompt": [[5, 6], [7]], "echo": True, "stream": True,
                                                           "n": 2}).data)
    texts: dict[int, str] = {}
    for event in events[:-1]:
        texts[event["choices"][0]["index"]] = texts.get(event["choices"][0]["index"], "") + event["choices"][0]["text"]
    assert texts == {0: "t5 t6t5 t6", 1: "t5 t6t5 t6", 2: "t7t7", 3: "t7t7"}


def test_completion_logprobs(http, engine):
    body = completions(http, logprobs=2, max_tokens=5).get_json()
    assert engine.requests[-1].sampling.top_n_tokens == 2
    assert body["choices"][0]["logprobs"] == {
        "tokens": ["hello", " world", "</s>"], "token_logprobs": [-0.5, -1.5, -0.25],
        "top_logprobs": [{"t0": -1.0, "t1": -2.0}] * 3, "text_offset": [0, 5, 11]}
    assert completions(http, logprobs=6).get_json()["error"]["message"] == (
        "Input validation error: `top_n_tokens` must be >= 0 and <= 5. Given: 6")


def test_completion_stream_logprobs_and_usage(http):
    response = http.post("/v1/completions", json={"prompt": ["a b", "c"], "stream": True, "logprobs": 0,
                                                  "stream_options": {"include_usage": True}})
    events = sse_events(response.data)
    assert events[-1] == "[DONE]"
    last = events[-2]
    assert last["choices"] == [] and last["usage"] == {"prompt_tokens": 3, "completion_tokens": 5,
                                                       "total_tokens": 8}
    first_prompt = [e["choices"][0]["logprobs"] for e in events[:-2] if e["choices"][0]["index"] == 0]
    assert [entry["text_offset"] for entry in first_prompt] == [[0], [1], [3]]
    assert [entry["tokens"] for entry in first_prompt] == [["a"], [" b"], ["</s>"]]
    assert all(entry["top_logprobs"] == [{}] for entry in first_prompt)
    plain = sse_events(http.post("/v1/completions", json={"prompt": "a", "stream": True}).data)
    assert all(event["choices"] for event in plain[:-1])


def test_completion_n(http, engine):
    body = http.post("/v1/completions", json={"prompt": ["a", "b c"], "n": 2, "seed": 5}).get_json()
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "a"), (1, "a"), (2, "b c"), (3, "b c")]
    assert body["usage"]["prompt_tokens"] == 3
    assert sorted(request.sampling.seed for request in engine.requests) == [5, 5, 6, 6]


def test_models(http):
    assert http.get("/v1/models").get_json() == {"object": "list", "data": [
        {"id": "test-org/tiny-model", "object": "model", "created": 0, "owned_by": "test-org/tiny-model"}]}


def test_model_by_id(http):
    assert http.get("/v1/models/test-org/tiny-model").get_json() == {
        "id": "test-org/tiny-model", "object": "model", "created": 0, "owned_by": "test-org/tiny-model"}
    response = http.get("/v1/models/gpt-4")
    assert response.status_code == 404
    assert response.get_json()["error"] == {"message": "The model `gpt-4` does not exist",
                                            "type": "invalid_request_error", "param": None, "code": "model_not_found"}


def test_logit_bias_ids_past_64_bits_are_ignored_like_any_id_outside_the_vocabulary(http, engine):
    assert chat(http, logit_bias={"24087575759079036519": 1.0, "7": 2.0}).status_code == 200
    assert engine.requests[-1].sampling.logit_bias == {7: 2.0}


def test_tools_must_have_openais_shape(http):
    response = chat(http, tools=[{"type": "function"}], tool_choice="none")
    assert response.status_code == 400 and response.get_json()["error"]["param"] == "tools[0].function"
    assert chat(http, tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="none").status_code == 200


def test_whole_numbers_written_as_floats_are_integers(http, engine):
    assert chat(http, max_tokens=3.0, seed=1e3).status_code == 200
    assert (engine.requests[-1].stopping.max_new_tokens, engine.requests[-1].sampling.seed) == (3, 1000)
    assert chat(http, max_tokens=2.5).status_code == 400
