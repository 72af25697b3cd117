"""The official clients against the app on a real socket: `openai`, TGI's `text_generation`, `huggingface_hub`."""

from __future__ import annotations

import threading

import openai
import pytest
import text_generation
from huggingface_hub import InferenceClient
from werkzeug.serving import make_server

from serving.messages import ErrorKind

# text_generation 0.7 still calls pydantic's deprecated `.dict()`.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def base_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_openai_chat(base_url):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="-")
    completion = client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "hi there"}],
                                                max_tokens=10, temperature=0.0, top_p=1.0)
    assert completion.choices[0].message.content == "hi there"
    assert completion.usage.total_tokens == 5


def test_openai_chat_stream_with_usage(base_url):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="-")
    chunks = list(client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "hi there"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(chunk.choices[0].delta.content for chunk in chunks if chunk.choices) == "hi there"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_openai_completions(base_url):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="-")
    completion = client.completions.create(model="tgi", prompt=["a b", "c"], max_tokens=5)
    assert [choice.text for choice in completion.choices] == ["a b", "c"]
    chunks = list(client.completions.create(model="tgi", prompt="a b", max_tokens=5, stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks) == "a b"


def test_openai_errors(base_url, engine):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="-", max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "a"}], temperature=-1)
    assert "`temperature` must be strictly positive" in raised.value.message
    assert raised.value.type == "invalid_request_error"
    engine.fail_after, engine.fail_kind, engine.fail_message = 1, ErrorKind.GENERATION, "boom"
    with pytest.raises(openai.APIError, match="boom"):
        list(client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "a b"}],
                                            stream=True))


def test_text_generation_client(base_url, engine):
    client = text_generation.Client(base_url)
    response = client.generate("a b", max_new_tokens=10, decoder_input_details=True, seed=0, temperature=0.5)
    assert response.generated_text == "a b"
    assert response.details.generated_tokens == 3
    tokens = list(client.generate_stream("a b", max_new_tokens=10))
    assert tokens[-1].generated_text == "a b"
    with pytest.raises(text_generation.errors.ValidationError):
        client.generate("a", top_k=-1)
    engine.fail_at_admission, engine.fail_kind, engine.fail_message = True, ErrorKind.OVERLOADED, "overloaded"
    with pytest.raises(text_generation.errors.OverloadedError):
        list(client.generate_stream("a"))


def test_huggingface_hub_chat(base_url):
    client = InferenceClient(base_url=f"{base_url}/v1")
    output = client.chat_completion([{"role": "user", "content": "hi there"}], max_tokens=10)
    assert output.choices[0].message.content == "hi there"
    chunks = list(client.chat_completion([{"role": "user", "content": "hi there"}], max_tokens=10, stream=True))
    assert "".join(chunk.choices[0].delta.content for chunk in chunks) == "hi there"
    assert chunks[-1].choices[0].finish_reason == "stop"


def openai_client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="-", max_retries=0)


def test_openai_stop_is_excluded_with_reason_stop(base_url):
    client = openai_client(base_url)
    messages = [{"role": "user", "content": "Thought: go Observation: done"}]
    reply = client.chat.completions.create(model="tgi", messages=messages, stop=[" Observation:"])
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == ("Thought: go", "stop")
    chunks = list(client.chat.completions.create(model="tgi", messages=messages, stop=[" Observation:"],
                                                 stream=True))
    assert "".join(chunk.choices[0].delta.content for chunk in chunks) == "Thought: go"
    assert chunks[-1].choices[0].finish_reason == "stop"
    completion = client.completions.create(model="tgi", prompt="Thought: go Observation: done",
                                           stop=" Observation:")
    assert (completion.choices[0].text, completion.choices[0].finish_reason) == ("Thought: go", "stop")
    chunks = list(client.completions.create(model="tgi", prompt="Thought: go Observation: done",
                                            stop=" Observation:", stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks) == "Thought: go"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_context_length_exceeded(base_url, engine):
    engine.fail_at_admission, engine.fail_code = True, "context_length_exceeded"
    engine.fail_message = "Input validation error: `inputs` must have less than 100 tokens. Given: 120"
    client = openai_client(base_url)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "a"}], stream=stream)
        assert raised.value.code == "context_length_exceeded"
        assert raised.value.message == "Error code: 400 - " + engine.fail_message


@pytest.mark.parametrize("extra, field", [({"temperature": "hot"}, "temperature"), ({"stream": 3}, "stream"),
                                          ({"messages": [{"content": "a"}]}, "messages[0].role"),
                                          ({"messages": [{"role": "robot", "content": "a"}]}, "messages[0].role")])
def test_openai_malformed_fields_are_readable_bad_requests(base_url, extra, field):
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client(base_url).chat.completions.create(
            model="tgi", messages=[{"role": "user", "content": "a"}], extra_body=extra)
    assert raised.value.param == field and raised.value.type == "invalid_request_error"
    assert raised.value.message.startswith("Error code: 400 - Failed to deserialize the JSON body into the target "
                                           "type: " + field.split(".")[0])


def test_openai_developer_role_is_accepted(base_url, engine):
    reply = openai_client(base_url).chat.completions.create(
        model="tgi", messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "a b"}])
    assert reply.choices[0].message.content == "a b"
    assert engine.requests[-1].chat.messages[0].role == "developer"
