"""Each model family's native tool format, end to end: tiny random models whose tokenizer and chat template follow
Hermes/Qwen, Llama 3.1 JSON and Mistral (templates written for these tests, in `templates/`). A model is made to
emit its marker with `logit_bias` (OpenAI's own knob), so `auto` is checked both ways: text when the model does not
call, grammar-valid calls when it does, in one generation."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import requests

from servers import openai_client

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).parent / "templates"
FAMILIES = {
    "hermes": (("<tool_call>", False), ("</tool_call>", False), ("<think>", True), ("</think>", True)),
    "llama3_json": (),
    "mistral": (("[TOOL_CALLS]", True),),
}
MARKERS = {"hermes": "<tool_call>", "llama3_json": "{", "mistral": "[TOOL_CALLS]"}
NATIVE_PROMPT = {"hermes": "<tools>", "llama3_json": "Given the following functions", "mistral": "[AVAILABLE_TOOLS]"}
NATIVE_RESULT = {"hermes": "<tool_response>21 C</tool_response>", "llama3_json": "<|user|>\n21 C",
                 "mistral": "[TOOL_RESULTS]21 C[/TOOL_RESULTS]"}
PARAMETERS = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                               "days": {"type": "integer", "minimum": 1, "maximum": 7}},
              "required": ["city", "days"]}
TOOLS = [{"type": "function", "function": {"name": "forecast", "description": "Weather forecast",
                                           "parameters": PARAMETERS}}]
MESSAGES = [{"role": "user", "content": "Weather in Oslo?"}]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(family name, a server on a tiny model speaking that family's tool format)."""
    from servers import template_server

    name = request.param
    with template_server(tmp_path_factory, name, TEMPLATES / f"{name}.jinja", FAMILIES[name]) as proc:
        yield name, proc


def _token_id(server, text: str) -> int:
    [token] = requests.post(server.url + "/tokenize", json={"inputs": text}, timeout=30).json()
    return token["id"]


def _valid(calls) -> None:
    assert calls
    for call in calls:
        assert call.id.startswith("call_") and call.function.name == "forecast"
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS)


def test_the_template_sees_its_native_tools_and_tool_messages(family):
    name, server = family
    messages = MESSAGES + [
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                              "function": {"name": "forecast", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
    ]
    rendered = requests.post(server.url + "/chat_tokenize", json={"messages": messages, "tools": TOOLS},
                             timeout=30).json()["templated_text"]
    assert NATIVE_PROMPT[name] in rendered and NATIVE_RESULT[name] in rendered
    assert '"city": "Oslo"' in rendered and "You can call these tools" not in rendered


def test_required_calls_in_the_native_format(family):
    _, server = family
    completion = openai_client(server).chat.completions.create(model="tgi", messages=MESSAGES, tools=TOOLS,
                                                         tool_choice="required", max_tokens=150, seed=1,
                                                         parallel_tool_calls=False)
    assert completion.choices[0].finish_reason == "tool_calls"
    _valid(completion.choices[0].message.tool_calls)


def test_auto_answers_text_when_the_model_does_not_call(family):
    _, server = family
    completion = openai_client(server).chat.completions.create(model="tgi", messages=MESSAGES, tools=TOOLS,
                                                         max_tokens=8, temperature=0)
    message = completion.choices[0].message
    assert message.tool_calls is None and message.content
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_auto_calls_when_the_model_emits_its_marker(family):
    name, server = family
    bias = {str(_token_id(server, MARKERS[name])): 100}
    kwargs = dict(model="tgi", messages=MESSAGES, tools=TOOLS, max_tokens=150, seed=2, logit_bias=bias,
                  parallel_tool_calls=False)
    completion = openai_client(server).chat.completions.create(**kwargs)
    assert completion.choices[0].finish_reason == "tool_calls"
    _valid(completion.choices[0].message.tool_calls)
    with openai_client(server).chat.completions.stream(**kwargs) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert [c.function.arguments for c in final.choices[0].message.tool_calls] == [
        c.function.arguments for c in completion.choices[0].message.tool_calls]


def test_reasoning_is_split_out_and_the_grammar_applies_after_it(family):
    name, server = family
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["n"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    if name != "hermes":  # a model without a thinking section is unaffected
        completion = openai_client(server).chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=100,
                                                             seed=3, response_format=response_format)
        message = completion.choices[0].message
        assert getattr(message, "reasoning_content", None) is None
        jsonschema.validate(json.loads(message.content), schema)
        return
    # <think> first; then </think> a little favoured, so that the section ends after some text (greedy: fixed)
    bias = {str(_token_id(server, "<think>")): 100, str(_token_id(server, "</think>")): 0.6}
    kwargs = dict(model="tgi", messages=MESSAGES, max_tokens=300, temperature=0, logit_bias=bias,
                  response_format=response_format)
    completion = openai_client(server).chat.completions.create(**kwargs)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert message.reasoning_content and "think>" not in message.content + message.reasoning_content
    jsonschema.validate(json.loads(message.content), schema)
    chunks = list(openai_client(server).chat.completions.create(stream=True, **kwargs))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == message.reasoning_content
    assert "".join(d.content or "" for d in deltas) == message.content


def test_tools_with_response_format_call_or_answer_in_the_schema(family):
    name, server = family
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 8}}, "required": ["answer"]}
    kwargs = dict(model="tgi", messages=MESSAGES, tools=TOOLS, max_tokens=150, seed=6, parallel_tool_calls=False,
                  response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    answered = openai_client(server).chat.completions.create(**kwargs).choices[0]
    assert answered.finish_reason == "stop" and answered.message.tool_calls is None
    jsonschema.validate(json.loads(answered.message.content), schema)
    if name == "llama3_json":  # its calls and the answer both start with `{`: the bias would favour both alike
        return
    called = openai_client(server).chat.completions.create(
        logit_bias={str(_token_id(server, MARKERS[name])): 100}, **kwargs).choices[0]
    assert called.finish_reason == "tool_calls"
    _valid(called.message.tool_calls)
