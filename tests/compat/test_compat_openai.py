"""The OpenAI routes against the real server through the `openai` package (sync and async, streamed and not),
`huggingface_hub.InferenceClient` and raw HTTP; TGI's `test_completion_prompts.py` checks among them (API.md §8.3).
"""

from __future__ import annotations

import asyncio

import pytest
from compat_helpers import EOS_ID, exact, post, sse

from serving.api.protocol import responses

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is deep learning?"}]


@pytest.fixture(scope="module")
def openai_client(server):
    """A sync `openai` client, closed at the end so that no keep-alive connection delays the server's stop."""
    from openai import OpenAI

    with OpenAI(base_url=server.url + "/v1", api_key="unused") as client:
        yield client


def async_openai_client(server):
    """An async `openai` client (use it with `async with`)."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=server.url + "/v1", api_key="unused")


def test_chat_shape_and_headers_over_raw_http(server):
    response = post(server.url + "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 5, "logprobs": True,
                                                          "top_logprobs": 2})
    body = exact(responses.ChatCompletion, response.json())
    assert int(response.headers["x-prompt-tokens"]) == body["usage"]["prompt_tokens"]
    assert int(response.headers["x-generated-tokens"]) == body["usage"]["completion_tokens"]
    assert {"x-compute-type", "x-compute-time", "x-total-time", "x-inference-time"} <= set(response.headers)
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == server.env["HF_MODEL_ID"]
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    assert all(len(entry["top_logprobs"]) == 2 for entry in content)


def test_chat_n_logprobs_and_seed(server, openai_client):
    client = openai_client
    completion = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=6, n=3, seed=7,
                                                logprobs=True, top_logprobs=3)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    for choice in completion.choices:
        assert len(choice.logprobs.content) >= 1
        assert all(len(entry.top_logprobs) == 3 for entry in choice.logprobs.content)
    assert completion.usage.completion_tokens == sum(len(c.logprobs.content) for c in completion.choices)
    again = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=6, n=3, seed=7)
    assert [c.message.content for c in again.choices] == [c.message.content for c in completion.choices]


def test_chat_logit_bias_forces_eos(server, openai_client):
    completion = openai_client.chat.completions.create(
        model="tgi", messages=MESSAGES, max_tokens=6, temperature=0, logit_bias={str(EOS_ID): 100})
    choice = completion.choices[0]
    assert (choice.finish_reason, choice.message.content, completion.usage.completion_tokens) == ("stop", "", 1)


def test_chat_stop(server, openai_client):
    client = openai_client
    full = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=12, temperature=0,
                                          extra_body={"min_tokens": 12})  # no EOS: long enough every time
    text = full.choices[0].message.content
    assert len(text) >= 6, text
    stopped = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=12, temperature=0,
                                             stop=text[2:5])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[:text.find(text[2:5])]


def test_chat_stream_with_and_without_usage(server, openai_client):
    client = openai_client
    chunks = list(client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=5, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(chunks) - 1
    assert all(chunk.usage is None and len(chunk.choices) == 1 for chunk in chunks[:-1])
    assert all(chunk.choices[0].delta.content is not None for chunk in chunks[:-1])
    plain = list(client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=5, stream=True))
    assert all(chunk.usage is None and len(chunk.choices) == 1 for chunk in plain)
    assert plain[-1].choices[0].finish_reason in ("length", "stop")


def test_chat_stream_of_several_choices_over_raw_http(server):
    events = sse(post(server.url + "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4, "n": 2,
                                                            "stream": True, "logprobs": True}))
    assert events[-1] == "[DONE]"
    chunks = [exact(responses.ChatCompletionChunk, event) for event in events[:-1]]
    for index in (0, 1):
        mine = [chunk["choices"][0] for chunk in chunks if chunk["choices"][0]["index"] == index]
        assert mine[-1]["finish_reason"] in ("length", "stop")
        assert all(choice["finish_reason"] is None for choice in mine[:-1])
        assert all(len(choice["logprobs"]["content"]) == 1 for choice in mine)


def test_async_chat_and_stream(server):
    async def run() -> tuple:
        async with async_openai_client(server) as client:
            completion = await client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=4,
                                                              temperature=0)
            stream = await client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=4,
                                                          temperature=0, stream=True)
            chunks = [chunk async for chunk in stream]
        return completion, chunks

    completion, chunks = asyncio.run(run())
    assert "".join(chunk.choices[0].delta.content for chunk in chunks) == completion.choices[0].message.content


def test_continue_final_message_and_content_parts(server, openai_client):
    messages = [{"role": "user", "content": [{"type": "text", "text": "Tell me "}, {"type": "text", "text": "more"}]},
                {"role": "assistant", "content": "Once upon a time"}]
    rendered = post(server.url + "/chat_tokenize", {"messages": messages}).json()
    exact(responses.ChatTokenizeResponse, rendered)
    assert "Tell me more" in rendered["templated_text"]
    assert rendered["templated_text"].endswith("Once upon a time")
    assert "".join(token["text"] for token in rendered["tokenize_response"]) == rendered["templated_text"]
    completion = openai_client.chat.completions.create(model="tgi", messages=messages, max_tokens=3)
    assert completion.usage.prompt_tokens == len(rendered["tokenize_response"])


def test_completions_several_prompts(server, openai_client):
    """TGI's `test_completion_prompts.py`: N choices with indexes 0..N-1, streamed chunks routed by index."""
    client = openai_client
    completion = client.completions.create(model="tgi", prompt=["Say", "Tell"], max_tokens=4, temperature=0,
                                           seed=3)
    assert sorted(choice.index for choice in completion.choices) == [0, 1]
    streamed = list(client.completions.create(model="tgi", prompt=["Say", "Tell"], max_tokens=4, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    texts = {0: "", 1: ""}
    for chunk in streamed[:-1]:
        texts[chunk.choices[0].index] += chunk.choices[0].text
    assert [texts[0], texts[1]] == [choice.text for choice in sorted(completion.choices, key=lambda c: c.index)]
    assert streamed[-1].choices == [] and streamed[-1].usage.total_tokens == completion.usage.total_tokens


def test_completions_echo_a_prompt_of_token_ids_streamed_and_not(server, openai_client):
    ids = [token["id"] for token in post(server.url + "/tokenize", {"inputs": "Say something"}).json()]
    whole = openai_client.completions.create(model="tgi", prompt=[ids], max_tokens=4, temperature=0, echo=True)
    plain = openai_client.completions.create(model="tgi", prompt=[ids], max_tokens=4, temperature=0)
    assert whole.choices[0].text == "Say something" + plain.choices[0].text
    streamed = openai_client.completions.create(model="tgi", prompt=[ids], max_tokens=4, temperature=0, echo=True,
                                                stream=True)
    chunks = [chunk.choices[0].text for chunk in streamed]
    assert chunks[0].startswith("Say something") and "".join(chunks) == whole.choices[0].text


def test_completions_logprobs_and_raw_shape(server, openai_client):
    completion = openai_client.completions.create(model="tgi", prompt="Say", max_tokens=4, logprobs=2,
                                                  temperature=0)
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 4
    assert logprobs.text_offset[0] == 0
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)
    raw = post(server.url + "/v1/completions", {"prompt": "Say", "max_tokens": 3, "logprobs": 1, "n": 2})
    body = exact(responses.Completion, raw.json())
    assert len(body["choices"]) == 2
    events = sse(post(server.url + "/v1/completions", {"prompt": "Say", "max_tokens": 3, "stream": True}))
    assert events[-1] == "[DONE]"
    assert all(exact(responses.Completion, event) for event in events[:-1])


def test_async_completions(server):
    async def run():
        async with async_openai_client(server) as client:
            return await client.completions.create(model="tgi", prompt="Hi", max_tokens=3)

    assert len(asyncio.run(run()).choices) == 1


def test_models_through_openai(server, openai_client):
    models = openai_client.models.list()
    assert [model.id for model in models.data] == [server.env["HF_MODEL_ID"]]


def test_inference_client_chat(server):
    from huggingface_hub import InferenceClient

    with InferenceClient(base_url=server.url + "/v1") as client:
        output = client.chat_completion(MESSAGES, max_tokens=4, seed=1, logprobs=True, top_logprobs=2)
        chunks = list(client.chat_completion(MESSAGES, max_tokens=4, stream=True,
                                             stream_options={"include_usage": True}))
    assert output.choices[0].logprobs.content[0].top_logprobs
    assert chunks[-1].usage.completion_tokens == len(chunks) - 1
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_inference_client_text_generation(server):
    from huggingface_hub import InferenceClient

    with InferenceClient(base_url=server.url) as client:
        output = client.text_generation("The sun", max_new_tokens=6, details=True, decoder_input_details=True,
                                        top_n_tokens=2, seed=4, do_sample=True)
        streamed = list(client.text_generation("The sun", max_new_tokens=6, stream=True, details=True))
    assert output.details.seed == 4
    assert output.details.prefill[0].logprob is None and len(output.details.prefill) > 1
    assert len(output.details.top_tokens) == output.details.generated_tokens
    assert streamed[-1].details.generated_tokens == len(streamed)
    assert [event.index for event in streamed] == list(range(1, len(streamed) + 1))


def test_a_prompt_past_the_context_is_a_bad_request_with_openais_code(server, openai_client):
    from openai import BadRequestError

    for stream in (False, True):
        with pytest.raises(BadRequestError) as raised:
            openai_client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=100_000, stream=stream)
        assert raised.value.code == "context_length_exceeded"
        assert "`max_new_tokens` must be <=" in raised.value.message
    with pytest.raises(BadRequestError) as raised:
        openai_client.completions.create(model="tgi", prompt="word " * 5000, max_tokens=4)
    assert raised.value.code == "context_length_exceeded"
