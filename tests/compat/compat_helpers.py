"""Helpers of the compatibility suite: exact response shapes, SSE parsing, token counts, a prompt that ends in EOS."""

from __future__ import annotations

import json
from typing import Any

import requests
from pydantic import TypeAdapter

TIMEOUT = 120
API_KEY = "s3cret-Key"  # the options server's
EOS_ID = 2
CANDIDATE_WORDS = "the a an of to and in is was for on that with as by at from it this be are or".split()


def exact(shape: Any, value: Any) -> Any:
    """`value` checked against a typed dict of `serving.api.protocol.responses`: no key missing, none extra."""
    TypeAdapter(shape).validate_python(value)
    return value


def post(url: str, body: Any, **kwargs: Any) -> requests.Response:
    """POST a JSON body."""
    return requests.post(url, json=body, timeout=TIMEOUT, **kwargs)


def sse(response: requests.Response) -> list[Any]:
    """The events of an SSE response, JSON-decoded except `[DONE]`, with TGI's framing checked.

    JSON events have no space after `data:`; `[DONE]` comes as `data: [DONE]`; keep-alives (`:`) are skipped.
    """
    body = response.content.decode()
    assert body.endswith("\n\n"), body
    events: list[Any] = []
    for frame in body.split("\n\n")[:-1]:
        if frame == ":":
            continue
        if frame == "data: [DONE]":
            events.append("[DONE]")
            continue
        assert frame.startswith("data:") and not frame.startswith("data: "), frame
        events.append(json.loads(frame[len("data:"):]))
    return events


def token_count(url: str, text: str) -> int:
    """How many tokens `/tokenize` makes of `text`."""
    return len(post(url + "/tokenize", {"inputs": text}).json())


def find_eos_prompt(url: str, max_new_tokens: int = 60) -> str:
    """A short prompt whose greedy continuation ends with EOS within `max_new_tokens` (searched, not assumed)."""
    for first in CANDIDATE_WORDS:
        for second in CANDIDATE_WORDS:
            prompt = f"{first} {second}"
            body = post(url + "/generate", {"inputs": prompt, "parameters": {
                "max_new_tokens": max_new_tokens, "details": True}}).json()
            if body["details"]["finish_reason"] == "eos_token":
                return prompt
    raise AssertionError("no candidate prompt ends with EOS")
