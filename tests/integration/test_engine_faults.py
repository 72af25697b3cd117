"""An engine that dies or freezes reaches the streams at once; SIGTERM to the whole process group drains."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from servers import running_server, start_server

pytestmark = pytest.mark.integration

LONG = {"max_tokens": 99000, "ignore_eos": True}


class Stream:
    """A streaming request read in a thread; each SSE data line with the time it arrived."""

    def __init__(self, url: str, path: str, body: dict) -> None:
        self.events: list[tuple[float, str]] = []
        self.ended = threading.Event()
        self.response = requests.post(url + path, json=body, stream=True, timeout=60)
        assert self.response.status_code == 200
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines():
                if line.startswith(b"data:"):
                    self.events.append((time.monotonic(), line[5:].strip().decode()))
        except requests.RequestException:
            pass
        finally:
            self.ended.set()

    def wait_for_tokens(self, count: int) -> None:
        """Until `count` events came."""
        deadline = time.monotonic() + 60
        while len(self.events) < count:
            assert time.monotonic() < deadline and not self.ended.is_set(), self.events[-3:]
            time.sleep(0.02)


def openai_stream(url: str) -> Stream:
    """A long chat stream."""
    return Stream(url, "/v1/chat/completions",
                  {"messages": [{"role": "user", "content": "hi"}], "stream": True, **LONG})


def tgi_stream(url: str) -> Stream:
    """A long `/generate_stream`."""
    return Stream(url, "/generate_stream",
                  {"inputs": "The", "parameters": {"max_new_tokens": 99000, "ignore_eos": True}})


def both_streams_going(url: str) -> tuple[Stream, Stream]:
    """A TGI and an OpenAI stream, each with a few tokens received."""
    tgi, openai = tgi_stream(url), openai_stream(url)
    tgi.wait_for_tokens(5)
    openai.wait_for_tokens(5)
    return tgi, openai


def assert_ended_with_engine_error(tgi: Stream, openai: Stream, since: float, within: float) -> None:
    """Both streams ended with an `unavailable` error event (then `[DONE]` on the OpenAI route) in time."""
    for stream in (tgi, openai):
        assert stream.ended.wait(within + 10), "the stream did not end"
    when, last = tgi.events[-1]
    assert json.loads(last) == {"error": "The engine stopped", "error_type": "unavailable"}
    assert when - since < within, f"the error event came after {when - since:.1f} s"
    assert openai.events[-1][1] == "[DONE]"
    when, error = openai.events[-2]
    assert json.loads(error) == {"error": {"message": "The engine stopped", "type": "unavailable", "param": None,
                                           "code": None}, "error_type": "unavailable"}
    assert when - since < within
    print(f"error events {tgi.events[-1][0] - since:.2f} s and {openai.events[-2][0] - since:.2f} s after the fault")


def test_a_killed_engine_ends_every_stream_with_an_error_event_and_ping_turns_503(tiny_model_dir: Path,
                                                                                  tmp_path: Path):
    with running_server(tiny_model_dir, tmp_path, MAX_TOTAL_TOKENS="100000", MAX_INPUT_TOKENS="64") as proc:
        tgi, openai = both_streams_going(proc.url)
        killed = time.monotonic()
        os.kill(proc.engine_pid(), signal.SIGKILL)
        ping = None
        while time.monotonic() - killed < 5:
            try:
                ping = requests.get(proc.url + "/ping", timeout=2).status_code
            except requests.ConnectionError:
                break  # gunicorn is stopping already
            if ping == 503:
                break
            time.sleep(0.05)
        print(f"/ping answered {ping} {time.monotonic() - killed:.2f} s after the kill")
        assert ping in (503, None) and time.monotonic() - killed < 2
        assert_ended_with_engine_error(tgi, openai, killed, 3.0)
        assert proc.process.wait(30) == 1


def test_a_frozen_engine_is_a_dead_one_for_the_streams(tiny_model_dir: Path, tmp_path: Path):
    with running_server(tiny_model_dir, tmp_path, MAX_TOTAL_TOKENS="100000", MAX_INPUT_TOKENS="64",
                        ENGINE_STALL_TIMEOUT="2") as proc:
        tgi, openai = both_streams_going(proc.url)
        frozen = time.monotonic()
        os.kill(proc.engine_pid(), signal.SIGSTOP)
        assert_ended_with_engine_error(tgi, openai, frozen, 2 + 3.0)
        assert proc.process.wait(30) == 1
        assert "the engine made no progress for 2 s" in proc.log()


def test_sigterm_to_the_process_group_drains_like_sigterm_to_the_launcher(tiny_model_dir: Path, tmp_path: Path):
    proc = start_server(tiny_model_dir, tmp_path, MAX_TOTAL_TOKENS="1000", SHUTDOWN_GRACE_SECONDS="60")
    try:
        proc.wait_ready()
        stream = Stream(proc.url, "/v1/completions",
                        {"prompt": "The", "max_tokens": 600, "ignore_eos": True, "stream": True})
        stream.wait_for_tokens(3)
        os.killpg(proc.process.pid, signal.SIGTERM)  # the launcher started its own session: its group is its pid
        refused = None
        while not stream.ended.is_set():
            refused = requests.post(proc.url + "/generate", timeout=10,
                                    json={"inputs": "hi", "parameters": {"max_new_tokens": 1}})
            if refused.status_code == 503:
                break
            time.sleep(0.05)
        assert refused is not None and refused.json()["error_type"] == "shutting_down"
        assert stream.ended.wait(60)
        events = [event for _, event in stream.events]
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert "error" not in last and last["choices"][0]["finish_reason"] == "length", last
        assert len(events) == 600 + 1
        assert proc.process.wait(60) == 0
    finally:
        proc.stop()
