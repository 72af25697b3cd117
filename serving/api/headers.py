"""TGI's `x-*` response headers on generation routes: compute type and characters, and timings."""

from __future__ import annotations

import time
from typing import Sequence

from serving.api.feed import Generation


def stream_headers(compute_type: str, characters: int) -> dict[str, str]:
    """What streaming routes send (with `X-Accel-Buffering`, which the SSE response adds)."""
    return {"x-compute-type": compute_type, "x-compute-characters": str(characters)}


def generation_headers(compute_type: str, characters: int, started: float,
                       generations: Sequence[Generation]) -> dict[str, str]:
    """The non-streaming headers, summed over `generations`; `started` is the `time.monotonic()` of arrival.

    The engine reports queue and inference time; validation time is what remains of the total.
    """
    total = time.monotonic() - started
    queue = sum(generation.finished.queue_time for generation in generations)
    inference = sum(generation.finished.inference_time for generation in generations)
    tokens = sum(generation.finished.generated_tokens for generation in generations)

    def ms(seconds: float) -> str:
        return str(int(max(seconds, 0.0) * 1000))

    return {
        "x-compute-type": compute_type,
        "x-compute-time": f"{total:f}",
        "x-compute-characters": str(characters),
        "x-total-time": ms(total),
        "x-validation-time": ms(total - queue - inference),
        "x-queue-time": ms(queue),
        "x-inference-time": ms(inference),
        "x-time-per-token": ms(inference / tokens if tokens else 0.0),
        "x-prompt-tokens": str(sum(generation.finished.input_length for generation in generations)),
        "x-generated-tokens": str(tokens),
    }
