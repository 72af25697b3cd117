"""schemathesis hooks of the contract run: a generated body asks for a few tokens at most.

A schema-valid body may ask for up to 2**32 tokens, or leave the length open (the rest of the context); the tiny
model would take minutes over such a run. Lowering the length keeps every body as valid or invalid as it was.
"""

from __future__ import annotations

from typing import Any

import schemathesis

MAX_TOKENS = 4
LENGTH_FIELDS = ("max_tokens", "max_completion_tokens", "max_new_tokens")


def _short(body: Any) -> Any:
    """`body` with every length field (at any depth) at most MAX_TOKENS, and set where a request left it open."""
    if isinstance(body, list):
        return [_short(item) for item in body]
    if not isinstance(body, dict):
        return body
    short = {key: _short(value) for key, value in body.items()}
    for field in LENGTH_FIELDS:
        value = short.get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_TOKENS:
            short[field] = MAX_TOKENS
    if "messages" in short or "prompt" in short:
        if short.get("max_tokens") is None and short.get("max_completion_tokens") is None:
            short["max_tokens"] = MAX_TOKENS
    if "inputs" in short:
        parameters = short.setdefault("parameters", {"do_sample": True})
        if isinstance(parameters, dict) and parameters.get("max_new_tokens") is None:
            parameters["max_new_tokens"] = MAX_TOKENS
    return short


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Every body sent, in every phase, asks for at most MAX_TOKENS tokens."""
    case.body = _short(case.body)
