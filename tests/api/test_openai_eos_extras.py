"""vLLM's extra body fields on the OpenAI routes: `ignore_eos` and `min_tokens` reach the engine's stopping."""

from __future__ import annotations


def test_chat_ignore_eos_and_min_tokens(http, engine):
    http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                                            "ignore_eos": True, "min_tokens": 8})
    stopping = engine.requests[-1].stopping
    assert stopping.ignore_eos is True and stopping.min_new_tokens == 8 and stopping.max_new_tokens == 8


def test_completion_ignore_eos_and_min_tokens(http, engine):
    http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 5, "ignore_eos": True, "min_tokens": 3})
    stopping = engine.requests[-1].stopping
    assert stopping.ignore_eos is True and stopping.min_new_tokens == 3


def test_defaults_stop_at_eos(http, engine):
    http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 5})
    stopping = engine.requests[-1].stopping
    assert stopping.ignore_eos is False and stopping.min_new_tokens == 0


def test_min_tokens_must_be_an_unsigned_integer(http):
    response = http.post("/v1/completions", json={"prompt": "hello", "min_tokens": -1})
    assert response.status_code == 400
