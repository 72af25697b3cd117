"""A stop string that ends inside a token, on the real server: TGI's routes end right after it, OpenAI's before it,
streamed and not, and no text after it is ever sent; the cut token keeps its id and logprob."""

from __future__ import annotations

import pytest
from compat_helpers import post, sse

pytestmark = pytest.mark.integration

PROMPT = "Test request about deep learning and the model"


def cut_stop(tokens: list[dict]) -> tuple[str, int]:
    """A stop string that starts in one token and ends inside the next, before that token's end; and its index."""
    texts = [token["text"] for token in tokens]
    for k in range(1, len(texts)):
        if len(texts[k]) >= 2 and texts[k - 1] and not any(t["special"] for t in tokens[:k + 1]):
            stop = texts[k - 1][-1] + texts[k][0]
            if stop not in "".join(texts[:k]):
                return stop, k
    pytest.skip("no token boundary to cut at in the greedy continuation")


@pytest.fixture(scope="module")
def greedy(server) -> tuple[str, list[dict], str, int]:
    """The greedy continuation's text and tokens, and a stop string ending inside token `k`.

    Asked twice, the second reply kept: the first may compute the whole prompt, every later one finds its blocks in
    the prefix cache, and a prompt computed in fewer tokens may differ in a logprob's last digits (float sums taken
    in another order). The tests compare requests served alike."""
    request = {"inputs": PROMPT, "parameters": {"max_new_tokens": 16, "details": True}}
    post(server.url + "/generate", request)
    body = post(server.url + "/generate", request).json()
    tokens = body["details"]["tokens"]
    stop, k = cut_stop(tokens)
    return body["generated_text"], tokens, stop, k


def test_tgi_routes_end_right_after_the_stop_string(server, greedy):
    text, tokens, stop, k = greedy
    expected = "".join(token["text"] for token in tokens[:k]) + tokens[k]["text"][0]
    parameters = {"max_new_tokens": 16, "details": True, "stop": [stop]}
    body = post(server.url + "/generate", {"inputs": PROMPT, "parameters": parameters}).json()
    assert (body["generated_text"], body["details"]["finish_reason"]) == (expected, "stop_sequence")
    last = body["details"]["tokens"][-1]
    assert (last["id"], last["logprob"], last["text"]) == (tokens[k]["id"], tokens[k]["logprob"],
                                                           tokens[k]["text"][0])
    events = sse(post(server.url + "/generate_stream", {"inputs": PROMPT, "parameters": parameters}))
    assert "".join(event["token"]["text"] for event in events) == expected
    assert events[-1]["generated_text"] == expected and events[-1]["token"]["id"] == tokens[k]["id"]


def test_completions_end_before_the_stop_string(server, greedy):
    text, tokens, stop, k = greedy
    expected = "".join(token["text"] for token in tokens[:k])[:-1]
    body = {"prompt": PROMPT, "max_tokens": 16, "temperature": 0, "stop": [stop]}
    choice = post(server.url + "/v1/completions", body).json()["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == (expected, "stop")
    events = sse(post(server.url + "/v1/completions", {**body, "stream": True}))
    assert events[-1] == "[DONE]"
    assert "".join(event["choices"][0]["text"] for event in events[:-1] if event["choices"]) == expected


def test_chat_ends_before_the_stop_string(server):
    messages = [{"role": "user", "content": "What is deep learning?"}]
    body = {"messages": messages, "max_tokens": 16, "temperature": 0, "logprobs": True}
    full = post(server.url + "/v1/chat/completions", body).json()["choices"][0]
    tokens = [{"text": entry["token"], "special": False} for entry in full["logprobs"]["content"]]
    stop, k = cut_stop(tokens)
    expected = "".join(token["text"] for token in tokens[:k])[:-1]
    choice = post(server.url + "/v1/chat/completions", {**body, "stop": [stop]}).json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == (expected, "stop")
    events = sse(post(server.url + "/v1/chat/completions", {**body, "stop": [stop], "stream": True}))
    assert "".join(event["choices"][0]["delta"]["content"] for event in events[:-1]) == expected
