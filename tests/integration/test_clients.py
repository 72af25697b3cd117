"""The real server through the clients people already use: openai, huggingface_hub and text-generation."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is deep learning?"}]


def test_openai_chat_non_stream(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    completion = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=8, temperature=0)
    choice = completion.choices[0]
    assert completion.object == "chat.completion"
    assert completion.id
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("length", "stop")
    usage = completion.usage
    assert usage.prompt_tokens > 0 and 1 <= usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_openai_chat_stream_with_usage(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    chunks = list(client.chat.completions.create(
        model="tgi", messages=MESSAGES, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    token_chunks = [chunk for chunk in chunks if chunk.choices]
    assert token_chunks and all(chunk.choices[0].delta.content is not None for chunk in token_chunks)
    assert token_chunks[-1].choices[0].finish_reason in ("length", "stop")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(token_chunks)
    text = "".join(chunk.choices[0].delta.content for chunk in token_chunks)
    non_stream = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=8, temperature=0)
    assert text == non_stream.choices[0].message.content


def test_openai_completions(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    completion = client.completions.create(model="tgi", prompt=["One", "Two"], max_tokens=4, temperature=0)
    assert sorted(choice.index for choice in completion.choices) == [0, 1]
    streamed = list(client.completions.create(model="tgi", prompt="One", max_tokens=4, temperature=0, stream=True))
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) is not None


def test_inference_client_text_generation_details_and_stream(server):
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=server.url)
    output = client.text_generation("The sun", max_new_tokens=6, details=True, decoder_input_details=True)
    assert output.details.finish_reason in ("length", "eos_token")
    assert len(output.details.tokens) == output.details.generated_tokens
    streamed = list(client.text_generation("The sun", max_new_tokens=6, stream=True, details=True))
    assert streamed[-1].details is not None
    assert len(streamed) == streamed[-1].details.generated_tokens


def test_inference_client_chat_completion(server):
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=server.url + "/v1")
    output = client.chat_completion(MESSAGES, max_tokens=6, temperature=0)
    assert isinstance(output.choices[0].message.content, str)
    streamed = list(client.chat_completion(MESSAGES, max_tokens=6, temperature=0, stream=True))
    assert streamed and streamed[-1].choices[0].finish_reason in ("length", "stop")


def test_text_generation_client_generate_and_stream(server):
    from text_generation import Client

    client = Client(server.url, timeout=60)
    response = client.generate("Hello", max_new_tokens=5, decoder_input_details=True)
    assert response.details.generated_tokens <= 5
    tokens = [r.token for r in client.generate_stream("Hello", max_new_tokens=5)]
    assert 1 <= len(tokens) <= 5


def test_seeded_sampling_is_reproducible(server):
    from text_generation import Client

    client = Client(server.url, timeout=60)
    kwargs = dict(max_new_tokens=8, do_sample=True, temperature=0.9, top_k=50, top_p=0.9, seed=1234)
    first = client.generate("Once upon", **kwargs)
    second = client.generate("Once upon", **kwargs)
    assert first.generated_text == second.generated_text
    assert first.details.seed == 1234
