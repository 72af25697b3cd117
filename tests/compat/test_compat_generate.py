"""TGI's generate routes against the real server, modelled on TGI's integration tests (API.md §8.3).

Shape and invariant checks, never exact text: the `text_generation` client (sync and async, as TGI's own tests
use it) and raw HTTP, every body checked against the typed response shapes with no key missing or extra.
"""

from __future__ import annotations

import asyncio

import pytest
from compat_helpers import EOS_ID, exact, post, sse, token_count

from serving.api.protocol import responses

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PROMPT = "Test request about deep learning and the model"


def client(server):
    from text_generation import Client

    return Client(server.url, timeout=120)


def test_generate_with_decoder_input_details(server):
    """TGI's `test_<model>`: 10 tokens, `decoder_input_details`, through `POST /`."""
    response = client(server).generate(PROMPT, max_new_tokens=10, decoder_input_details=True)
    details = response.details
    assert details.finish_reason.value in ("length", "eos_token")
    assert details.generated_tokens == len(details.tokens) <= 10
    prompt_ids = [token["id"] for token in post(server.url + "/tokenize", {"inputs": PROMPT}).json()]
    assert [token.id for token in details.prefill] == prompt_ids
    assert details.prefill[0].logprob is None
    assert all(token.logprob <= 0 for token in details.prefill[1:])
    assert all(token.logprob <= 0 for token in details.tokens)
    assert details.seed is None


def test_generate_all_params(server):
    """TGI's `test_<model>_all_params`: every parameter accepted; full text, truncation and the seed echoed."""
    response = client(server).generate(
        PROMPT, max_new_tokens=10, repetition_penalty=1.2, return_full_text=True, stop_sequences=["test"],
        temperature=0.5, top_p=0.9, top_k=10, truncate=5, typical_p=0.9, watermark=True,
        decoder_input_details=True, seed=0)
    assert response.generated_text.startswith(PROMPT)
    assert response.details.seed == 0
    assert len(response.details.prefill) == 5
    assert response.details.finish_reason.value in ("length", "eos_token", "stop_sequence")


def test_generate_load(server):
    """TGI's `test_<model>_load`: four concurrent identical greedy requests give identical answers."""
    from text_generation import AsyncClient

    async def run() -> list:
        async_client = AsyncClient(server.url, timeout=120)
        return await asyncio.gather(*[async_client.generate(PROMPT, max_new_tokens=10, decoder_input_details=True)
                                      for _ in range(4)])

    answers = asyncio.run(run())
    assert len({answer.generated_text for answer in answers}) == 1
    assert len({tuple(token.id for token in answer.details.tokens) for answer in answers}) == 1


def test_async_stream(server):
    from text_generation import AsyncClient

    async def run() -> list:
        return [event async for event in AsyncClient(server.url).generate_stream(PROMPT, max_new_tokens=6)]

    events = asyncio.run(run())
    assert 1 <= len(events) <= 6
    assert events[-1].details is not None and events[-1].generated_text is not None
    assert all(event.details is None and event.generated_text is None for event in events[:-1])


def test_generate_response_shape_and_headers(server):
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 6, "details": True, "decoder_input_details": True,
                                             "top_n_tokens": 3}}
    response = post(server.url + "/generate", body)
    assert response.status_code == 200
    answer = exact(responses.GenerateResponse, response.json())
    details = answer["details"]
    assert list(details) == ["finish_reason", "generated_tokens", "seed", "prefill", "tokens", "top_tokens"]
    headers = response.headers
    assert headers["x-compute-type"] == "gpu+optimized"
    assert int(headers["x-compute-characters"]) == len(PROMPT)
    assert int(headers["x-prompt-tokens"]) == len(details["prefill"]) == token_count(server.url, PROMPT)
    assert int(headers["x-generated-tokens"]) == details["generated_tokens"]
    assert float(headers["x-compute-time"]) > 0
    timings = [int(headers[name]) for name in ("x-total-time", "x-validation-time", "x-queue-time",
                                                "x-inference-time", "x-time-per-token")]
    assert all(value >= 0 for value in timings)
    assert timings[0] >= timings[3]


def test_top_n_tokens_rank_the_chosen_token_first_when_greedy(server):
    details = post(server.url + "/generate", {"inputs": PROMPT, "parameters": {
        "max_new_tokens": 5, "top_n_tokens": 3, "details": True}}).json()["details"]
    assert len(details["top_tokens"]) == details["generated_tokens"]
    for token, top in zip(details["tokens"], details["top_tokens"]):
        assert len(top) == 3
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert top[0]["id"] == token["id"] and top[0]["logprob"] == pytest.approx(token["logprob"], abs=1e-5)


def test_best_of_returns_the_other_sequences(server):
    response = client(server).generate(PROMPT, max_new_tokens=5, best_of=2, do_sample=True,
                                       decoder_input_details=True)
    others = response.details.best_of_sequences
    assert len(others) == 1
    assert others[0].seed is not None and response.details.seed is not None
    assert len(others[0].prefill) == len(response.details.prefill) > 0
    raw = post(server.url + "/generate", {"inputs": PROMPT, "parameters": {
        "max_new_tokens": 3, "best_of": 2, "do_sample": True, "details": True, "return_full_text": True}})
    answer = exact(responses.GenerateResponse, raw.json())
    assert answer["details"]["best_of_sequences"][0]["generated_text"].startswith(PROMPT)


def test_finish_reason_length(server):
    details = post(server.url + "/generate", {"inputs": PROMPT, "parameters": {
        "max_new_tokens": 3, "details": True}}).json()["details"]
    assert (details["finish_reason"], details["generated_tokens"]) == ("length", 3)


def test_finish_reason_eos_token_and_special_flag(server, eos_prompt):
    answer = post(server.url + "/generate", {"inputs": eos_prompt, "parameters": {
        "max_new_tokens": 60, "details": True}}).json()
    details = answer["details"]
    assert details["finish_reason"] == "eos_token"
    last = details["tokens"][-1]
    assert (last["id"], last["special"]) == (EOS_ID, True)
    assert last["text"].endswith("</s>")  # after a held-back partial character, the EOS token carries it
    assert not any(token["special"] for token in details["tokens"][:-1])
    assert "</s>" not in answer["generated_text"]
    assert details["generated_tokens"] == len(details["tokens"])
    events = sse(post(server.url + "/generate_stream", {"inputs": eos_prompt, "parameters": {
        "max_new_tokens": 60, "details": True}}))
    assert events[-1]["token"]["special"] is True and events[-1]["details"]["finish_reason"] == "eos_token"
    assert events[-1]["generated_text"] == answer["generated_text"]


def test_finish_reason_stop_sequence_keeps_the_stop_text(server):
    # The first of these prompts whose greedy continuation starts with four ordinary tokens (checked, never skipped).
    for prompt in (PROMPT, "Once upon a time", "The model", "Deep learning is"):
        first = post(server.url + "/generate", {"inputs": prompt, "parameters": {
            "max_new_tokens": 12, "details": True}}).json()
        tokens = first["details"]["tokens"]
        if len(tokens) >= 4 and not any(token["special"] for token in tokens[:4]):
            break
    else:
        pytest.fail("no prompt has a greedy continuation of four ordinary tokens")
    stop = "".join(token["text"] for token in tokens[1:4])
    answer = post(server.url + "/generate", {"inputs": prompt, "parameters": {
        "max_new_tokens": 12, "details": True, "stop": [stop]}}).json()
    assert answer["details"]["finish_reason"] == "stop_sequence"
    assert answer["generated_text"].endswith(stop)
    assert first["generated_text"].startswith(answer["generated_text"])


def test_seed_is_echoed_only_when_sampling(server):
    sampled = client(server).generate(PROMPT, max_new_tokens=4, do_sample=True, seed=1234)
    again = client(server).generate(PROMPT, max_new_tokens=4, do_sample=True, seed=1234)
    assert sampled.details.seed == 1234 and sampled.generated_text == again.generated_text
    unseeded = client(server).generate(PROMPT, max_new_tokens=2, do_sample=True)
    assert isinstance(unseeded.details.seed, int)
    assert client(server).generate(PROMPT, max_new_tokens=2).details.seed is None


def test_return_full_text_defaults(server):
    compat = post(server.url + "/", {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}}).json()
    assert isinstance(compat, list) and compat[0]["generated_text"].startswith(PROMPT)
    plain = post(server.url + "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}}).json()
    assert compat[0]["generated_text"] == PROMPT + plain["generated_text"]
    off = post(server.url + "/", {"inputs": PROMPT, "parameters": {"max_new_tokens": 2,
                                                                   "return_full_text": False}}).json()
    assert off[0]["generated_text"] == plain["generated_text"]


def test_truncate_keeps_the_last_tokens(server):
    response = post(server.url + "/generate", {"inputs": PROMPT, "parameters": {
        "max_new_tokens": 2, "truncate": 3, "decoder_input_details": True}})
    prompt_ids = [token["id"] for token in post(server.url + "/tokenize", {"inputs": PROMPT}).json()]
    assert [token["id"] for token in response.json()["details"]["prefill"]] == prompt_ids[-3:]
    assert response.headers["x-prompt-tokens"] == "3"


def test_generate_stream_events(server):
    response = post(server.url + "/generate_stream", {"inputs": PROMPT, "parameters": {
        "max_new_tokens": 6, "details": True, "top_n_tokens": 2, "return_full_text": True}})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["x-compute-characters"] == str(len(PROMPT))
    assert "x-generated-tokens" not in response.headers
    events = [exact(responses.StreamResponse, event) for event in sse(response)]
    assert [event["index"] for event in events] == list(range(1, len(events) + 1))
    assert all(list(event) == ["index", "token", "top_tokens", "generated_text", "details"] for event in events)
    assert all(len(event["top_tokens"]) == 2 for event in events)
    last = events[-1]
    assert last["generated_text"] == PROMPT + "".join(e["token"]["text"] for e in events if not e["token"]["special"])
    assert last["details"]["generated_tokens"] == len(events)
    assert last["details"]["input_length"] == token_count(server.url, PROMPT)
    without_details = sse(post(server.url + "/generate_stream", {"inputs": PROMPT, "parameters": {
        "max_new_tokens": 2}}))
    assert without_details[-1]["details"] is None and without_details[-1]["generated_text"] is not None


def test_compat_route_streams_like_generate_stream(server):
    events = sse(post(server.url + "/", {"inputs": PROMPT, "stream": True, "parameters": {"max_new_tokens": 3}}))
    assert "[DONE]" not in events
    assert [event["index"] for event in events] == list(range(1, len(events) + 1))
    assert events[-1]["generated_text"].startswith(PROMPT)


def test_text_generation_client_chat(server):
    from text_generation.types import Message

    reply = client(server).chat([Message(role="user", content="Hello there")], max_tokens=5, seed=1)
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage["completion_tokens"] <= 5  # the client leaves `usage` a dict
