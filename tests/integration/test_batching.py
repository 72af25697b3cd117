"""Continuous batching through the real server: late arrivals join running batches, batching changes no output."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest
import requests

pytestmark = pytest.mark.integration

PROMPTS = [
    "The", "A model of the world", "Deep learning is", "Coffee and water and the sun",
    "Python", "We can make a new server for the people", "Tokens", "What is the state of the batch engine",
]


def sse_events(response: requests.Response) -> Iterator[dict]:
    """Each SSE event's JSON, split on the blank line that ends an event (not on `str.splitlines`, which also
    breaks at U+0085 and U+2028, characters JSON may carry unescaped and a random model does generate)."""
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):
        buffer += chunk
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            if event.startswith(b"data:"):
                yield json.loads(event[len(b"data:"):])


class Stream(threading.Thread):
    """A /generate_stream client that timestamps its first token and its end."""

    def __init__(self, url: str, prompt: str, max_new_tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.prompt, self.max_new_tokens = url, prompt, max_new_tokens
        self.tokens: list[int] = []
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.finish_reason: str | None = None

    def run(self) -> None:
        body = {"inputs": self.prompt, "parameters": {"max_new_tokens": self.max_new_tokens, "details": True}}
        with requests.post(self.url + "/generate_stream", json=body, stream=True, timeout=120) as response:
            for event in sse_events(response):
                if self.first_token_at is None:
                    self.first_token_at = time.monotonic()
                self.tokens.append(event["token"]["id"])
                if event["details"]:
                    self.finish_reason = event["details"]["finish_reason"]
        self.finished_at = time.monotonic()


def greedy_ids(url: str, prompt: str) -> list[int]:
    """Token ids of a greedy /generate of 16 tokens."""
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 16, "details": True}}
    response = requests.post(url + "/generate", json=body, timeout=120)
    response.raise_for_status()
    return [token["id"] for token in response.json()["details"]["tokens"]]


def test_late_request_gets_its_first_token_while_earlier_streams_decode(server):
    # As long as the shared server's context allows (MAX_TOTAL_TOKENS=256), so that the earlier streams are still
    # decoding well after the late request's HTTP round trip, however fast the engine is.
    earlier = [Stream(server.url, prompt, 230) for prompt in PROMPTS[:7]]
    for stream in earlier:
        stream.start()
    deadline = time.monotonic() + 60
    while any(len(stream.tokens) < 3 for stream in earlier if stream.finish_reason is None):
        assert time.monotonic() < deadline, "the earlier streams never got going"
        time.sleep(0.02)
    late = Stream(server.url, PROMPTS[7], 5)
    late_started = time.monotonic()
    late.start()
    for stream in [*earlier, late]:
        stream.join(120)
    long_ones = [stream for stream in earlier if len(stream.tokens) >= 60]
    assert len(long_ones) >= 4, [len(stream.tokens) for stream in earlier]
    assert late.first_token_at is not None
    timeline = (f"late request's first token {late.first_token_at - late_started:.3f} s after it was sent; long "
                f"streams (tokens, finish reason, end after it was sent): "
                f"{[(len(s.tokens), s.finish_reason, round(s.finished_at - late_started, 3)) for s in long_ones]}")
    assert all(late.first_token_at < stream.finished_at for stream in long_ones), timeline
    assert late.finished_at < min(stream.finished_at for stream in long_ones)


def test_greedy_outputs_in_a_batch_equal_the_same_requests_alone(server):
    alone = [greedy_ids(server.url, prompt) for prompt in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda prompt: greedy_ids(server.url, prompt), PROMPTS))
    assert together == alone


def test_seeded_sampling_in_a_batch_equals_alone(server):
    def sample(prompt: str) -> str:
        body = {"inputs": prompt, "parameters": {
            "max_new_tokens": 12, "do_sample": True, "temperature": 0.8, "top_p": 0.95, "seed": 7}}
        return requests.post(server.url + "/generate", json=body, timeout=120).json()["generated_text"]

    alone = [sample(prompt) for prompt in PROMPTS[:4]]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(sample, PROMPTS[:4]))
    assert together == alone
