"""Process lifecycle: overload, disconnects, SIGTERM with streams in flight, a dead engine, bad settings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from servers import REPO_ROOT, running_server, start_server

pytestmark = pytest.mark.integration


# Outlasts any test that holds it open, however fast the engine: 99,000 tokens with EOS ignored (the tiny model
# decodes about 3,000 tokens a second on one idle core).
ENDLESS_STREAM = {"prompt": "The model", "max_tokens": 99000, "ignore_eos": True, "stream": True}


def open_stream(url: str, body: dict, path: str = "/v1/completions") -> tuple[socket.socket, bytes]:
    """Start a streaming request on a raw socket and read until the first event arrived."""
    payload = json.dumps(body).encode()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    received = b""
    while b"data:" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    return sock, received


@pytest.fixture(scope="module")
def small_server(tiny_model_dir, tmp_path_factory):
    """A server that admits two requests at a time."""
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("small"), MAX_CONCURRENT_REQUESTS="2",
                        MAX_TOTAL_TOKENS="100000") as proc:
        yield proc


def test_overload_is_429_and_a_disconnect_frees_the_slot(small_server):
    first, _ = open_stream(small_server.url, ENDLESS_STREAM)
    second, _ = open_stream(small_server.url, ENDLESS_STREAM)
    third = requests.post(small_server.url + "/generate", json={
        "inputs": "hi", "parameters": {"max_new_tokens": 2}}, timeout=30)
    assert third.status_code == 429
    assert third.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    first.close()
    deadline = time.monotonic() + 10
    while True:
        retry = requests.post(small_server.url + "/generate", json={
            "inputs": "hi", "parameters": {"max_new_tokens": 2}}, timeout=30)
        if retry.status_code == 200:
            break
        assert retry.status_code == 429 and time.monotonic() < deadline, retry.text
        time.sleep(0.05)
    second.close()


def grammar_pids(engine_pid: int) -> list[int]:
    """The engine's grammar process (its child running `serving.engine.grammar_process`)."""
    found = subprocess.run(["pgrep", "-f", "-P", str(engine_pid), "serving.engine.grammar_process"],
                           capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_lets_streams_in_flight_finish_then_exits_0(tiny_model_dir, tmp_path):
    proc = start_server(tiny_model_dir, tmp_path, MAX_TOTAL_TOKENS="512")
    proc.wait_ready()
    events: list[dict] = []

    def consume() -> None:
        body = {"inputs": "The", "parameters": {"max_new_tokens": 150, "details": True}}
        with requests.post(proc.url + "/generate_stream", json=body, stream=True, timeout=60) as response:
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    events.append(json.loads(line[len("data:"):]))

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    [grammar_pid] = grammar_pids(proc.engine_pid())  # started with the engine, before any grammar
    while not events:
        time.sleep(0.01)
    proc.process.send_signal(signal.SIGTERM)
    reader.join(60)
    assert proc.process.wait(60) == 0, proc.log()
    assert not pid_alive(grammar_pid)
    assert "error" not in events[-1]
    assert events[-1]["generated_text"] is not None


def test_engine_death_stops_the_server_with_nonzero_exit(tiny_model_dir, tmp_path):
    proc = start_server(tiny_model_dir, tmp_path)
    proc.wait_ready()
    [grammar_pid] = grammar_pids(proc.engine_pid())
    os.kill(proc.engine_pid(), signal.SIGKILL)
    assert proc.process.wait(30) != 0
    deadline = time.monotonic() + 10
    while pid_alive(grammar_pid):  # it dies with the engine
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(requests.ConnectionError):
        requests.get(proc.url + "/ping", timeout=5)


@pytest.mark.parametrize("env, variable", [
    ({"MAX_TOTAL_TOKENS": "many"}, "MAX_TOTAL_TOKENS"),
    ({"HF_MODEL_QUANTIZE": "gptq"}, "HF_MODEL_QUANTIZE"),
    ({"MAX_INPUT_TOKENS": "100", "MAX_TOTAL_TOKENS": "50"}, "MAX_INPUT_TOKENS"),
])
def test_bad_setting_stops_startup_with_one_line(tiny_model_dir, env, variable):
    result = subprocess.run([sys.executable, "-m", "serving", "serve"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "HF_MODEL_ID": str(tiny_model_dir), **env})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr
