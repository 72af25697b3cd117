"""Tokens as the responses show them: TGI's `{id, text, logprob, special}` and OpenAI's logprob entries."""

from __future__ import annotations

import math
from typing import Any, Sequence

from serving.messages import TokenDelta, TokenInfo


def logprob(value: float | None) -> float | None:
    """A log-probability for JSON: NaN, infinities and missing values are null (serde_json writes them so)."""
    return None if value is None or not math.isfinite(value) else value


def token_json(token: TokenInfo) -> dict[str, Any]:
    """TGI's `Token`."""
    return {"id": token.id, "text": token.text, "logprob": logprob(token.logprob), "special": token.special}


def prefill_json(prefill: Sequence[TokenInfo]) -> list[dict[str, Any]]:
    """TGI's `PrefillToken`s: `{id, text, logprob}`, the first logprob null."""
    return [{"id": token.id, "text": token.text, "logprob": logprob(token.logprob)} for token in prefill]


def top_tokens_json(top_tokens: Sequence[TokenInfo]) -> list[dict[str, Any]]:
    """TGI's list of the most likely tokens at one step."""
    return [token_json(token) for token in top_tokens]


def openai_logprob(delta: TokenDelta) -> dict[str, Any]:
    """OpenAI's `{token, logprob, top_logprobs}` entry for one generated token."""
    return {
        "token": delta.token.text,
        "logprob": logprob(delta.token.logprob),
        "top_logprobs": [{"token": top.text, "logprob": logprob(top.logprob)} for top in delta.top_tokens],
    }
