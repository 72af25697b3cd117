"""Fuzzing the real server: hypothesis-made bodies and a corpus of hand-made nasties on every generation route.

Every answer must be a documented 2xx or 4xx (never a 5xx, never a hang), no stream may end in an internal error
event, and the server must still answer `/ping` afterwards. Bounded for CI: a few hundred requests on a server
whose generations are at most 64 tokens.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Iterator

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servers import ServerProcess, running_server

pytestmark = pytest.mark.integration

DOCUMENTED = {200, 400, 404, 405, 413, 415, 422, 429}
INTERNAL_EVENTS = (b'"error_type":"internal_error"', b'"error_type": "internal_error"')
ROUTES = ["/generate", "/generate_stream", "/", "/v1/chat/completions", "/v1/completions", "/invocations",
          "/tokenize", "/chat_tokenize", "/vertex"]
FUZZ_SETTINGS = settings(max_examples=40, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fuzz_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose generations stay short."""
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("fuzz"), MAX_TOTAL_TOKENS="64",
                        MAX_INPUT_TOKENS="48") as proc:
        yield proc


def check(server: ServerProcess, route: str, data: bytes,
          content_type: str | None = "application/json") -> requests.Response:
    """POST raw bytes; the answer must be documented, and a stream must not end in an internal error."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = requests.post(server.url + route, data=data, headers=headers, timeout=60)
    assert response.status_code in DOCUMENTED, (route, data[:300], response.status_code, response.text[:300])
    assert not any(marker in response.content for marker in INTERNAL_EVENTS), (route, data[:300], response.text)
    return response


scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
PARAMETERS = ["max_new_tokens", "temperature", "top_p", "top_k", "typical_p", "repetition_penalty",
              "frequency_penalty", "seed", "stop", "do_sample", "best_of", "details", "decoder_input_details",
              "return_full_text", "truncate", "top_n_tokens", "watermark", "grammar", "adapter_id"]
OPENAI_FIELDS = ["max_tokens", "temperature", "top_p", "n", "stop", "stream", "logprobs", "top_logprobs", "seed",
                 "presence_penalty", "frequency_penalty", "tools", "tool_choice", "response_format", "model",
                 "stream_options", "logit_bias", "suffix", "echo", "best_of"]
parameters = st.dictionaries(st.sampled_from(PARAMETERS), json_values | st.integers(-5, 80) | st.floats(-2, 3),
                             max_size=6)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "x"])
                                           | json_values,
                                           "content": st.text(max_size=30) | json_values}), max_size=3)
generate_bodies = st.fixed_dictionaries({}, optional={"inputs": st.text(max_size=40) | json_values,
                                                      "parameters": parameters | json_values,
                                                      "stream": st.booleans() | json_values})
chat_bodies = st.builds(lambda m, extra: {"messages": m, **extra}, messages | json_values,
                        st.dictionaries(st.sampled_from(OPENAI_FIELDS),
                                        json_values | st.integers(-3, 80) | st.floats(-3, 3), max_size=5))
completion_bodies = st.builds(lambda p, extra: {"prompt": p, **extra}, st.text(max_size=40) | json_values,
                              st.dictionaries(st.sampled_from(OPENAI_FIELDS),
                                              json_values | st.integers(-3, 80) | st.floats(-3, 3), max_size=5))


def encode(body: object) -> bytes:
    """JSON with NaN and Infinity written as Python writes them (not valid JSON: the server must say 4xx)."""
    return json.dumps(body, allow_nan=True).encode()


@FUZZ_SETTINGS
@given(route=st.sampled_from(["/generate", "/generate_stream", "/", "/invocations", "/tokenize"]),
       body=generate_bodies)
def test_generate_shaped_bodies(fuzz_server, route, body):
    check(fuzz_server, route, encode(body))


@FUZZ_SETTINGS
@given(route=st.sampled_from(["/v1/chat/completions", "/invocations", "/chat_tokenize"]), body=chat_bodies)
def test_chat_shaped_bodies(fuzz_server, route, body):
    check(fuzz_server, route, encode(body))


@FUZZ_SETTINGS
@given(route=st.sampled_from(["/v1/completions", "/invocations"]), body=completion_bodies)
def test_completion_shaped_bodies(fuzz_server, route, body):
    check(fuzz_server, route, encode(body))


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), data=st.binary(max_size=200))
def test_arbitrary_bytes(fuzz_server, route, data):
    check(fuzz_server, route, data)


BIG = 10**30
NASTIES: list[tuple[str, bytes]] = [
    ("/generate", b'{"inputs": 5}'),
    ("/generate", b'{"inputs": ["a", "b"]}'),
    ("/generate", b'{"inputs": "a", "parameters": []}'),
    ("/generate", b'{"inputs": "a", "parameters": {"max_new_tokens": "5"}}'),
    ("/generate", encode({"inputs": "a", "parameters": {"max_new_tokens": BIG}})),
    ("/generate", encode({"inputs": "a", "parameters": {"temperature": 1e308, "top_k": -BIG, "seed": 2**64}})),
    ("/generate", encode({"inputs": "a", "parameters": {"best_of": 10**9, "do_sample": True}})),
    ("/generate", encode({"inputs": "a", "parameters": {"truncate": -1, "top_n_tokens": BIG}})),
    ("/generate", b'{"inputs": "a", "parameters": {"temperature": NaN}}'),
    ("/generate", b'{"inputs": "a", "parameters": {"top_p": Infinity, "repetition_penalty": -Infinity}}'),
    ("/generate", encode({"inputs": "a", "parameters": {"temperature": 1e-320, "max_new_tokens": 3}})),
    ("/generate_stream", encode({"inputs": "a", "parameters": {"temperature": 1e-38, "max_new_tokens": 3}})),
    ("/generate", b"[" * 100_000 + b"]" * 100_000),
    ("/generate", b'{"inputs": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}"),
    ("/generate", b'{"inputs": "\xff\xfe\xc3\x28"}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}'),
    ("/generate", b'{"inputs": "' + b"a" * 10_000_000 + b'"}'),
    ("/invocations", b'{"inputs": "' + b"a " * 5_000_000 + b'"}'),
    ("/generate", b""),
    ("/generate", b"null"),
    ("/generate", b"[]"),
    ("/generate", b'"just a string"'),
    ("/generate", b'{"inputs": "a"'),
    ("/generate", encode({"inputs": ""})),
    ("/generate", encode({"inputs": "\x00\ud7ff\ufffe" * 10})),
    ("/v1/chat/completions", encode({"messages": []})),
    ("/v1/chat/completions", encode({"messages": [{"role": "wizard", "content": "hi"}]})),
    ("/v1/chat/completions", encode({"messages": [{"role": "user"}]})),
    ("/v1/chat/completions", encode({"messages": [{"role": "user", "content": None}]})),
    ("/v1/chat/completions", encode({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})),
    ("/v1/chat/completions", encode({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})),
    ("/v1/chat/completions", encode({"messages": [{"role": "user", "content": "hi"}], "n": 100})),
    ("/v1/chat/completions", encode({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 1000,
                                     "logprobs": True})),
    ("/v1/chat/completions", encode({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1})),
    ("/v1/chat/completions", encode({"messages": [{"role": "user", "content": "hi"}], "tools": "garbage",
                                     "tool_choice": {"x": 1}})),
    ("/v1/chat/completions", encode({"messages": [{"role": "user", "content": "hi"}], "stream": True,
                                     "stop": ["x"] * 1000})),
    ("/v1/chat/completions", encode({"messages": "hi"})),
    ("/v1/completions", encode({"prompt": ["a"] * 1000, "max_tokens": 2})),
    ("/v1/completions", encode({"prompt": "a", "stop": [str(i) for i in range(1000)]})),
    ("/generate", encode({"inputs": "a", "parameters": {"stop": [str(i) for i in range(1000)]}})),
    ("/generate_stream", encode({"inputs": "a", "parameters": {"stop": ["a" * 100_000]}})),
    ("/invocations", encode({"messages": [], "inputs": "a", "prompt": "b"})),
    ("/invocations", encode({})),
    ("/vertex", encode({"instances": [{"inputs": 5}] * 50})),
    ("/tokenize", encode({"inputs": "a" * 1_000_000})),
    ("/chat_tokenize", encode({"messages": [{"role": "user", "content": "hi"}] * 10_000})),
    # Lone surrogates (JSON's `\ud800` escapes), which no UTF-8 encoder takes: a 400, not a 500.
    *[(route, encode(body)) for route, body in [
        ("/generate", {"inputs": "a\ud800"}),
        ("/generate_stream", {"inputs": "a", "parameters": {"stop": ["\udfff"]}}),
        ("/", {"inputs": "\udc00 b"}),
        ("/tokenize", {"inputs": "\ud83d"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\ud800"}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]}),
        ("/v1/completions", {"prompt": ["ok", "\udbff"]}),
        ("/invocations", {"messages": [{"role": "\ud800", "content": "hi"}]}),
        ("/chat_tokenize", {"messages": [{"role": "user", "content": "\ud800"}]}),
        ("/vertex", {"instances": [{"inputs": "\ud800"}]}),
        ("/generate", {"inputs": "a", "\ud800": 1}),
    ]],
]


@pytest.mark.parametrize("route, data", NASTIES, ids=[f"{i}-{r}" for i, (r, _) in enumerate(NASTIES)])
def test_nasty_bodies(fuzz_server, route, data):
    check(fuzz_server, route, data)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json; charset=latin-1",
                                          "multipart/form-data"])
def test_odd_content_types(fuzz_server, content_type):
    check(fuzz_server, "/generate", encode({"inputs": "a", "parameters": {"max_new_tokens": 2}}), content_type)


def test_the_server_is_still_up_and_serving(fuzz_server):
    assert requests.get(fuzz_server.url + "/ping", timeout=10).status_code == 200
    response = requests.post(fuzz_server.url + "/generate", json={"inputs": "a", "parameters": {"max_new_tokens": 2}},
                             timeout=30)
    assert response.status_code == 200
    assert "Traceback" not in fuzz_server.log()


def exchange(server: ServerProcess, data: bytes) -> bytes:
    """Send raw bytes (the last request says `Connection: close`) and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def check_raw(server: ServerProcess, data: bytes) -> bytes:
    """A raw request's answer: an HTTP status below 500 and never an HTML page."""
    received = exchange(server, data)
    assert received.startswith(b"HTTP/1.1 "), (data[:200], received[:200])
    status = int(received.split(b" ", 2)[1])
    assert status < 500 and b"<html" not in received.lower(), (data[:200], received[:300])
    return received


HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
                      min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"]),
       path=st.sampled_from(ROUTES + ["/ping", "/v1//chat/completions", "/v1/models/", "//generate", "/%00"])
       | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30).map(lambda p: "/" + p),
       headers=st.lists(st.tuples(HEADER_TEXT.filter(lambda name: name.lower() not in (
           "content-length", "transfer-encoding", "connection", "expect", "host")),
           st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)), max_size=4),
       body=st.binary(max_size=100))
def test_raw_requests(fuzz_server, method, path, headers, body):
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers)
    check_raw(fuzz_server, (head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)


RAW_NASTIES = [
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /info HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
    b"GET /info HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET /info HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /info HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\n{}\r\n0\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
    b"Content-Length: 99000000\r\n\r\n",
    b"POST /v1//chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"GET /ping HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nConnection: close\r\n\r\n",
]


@pytest.mark.parametrize("data", RAW_NASTIES, ids=[f"raw-{i}" for i in range(len(RAW_NASTIES))])
def test_nasty_raw_requests(fuzz_server, data):
    check_raw(fuzz_server, data)
