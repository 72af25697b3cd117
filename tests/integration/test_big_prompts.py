"""Big prompts never pause the streams of others: tokenizing and templating run beside the engine's step loop."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from servers import ServerProcess, running_server

pytestmark = pytest.mark.integration

MAX_INPUT = 1000
HUGE_CONTENT = "word " * 380_000  # 1.9 MB of chat content
MAX_GAP = 1.0


@pytest.fixture(scope="module")
def big_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose launcher kills an engine that stalls for 5 s."""
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("big"), MAX_TOTAL_TOKENS="100000",
                        MAX_INPUT_TOKENS=str(MAX_INPUT), ENGINE_STALL_TIMEOUT="5") as proc:
        yield proc


class Stream:
    """A long `/generate_stream` read in a thread, noting when each event arrived."""

    def __init__(self, url: str) -> None:
        self.arrivals: list[float] = []
        self.stopping = threading.Event()
        self.response = requests.post(url + "/generate_stream", stream=True, timeout=60, json={
            "inputs": "The", "parameters": {"max_new_tokens": 90000, "ignore_eos": True}})
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with self.response:
            for line in self.response.iter_lines():
                if self.stopping.is_set():
                    return
                if line.startswith(b"data:"):
                    self.arrivals.append(time.monotonic())

    def largest_gap(self, start: float, end: float) -> float:
        """The longest wait for an event between `start` and `end`."""
        times = [start] + [t for t in self.arrivals if start < t < end] + [end]
        return max(b - a for a, b in zip(times, times[1:]))

    def close(self) -> None:
        """Stop reading (the reader closes the connection)."""
        self.stopping.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def during_a_stream(server: ServerProcess, calls: list[tuple[str, dict]]) -> tuple[list[requests.Response], float]:
    """Make `calls` four at a time while a stream runs; their answers and the stream's largest gap meanwhile."""
    stream = Stream(server.url)
    try:
        while len(stream.arrivals) < 20:
            time.sleep(0.05)
        results: list[requests.Response] = [None] * len(calls)  # type: ignore[list-item]

        def call(index: int) -> None:
            path, body = calls[index]
            results[index] = requests.post(server.url + path, json=body, timeout=120)

        start = time.monotonic()
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        end = time.monotonic()
        time.sleep(0.3)
        gap = stream.largest_gap(start, end)
        assert stream.thread.is_alive(), "the stream ended"
    finally:
        stream.close()
    return results, gap


def test_huge_chats_to_chat_tokenize_do_not_pause_a_stream(big_server):
    body = {"messages": [{"role": "user", "content": HUGE_CONTENT}]}
    results, gap = during_a_stream(big_server, [("/chat_tokenize", body)] * 4)
    print(f"four 1.9 MB /chat_tokenize calls: largest inter-token gap {gap:.3f} s")
    for response in results:
        assert response.status_code == 422, response.text[:300]
        assert len(response.content) < 1000
        assert response.json()["error"].startswith(f"Input validation error: `inputs` must have less than {MAX_INPUT}")
    assert gap < MAX_GAP
    assert big_server.process.poll() is None
    assert requests.get(big_server.url + "/ping", timeout=2).status_code == 200


def test_huge_prompts_to_generate_are_refused_without_pausing_a_stream(big_server):
    body = {"inputs": HUGE_CONTENT, "parameters": {"max_new_tokens": 5}}
    results, gap = during_a_stream(big_server, [("/generate", body)] * 4)
    print(f"four 1.9 MB /generate calls: largest inter-token gap {gap:.3f} s")
    for response in results:
        assert response.status_code == 422
        assert "Given: at least" in response.json()["error"]
    assert gap < MAX_GAP


def test_prompts_just_under_the_input_limit_are_served(big_server):
    prompt = "word " * 4000
    count = len(requests.post(big_server.url + "/tokenize", json={"inputs": prompt[:1000]}, timeout=30).json())
    prompt = prompt[: int(1000 * (MAX_INPUT - 10) / count)]
    length = len(requests.post(big_server.url + "/tokenize", json={"inputs": prompt}, timeout=30).json())
    assert MAX_INPUT - 40 < length < MAX_INPUT
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 5, "details": True}}
    results, gap = during_a_stream(big_server, [("/generate", body)] * 4)
    print(f"four /generate calls of {length} tokens: largest inter-token gap {gap:.3f} s")
    for response in results:
        assert response.status_code == 200, response.text[:300]
        assert response.json()["details"]["generated_tokens"] == 5
    assert gap < MAX_GAP
    assert json.loads(requests.get(big_server.url + "/info", timeout=5).text)["max_input_tokens"] == MAX_INPUT
