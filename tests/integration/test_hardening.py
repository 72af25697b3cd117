"""A hostile caller against a real server: connection floods, half-sent and oversized bodies, malformed requests.

Everything stays on 127.0.0.1, every socket is closed, and the server is stopped by pid.
"""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from servers import ServerProcess, running_server, start_server

pytestmark = pytest.mark.integration

FLOOD = 1100  # more than gunicorn's default worker_connections (1,000), which used to take /ping down
READ_TIMEOUT = 10


@pytest.fixture(scope="module")
def hardened(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a short body deadline and an API key."""
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("hardened"), MAX_TOTAL_TOKENS="256",
                        REQUEST_READ_TIMEOUT=str(READ_TIMEOUT), API_KEY="the-key") as proc:
        yield proc


def connect(server: ServerProcess) -> socket.socket:
    """A raw connection to the server."""
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def exchange(server: ServerProcess, data: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with connect(server) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response with a Content-Length."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body[:int(headers["content-length"])]


def test_a_flood_of_half_sent_requests_leaves_ping_answering_and_ends_in_408(hardened):
    head = (b"POST /chat_tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer the-key\r\nContent-Length: 1000\r\n\r\n{\"messages\": [")
    flood: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            sock = connect(hardened)
            sock.sendall(head)
            flood.append(sock)
        started = time.monotonic()
        slowest = 0.0
        for _ in range(5):
            began = time.monotonic()
            assert requests.get(hardened.url + "/ping", timeout=2).status_code == 200
            slowest = max(slowest, time.monotonic() - began)
        poller = select.poll()
        for sock in flood:
            poller.register(sock, select.POLLIN)
        held = FLOOD - len(poller.poll(0))
        assert held == FLOOD, f"{FLOOD - held} half-sent requests were answered before the pings were done"
        print(f"{FLOOD} half-sent requests held; slowest /ping {slowest:.3f} s")
        assert time.monotonic() - started < READ_TIMEOUT
        # Each gets 408 once its body deadline passes, and its connection is closed.
        for sock in flood[:: FLOOD // 10]:
            sock.settimeout(READ_TIMEOUT + 30)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            status, headers, body = parse(received)
            assert status == 408 and headers["connection"] == "close", received
            assert body == b"Failed to buffer the request body: timed out"
    finally:
        for sock in flood:
            sock.close()
    assert requests.get(hardened.url + "/ping", timeout=2).status_code == 200


@pytest.mark.parametrize("expect", [False, True])
def test_a_body_over_the_payload_limit_is_a_413_the_client_reads(hardened, expect):
    if not expect:  # a 7 MB body sent whole, as requests sends it
        response = requests.post(hardened.url + "/generate", data=b'{"inputs": "' + b"a" * 7_000_000 + b'"}',
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer the-key"},
                                 timeout=60)
        assert response.status_code == 413
        assert response.text == "Failed to buffer the request body: length limit exceeded"
        return
    # `Expect: 100-continue` with a 99 MB length: the 413 comes first, never "100 Continue".
    received = exchange(hardened, b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  b"Authorization: Bearer the-key\r\nExpect: 100-continue\r\n"
                                  b"Content-Length: 99000000\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert parse(received)[1]["connection"] == "close"


@pytest.mark.parametrize("request_bytes, status, error_type", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET /info HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431, "request_header_fields_too_large"),
    (b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request"),
    (b"GET /info HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "bad_request"),
])
def test_errors_raised_before_a_route_runs_are_json(hardened, request_bytes, status, error_type):
    code, headers, body = parse(exchange(hardened, request_bytes))
    assert (code, headers["content-type"]) == (status, "application/json")
    answer = json.loads(body)
    assert answer["error_type"] == error_type and answer["error"].startswith("Bad request: ")


def test_a_malformed_header_under_v1_is_an_openai_error(hardened):
    code, _, body = parse(exchange(hardened, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                             b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"))
    assert code == 400
    assert json.loads(body)["error"]["type"] == "bad_request"


def test_a_malformed_chunked_body_is_a_400_not_a_500(hardened):
    code, headers, body = parse(exchange(hardened, b"POST /tokenize HTTP/1.1\r\nHost: x\r\n"
                                         b"Content-Type: application/json\r\nAuthorization: Bearer the-key\r\n"
                                         b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"))
    assert (code, headers["connection"]) == (400, "close")
    assert body.startswith(b"Failed to buffer the request body: ")


def test_doubled_slashes_are_not_redirected_past_the_key_check(hardened):
    response = requests.post(hardened.url + "/v1//chat/completions", allow_redirects=False, timeout=10,
                             json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404


def test_past_max_connections_the_reserved_ones_serve_only_health_checks(tiny_model_dir, tmp_path):
    proc = start_server(tiny_model_dir, tmp_path, MAX_TOTAL_TOKENS="256", MAX_CONNECTIONS="200",
                        REQUEST_READ_TIMEOUT="60")
    flood: list[socket.socket] = []
    try:
        proc.wait_ready()
        head = (b"POST /chat_tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{\"messages\": [")
        for _ in range(250):  # every regular connection, and some of the reserved ones, held
            sock = connect(proc)
            sock.sendall(head)
            flood.append(sock)
        slowest = 0.0
        for _ in range(5):
            began = time.monotonic()
            assert requests.get(proc.url + "/ping", timeout=2).status_code == 200
            slowest = max(slowest, time.monotonic() - began)
        print(f"250 half-sent requests on 200 connections: slowest /ping {slowest:.3f} s")
        code, headers, body = parse(exchange(proc, b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert (code, headers["connection"]) == (503, "close")
        assert json.loads(body)["error_type"] == "too_many_connections"
    finally:
        for sock in flood:
            sock.close()
        proc.stop()
    assert proc.process.returncode == 0
