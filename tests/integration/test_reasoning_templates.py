"""Reasoning templates that open the thinking section in the prompt: a Qwen3-like template (the generation prompt
ends with `<think>\\n`, or an empty closed section with `enable_thinking: false`) and a DeepSeek-R1-like one
(`<｜Assistant｜><think>\\n`), both written for these tests in `templates/`. The answer starts as reasoning until
`</think>`, which a random tiny model is made to emit with `logit_bias` (greedy, so each output is fixed); grammars
and tool calls apply only after it."""

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
    "qwen3": (("<|im_start|>", True), ("<|im_end|>", True), ("<think>", False), ("</think>", False),
              ("<tool_call>", False), ("</tool_call>", False)),
    "deepseek_r1": (("<｜User｜>", True), ("<｜Assistant｜>", True), ("<｜end▁of▁sentence｜>", True),
                    ("<think>", False), ("</think>", False)),
}
OPENED = {"qwen3": "<|im_start|>assistant\n<think>\n", "deepseek_r1": "<｜Assistant｜><think>\n"}
MESSAGES = [{"role": "user", "content": "Weather in Oslo?"}]
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["n"]}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}}
PARAMETERS = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "forecast", "parameters": PARAMETERS}}]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(family name, a server on a tiny model with that family's reasoning template)."""
    from servers import template_server

    name = request.param
    with template_server(tmp_path_factory, name, TEMPLATES / f"{name}.jinja", FAMILIES[name]) as proc:
        yield name, proc


def _bias(server, text: str, value: float) -> dict[str, float]:
    [token] = requests.post(server.url + "/tokenize", json={"inputs": text}, timeout=30).json()
    return {str(token["id"]): value}


def _streamed(server, **kwargs) -> tuple[str, str]:
    """(reasoning_content, content) of a stream, joined."""
    chunks = list(openai_client(server).chat.completions.create(stream=True, **kwargs))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    return ("".join(getattr(d, "reasoning_content", None) or "" for d in deltas),
            "".join(d.content or "" for d in deltas))


def test_the_prompt_opens_the_section_and_the_answer_starts_as_reasoning(family):
    name, server = family
    rendered = requests.post(server.url + "/chat_tokenize", json={"messages": MESSAGES},
                             timeout=30).json()["templated_text"]
    assert rendered.endswith(OPENED[name])
    kwargs = dict(model="tgi", messages=MESSAGES, max_tokens=60, temperature=0,
                  logit_bias=_bias(server, "</think>", 1))
    completion = openai_client(server).chat.completions.create(**kwargs)
    message = completion.choices[0].message
    assert message.reasoning_content and "</think>" not in message.reasoning_content
    assert message.content is not None and not message.content.startswith("</think>")
    assert _streamed(server, **kwargs) == (message.reasoning_content, message.content)


def test_the_grammar_applies_after_the_section_the_prompt_opened(family):
    _, server = family
    kwargs = dict(model="tgi", messages=MESSAGES, max_tokens=200, temperature=0,
                  logit_bias=_bias(server, "</think>", 2), response_format=RESPONSE_FORMAT)
    completion = openai_client(server).chat.completions.create(**kwargs)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert message.reasoning_content and "</think>" not in message.reasoning_content
    with pytest.raises(json.JSONDecodeError):  # the thinking itself was not forced into JSON
        json.loads(message.reasoning_content)
    jsonschema.validate(json.loads(message.content), SCHEMA)
    assert _streamed(server, **kwargs) == (message.reasoning_content, message.content)
    invoked = requests.post(server.url + "/invocations", timeout=60, json={
        "messages": MESSAGES, "max_tokens": 200, "temperature": 0, "logit_bias": kwargs["logit_bias"],
        "response_format": RESPONSE_FORMAT}).json()
    assert invoked["choices"][0]["message"]["content"] == message.content
    assert invoked["choices"][0]["message"]["reasoning_content"] == message.reasoning_content


def test_tool_calls_are_read_after_the_section(family):
    _, server = family
    kwargs = dict(model="tgi", messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=200,
                  temperature=0, logit_bias=_bias(server, "</think>", 2), parallel_tool_calls=False)
    completion = openai_client(server).chat.completions.create(**kwargs)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.reasoning_content
    [call] = choice.message.tool_calls
    assert call.function.name == "forecast"
    jsonschema.validate(json.loads(call.function.arguments), PARAMETERS)
    with openai_client(server).chat.completions.stream(**kwargs) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.tool_calls[0].function.arguments == call.function.arguments


def test_enable_thinking_false_closes_the_section_in_the_prompt(family):
    name, server = family
    kwargs_body = {"messages": MESSAGES, "chat_template_kwargs": {"enable_thinking": False}}
    rendered = requests.post(server.url + "/chat_tokenize", json=kwargs_body, timeout=30).json()["templated_text"]
    if name != "qwen3":  # a template without the variable ignores it
        assert rendered.endswith(OPENED[name])
        return
    assert rendered.endswith("<think>\n\n</think>\n\n")
    completion = openai_client(server).chat.completions.create(
        model="tgi", messages=MESSAGES, max_tokens=100, temperature=0, response_format=RESPONSE_FORMAT,
        logit_bias=_bias(server, "<think>", 100), extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    message = completion.choices[0].message
    assert getattr(message, "reasoning_content", None) is None  # the grammar allows no second section
    jsonschema.validate(json.loads(message.content), SCHEMA)


def test_chat_template_kwargs_cannot_set_the_servers_own_arguments(family):
    _, server = family
    response = requests.post(server.url + "/v1/chat/completions", timeout=30, json={
        "messages": MESSAGES, "chat_template_kwargs": {"tokenize": True, "add_generation_prompt": False}})
    assert response.status_code == 400  # the OpenAI routes' answer to a bad body
    assert "add_generation_prompt, tokenize" in response.json()["error"]["message"], response.text
