"""Structured outputs and tools through the clients people use, against the real server on a random-weight model:
only the grammar can make these outputs valid."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from pydantic import BaseModel, Field

from servers import openai_client

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12},
                           "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"hours": {"type": "integer", "minimum": 0, "maximum": 23}},
    "required": ["hours"]}}}
TOOLS = [WEATHER, TIME]
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
IPV4 = r"((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server on a tiny model with room for the tools' prompt (the shared one's context is 256 tokens)."""
    from servers import start_server
    from serving.testing.tiny_model import TinyModelSpec, build_tiny_model

    model = build_tiny_model(tmp_path_factory.mktemp("long-tiny"), TinyModelSpec(max_position_embeddings=2048))
    proc = start_server(model, tmp_path_factory.mktemp("structured-server"), MAX_TOTAL_TOKENS="2048")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


class Person(BaseModel):
    """The schema `chat.completions.parse` sends (strict, every field required)."""

    name: str = Field(max_length=10)
    age: int = Field(ge=0, le=120)
    member: bool


def _check_calls(tool_calls, names=tuple(PARAMETERS)):
    assert tool_calls
    for call in tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])


def test_openai_parse_returns_the_pydantic_object(server):
    client = openai_client(server)
    for seed in range(3):
        completion = client.chat.completions.parse(model="tgi", messages=MESSAGES, response_format=Person,
                                                   max_tokens=120, seed=seed)
        choice = completion.choices[0]
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, Person)


def test_json_object_and_tgi_response_format(server):
    client = openai_client(server)
    completion = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=150, seed=1,
                                                response_format={"type": "json_object"})
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(completion.choices[0].message.content), dict)
    schema = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 4}
    completion = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=60, seed=2,
                                                response_format={"type": "json", "value": schema})
    assert completion.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_tools_required_and_named(server, choice):
    client = openai_client(server)
    completion = client.chat.completions.create(model="tgi", messages=MESSAGES, tools=TOOLS, tool_choice=choice,
                                                max_tokens=120, seed=3, parallel_tool_calls=False)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.content is None and len(message.tool_calls) == 1
    _check_calls(message.tool_calls, ("get_time",) if isinstance(choice, dict) else tuple(PARAMETERS))


def test_streamed_tool_calls_assemble_in_the_sdk_stream_helper(server):
    client = openai_client(server)
    kwargs = dict(model="tgi", messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=200, seed=4)
    with client.chat.completions.stream(**kwargs) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    _check_calls(final.choices[0].message.tool_calls)
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    first = next(chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.tool_calls)
    entry = first.choices[0].delta.tool_calls[0]
    assert entry.index == 0 and entry.id.startswith("call_") and entry.function.name in PARAMETERS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    whole = client.chat.completions.create(**kwargs)
    assert [c.function.arguments for c in whole.choices[0].message.tool_calls] == [
        c.function.arguments for c in final.choices[0].message.tool_calls]


def test_tool_call_cut_by_max_tokens_ends_with_length(server):
    kwargs = dict(model="tgi", messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=45, seed=5)
    completion = openai_client(server).chat.completions.create(**kwargs)
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    [call] = choice.message.tool_calls
    assert call.function.name in PARAMETERS and call.function.arguments.startswith("{")
    chunks = [chunk for chunk in openai_client(server).chat.completions.create(stream=True, **kwargs) if chunk.choices]
    assert chunks[-1].choices[0].finish_reason == "length"  # as OpenAI ends a cut call, with the arguments so far
    entries = [entry for chunk in chunks for entry in chunk.choices[0].delta.tool_calls or []]
    assert "".join(entry.function.arguments or "" for entry in entries) == call.function.arguments


def test_auto_answers_text_when_the_model_does_not_call(server):
    completion = openai_client(server).chat.completions.create(model="tgi", messages=MESSAGES, tools=TOOLS,
                                                         max_tokens=10, temperature=0)
    choice = completion.choices[0]
    assert choice.message.tool_calls is None and choice.message.content
    assert choice.finish_reason in ("stop", "length")


def test_conversation_with_tool_results_continues(server):
    messages = MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees"},
    ]
    completion = openai_client(server).chat.completions.create(model="tgi", messages=messages, tools=TOOLS,
                                                         max_tokens=5, temperature=0)
    assert completion.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_inference_client_text_generation_grammar(server):
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=server.url)
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 99},
                                               "ok": {"type": "boolean"}}, "required": ["n", "ok"]}
    output = client.text_generation("Answer:", max_new_tokens=40, seed=1, do_sample=True,
                                    grammar={"type": "json", "value": schema}, details=True,
                                    return_full_text=False)
    assert output.details.finish_reason == "eos_token"
    jsonschema.validate(json.loads(output.generated_text), schema)
    output = client.text_generation("IP:", max_new_tokens=40, seed=2, do_sample=True, return_full_text=False,
                                    grammar={"type": "regex", "value": IPV4})
    assert re.fullmatch(IPV4, output)
    streamed = "".join(client.text_generation("IP:", max_new_tokens=40, seed=2, do_sample=True, stream=True,
                                              grammar={"type": "regex", "value": IPV4}))
    assert streamed == output + "</s>"  # a stream shows the special tokens, EOS included


def test_text_generation_client_grammar(server):
    from text_generation import Client
    from text_generation.types import Grammar, GrammarType

    client = Client(server.url, timeout=60)
    response = client.generate("IP:", max_new_tokens=40, do_sample=True, seed=3,
                               grammar=Grammar(type=GrammarType.Regex, value=IPV4))
    assert re.fullmatch(IPV4, response.generated_text)
    schema = {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 1, "maxItems": 3}
    response = client.generate("List:", max_new_tokens=40, do_sample=True, seed=4,
                               grammar=Grammar(type=GrammarType.Json, value=schema))
    jsonschema.validate(json.loads(response.generated_text), schema)


def test_invalid_grammar_is_a_422_before_anything_is_queued(server):
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import ValidationError

    with InferenceClient(base_url=server.url) as client:
        with pytest.raises(ValidationError, match="grammar is not valid"):
            client.text_generation("x", grammar={"type": "regex", "value": "(ab"})


def test_langchain_bind_tools_and_structured_output(server):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    class Forecast(BaseModel):
        """Arguments of the forecast tool."""

        city: str = Field(max_length=10)
        days: int = Field(ge=1, le=7)

    @tool(args_schema=Forecast)
    def forecast(city: str, days: int) -> str:
        """The weather forecast for a city."""
        return "sunny"

    llm = ChatOpenAI(base_url=server.url + "/v1", api_key="unused", model="tgi", max_tokens=200, seed=1,
                     max_retries=0)
    for choice in ("any", "forecast"):
        message = llm.bind_tools([forecast], tool_choice=choice).invoke("Weather in Oslo?")
        assert [call["name"] for call in message.tool_calls] == ["forecast"]
        Forecast.model_validate(message.tool_calls[0]["args"])
    chunks = list(llm.bind_tools([forecast], tool_choice="any").stream("Weather in Oslo?"))
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed = streamed + chunk
    assert [call["name"] for call in streamed.tool_calls] == ["forecast"]
    for method in ("function_calling", "json_schema"):
        assert isinstance(llm.with_structured_output(Person, method=method).invoke("Who?"), Person)
    assert isinstance(llm.with_structured_output(Person.model_json_schema(), method="json_mode").invoke("Who?"), dict)
