"""Resilience through HTTP: disconnects while queued or mid-stream free their slots at once; a stalled engine."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import threading
import time

import pytest
import requests

from servers import running_server, start_server

pytestmark = pytest.mark.integration


def gauges(url: str) -> dict[str, float]:
    """The engine gauges of /metrics: queue size and current batch size."""
    text = requests.get(url + "/metrics", timeout=10).text
    found = {}
    for name in ("tgi_queue_size", "tgi_batch_current_size"):
        match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE)
        assert match, name
        found[name] = float(match.group(1))
    return found


def wait_for(url: str, expected: dict[str, float], timeout: float) -> dict[str, float]:
    """Poll the gauges until they equal `expected` or `timeout` passes; the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        seen = gauges(url)
        if all(seen[k] == v for k, v in expected.items()) or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def send(url: str, path: str, body: dict) -> socket.socket:
    """POST `body` on a raw socket and return it without reading."""
    payload = json.dumps(body).encode()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


@pytest.fixture(scope="module")
def one_row_server(tiny_model_dir, tmp_path_factory):
    """A server that runs one sequence at a time, so the others queue."""
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("one-row"), MAX_BATCH_SIZE="1",
                        MAX_TOTAL_TOKENS="100000", MAX_INPUT_TOKENS="64") as proc:
        yield proc


def test_a_queued_request_whose_client_hangs_up_leaves_the_queue_at_once(one_row_server):
    url = one_row_server.url
    # runs until the test hangs up, however fast the engine (see ENDLESS_STREAM in test_lifecycle.py)
    running = send(url, "/v1/completions", {"prompt": "The", "max_tokens": 99000, "ignore_eos": True,
                                            "stream": True})
    try:
        assert wait_for(url, {"tgi_batch_current_size": 1}, 10)["tgi_batch_current_size"] == 1
        queued = [send(url, path, {"inputs": "Hello", "parameters": {"max_new_tokens": 5}})
                  for path in ("/generate_stream", "/generate")]
        assert wait_for(url, {"tgi_queue_size": 2}, 10)["tgi_queue_size"] == 2
        for sock in queued:
            sock.close()
        # the long stream is still running: the queued ones left because their clients went away
        assert wait_for(url, {"tgi_queue_size": 0}, 10) == {"tgi_queue_size": 0, "tgi_batch_current_size": 1}
    finally:
        running.close()
    assert wait_for(url, {"tgi_batch_current_size": 0}, 15)["tgi_batch_current_size"] == 0


def test_a_storm_of_cut_connections_leaks_no_sequence(server):
    url = server.url
    rng = random.Random(8)
    for _ in range(30):
        path = rng.choice(["/generate_stream", "/generate", "/v1/chat/completions"])
        tokens = rng.randint(5, 200)
        body = ({"messages": [{"role": "user", "content": "Say something"}], "max_tokens": tokens,
                 "stream": rng.random() < 0.5} if path.startswith("/v1")
                else {"inputs": "Once upon a time", "parameters": {"max_new_tokens": tokens}})
        sock = send(url, path, body)
        cut = rng.choice(["at once", "after headers", "mid-stream"])
        if cut != "at once":
            sock.settimeout(10)
            received = b""
            streaming = path == "/generate_stream" or body.get("stream")
            want = b"data:" if cut == "mid-stream" and streaming else b"\r\n\r\n"
            while want not in received and rng.random() < 0.98:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        sock.close()
    seen = wait_for(url, {"tgi_queue_size": 0, "tgi_batch_current_size": 0}, 15)
    assert seen == {"tgi_queue_size": 0, "tgi_batch_current_size": 0}
    assert requests.post(url + "/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 2}},
                         timeout=30).status_code == 200


def test_a_stalled_engine_is_killed_and_the_launcher_exits_non_zero(tiny_model_dir, tmp_path):
    proc = start_server(tiny_model_dir, tmp_path, ENGINE_STALL_TIMEOUT="2")
    try:
        proc.wait_ready()
        assert requests.get(proc.url + "/ping", timeout=5).status_code == 200
        engine = proc.engine_pid()
        time.sleep(3)  # idle for longer than the timeout: an idle engine is not stalled
        assert proc.process.poll() is None, proc.log()
        os.kill(engine, signal.SIGSTOP)  # alive but stuck
        assert proc.process.wait(30) == 1
        assert "the engine made no progress for 2 s" in proc.log()
        with pytest.raises(OSError):
            os.kill(engine, 0)  # killed and reaped
    finally:
        proc.stop()


@pytest.mark.parametrize("ending", ["deadline", "second signal"])
def test_sigterm_refuses_new_work_and_ends_the_rest_with_an_error_event(tiny_model_dir, tmp_path, ending):
    proc = start_server(tiny_model_dir, tmp_path, SHUTDOWN_GRACE_SECONDS="30" if ending == "second signal" else "3",
                        MAX_TOTAL_TOKENS="100000", MAX_INPUT_TOKENS="64")
    try:
        proc.wait_ready()
        # Long enough to outlast the 3 s deadline however fast the engine is (the tiny model decodes 8,000 tokens
        # in under 3 s on an idle machine), and with EOS ignored: the random model samples it now and then.
        stream = send(proc.url, "/v1/completions", {"prompt": "The", "max_tokens": 99000, "ignore_eos": True,
                                                    "stream": True})
        stream.settimeout(60)
        received = b""
        while b"data:" not in received:
            received += stream.recv(65536)
        proc.process.send_signal(signal.SIGTERM)
        time.sleep(1)
        refused = requests.post(proc.url + "/generate", json={"inputs": "hi"}, timeout=10)
        assert refused.status_code == 503
        assert refused.json() == {"error": "The server is shutting down and accepts no new requests",
                                  "error_type": "shutting_down"}
        assert requests.get(proc.url + "/ping", timeout=10).status_code == 503
        if ending == "second signal":
            proc.process.send_signal(signal.SIGTERM)
        while not received.endswith(b"\r\n0\r\n\r\n"):
            chunk = stream.recv(65536)
            if not chunk:
                break
            received += chunk
        events = [line[5:].strip() for line in received.decode().split("\n") if line.startswith("data:")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"] == {"message": "The server is shutting down", "type": "unavailable",
                                                   "param": None, "code": None}
        assert proc.process.wait(30) == 0
    finally:
        proc.stop()


def test_logs_have_one_line_per_request_and_no_secret(tiny_model_dir, tmp_path):
    token, key = "hf_dontLogThisToken123", "sk-dont-log-this-key"
    proc = start_server(tiny_model_dir, tmp_path, HF_TOKEN=token, API_KEY=key, LOG_LEVEL="debug")
    try:
        proc.wait_ready()
        bodies = []
        for headers in ({"Authorization": f"Bearer {key}", "X-Request-Id": "req-1"},
                        {"Authorization": f"Bearer {key}x{token}"}, {}):
            response = requests.post(proc.url + "/generate", headers=headers, timeout=30,
                                     json={"inputs": f"private prompt {token}", "parameters": {"max_new_tokens": 3}})
            bodies.append(response.text)
        bad = requests.post(proc.url + "/generate", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                            json={"inputs": token, "parameters": {"max_new_tokens": -1, "top_p": key}})
        bodies.append(bad.text)
        assert bad.status_code == 422
    finally:
        assert proc.stop() == 0
    log = proc.log()
    for body in bodies:
        assert key not in body
    assert token not in log and key not in log and "private prompt" not in log
    lines = [json.loads(line.split("serving.access: ", 1)[1]) for line in log.splitlines()
             if "serving.access: " in line and '"route": "/generate"' in line]
    assert [line["status"] for line in lines] == [200, 401, 401, 422]
    first = lines[0]
    assert first["request_id"] == "req-1" and first["generated_tokens"] == 3 and first["prompt_tokens"] > 0
    assert first["finish_reason"] == "length" and first["total_time"] >= first["inference_time"] > 0
    assert "scheduler: 1 running, 0 waiting" in log


def test_a_request_that_breaks_its_steps_fails_alone_with_424(tiny_model_dir, tmp_path):
    proc = start_server(tiny_model_dir, tmp_path, SERVING_FAULT_INJECTION="FAULT", MAX_TOTAL_TOKENS="256")
    try:
        proc.wait_ready()
        results: dict[str, requests.Response] = {}

        def post(name: str, path: str, prompt: str) -> None:
            results[name] = requests.post(proc.url + path, timeout=60, json={
                "inputs": prompt, "parameters": {"max_new_tokens": 40, "ignore_eos": True}})

        jobs = [("good-1", "/generate", "The model"), ("bad", "/generate", "a FAULT here"),
                ("good-2", "/generate", "Once upon"), ("bad-stream", "/generate_stream", "FAULT")]
        threads = [threading.Thread(target=post, args=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert results["bad"].status_code == 424
        assert results["bad"].json() == {"error": "Request failed during generation: injected fault",
                                         "error_type": "generation"}
        stream_events = [json.loads(line[5:]) for line in results["bad-stream"].text.splitlines()
                         if line.startswith("data:")]
        assert stream_events[-1] == {"error": "Request failed during generation: injected fault",
                                     "error_type": "generation"}
        for name in ("good-1", "good-2"):
            assert results[name].status_code == 200, results[name].text
            assert results[name].json()["generated_text"]
        assert wait_for(proc.url, {"tgi_queue_size": 0, "tgi_batch_current_size": 0}, 10) == {
            "tgi_queue_size": 0, "tgi_batch_current_size": 0}
        assert requests.get(proc.url + "/ping", timeout=10).status_code == 200
    finally:
        proc.stop()
