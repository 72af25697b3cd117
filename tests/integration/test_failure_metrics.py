"""`tgi_request_failure` counts each failed request once, under one reason: hang-ups and 429s on a real server."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from servers import ServerProcess, running_server

pytestmark = pytest.mark.integration

LONG = {"max_new_tokens": 90000, "ignore_eos": True}
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 90000, "ignore_eos": True}


@pytest.fixture(scope="module")
def two_slot_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that takes two requests at a time (more are 429)."""
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("failures"), MAX_CONCURRENT_REQUESTS="2",
                        MAX_TOTAL_TOKENS="100000", MAX_INPUT_TOKENS="64") as proc:
        yield proc


def metric(server: ServerProcess, sample: str) -> float:
    """One sample of /metrics (0 when absent)."""
    text = requests.get(server.url + "/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def failures(server: ServerProcess) -> dict[str, float]:
    """`tgi_request_failure` by `err` label."""
    text = requests.get(server.url + "/metrics", timeout=10).text
    return {label: float(count) for label, count in re.findall(r'^tgi_request_failure{err="([^"]+)"} (\S+)$', text,
                                                              re.MULTILINE)}


def wait_until(check, timeout: float = 20.0) -> None:
    """Poll `check` until true."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def send(server: ServerProcess, path: str, body: dict) -> socket.socket:
    """POST on a raw socket, unread."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


def running(server: ServerProcess) -> float:
    """The engine's running sequences."""
    return metric(server, "tgi_batch_current_size")


HANG_UPS = [
    ("/generate_stream", {"inputs": "The", "parameters": LONG}, True),
    ("/generate", {"inputs": "The", "parameters": LONG}, False),
    ("/v1/chat/completions", {**CHAT, "stream": True}, True),
    ("/v1/chat/completions", CHAT, False),
    ("/v1/completions", {"prompt": "The", "max_tokens": 90000, "ignore_eos": True, "stream": True}, True),
    ("/", {"inputs": "The", "parameters": LONG}, False),
] * 2
OVERLOADED = [
    ("/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 2}}),
    ("/generate_stream", {"inputs": "hi", "parameters": {"max_new_tokens": 2}}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "n": 2}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}),
    ("/v1/completions", {"prompt": ["a", "b"], "max_tokens": 2}),
    ("/", {"inputs": "hi", "parameters": {"max_new_tokens": 2}}),
    ("/invocations", {"inputs": "hi", "parameters": {"max_new_tokens": 2}}),
] * 2


def test_hang_ups_and_429s_are_each_counted_once_under_one_reason(two_slot_server):
    server = two_slot_server
    for path, body, streaming in HANG_UPS:
        sock = send(server, path, body)
        if streaming:
            received = b""
            while b"data:" not in received:
                received += sock.recv(65536)
        else:
            wait_until(lambda: running(server) == 1)
        sock.close()
        wait_until(lambda: running(server) == 0)
    holders = [send(server, "/generate_stream", {"inputs": "The", "parameters": LONG}) for _ in range(2)]
    try:
        wait_until(lambda: running(server) == 2)
        for path, body in OVERLOADED:
            response = requests.post(server.url + path, json=body, timeout=30)
            if path == "/generate_stream":  # TGI's stream reports it as an event; OpenAI's routes as an HTTP 429
                assert response.status_code == 200 and "Model is overloaded" in response.text, response.text
            else:
                assert response.status_code == 429, (path, response.text)
    finally:
        for sock in holders:
            sock.close()
    wait_until(lambda: running(server) == 0)
    wait_until(lambda: failures(server).get("dropped") == len(HANG_UPS) + 2)
    assert failures(server) == {"dropped": len(HANG_UPS) + 2, "overloaded": len(OVERLOADED)}
