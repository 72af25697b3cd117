"""ENGINE_REPLICAS=2 through the real server: two engine processes share the requests, answer as one engine would,
and live and die with the launcher."""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from servers import ServerProcess, running_server

PROMPTS = ["the model of", "deep learning is", "a server that", "water and the sun"]


def requests_received(proc: ServerProcess) -> Counter[int]:
    """How many generation requests each engine process logged receiving (the server runs at LOG_LEVEL=debug)."""
    return Counter(int(pid) for pid in re.findall(r"\[engine (\d+)\] [\w.]+: request \S+ received",
                                                    proc.log()))


def completions(url: str) -> list[str]:
    """Greedy completions of PROMPTS, sent at once."""
    def one(prompt: str) -> str:
        response = requests.post(url + "/v1/completions", json={
            "prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": True}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["text"]

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        return list(pool.map(one, PROMPTS))


@pytest.fixture
def two_replicas(tiny_model_dir, tmp_path):
    with running_server(tiny_model_dir, tmp_path, ENGINE_REPLICAS="2", MAX_TOTAL_TOKENS="256",
                        MAX_CONCURRENT_REQUESTS="6", LOG_LEVEL="debug") as proc:
        yield proc


def test_two_replicas_share_the_requests_and_answer_as_one_engine(two_replicas, server):
    pids = two_replicas.engine_pids()
    assert len(pids) == 2, two_replicas.log()
    assert requests_received(two_replicas) == Counter()
    assert completions(two_replicas.url) == completions(server.url)
    received = requests_received(two_replicas)
    assert sorted(received) == pids and sum(received.values()) == len(PROMPTS), received  # both engines served
    info = requests.get(two_replicas.url + "/info", timeout=10).json()
    assert info["max_concurrent_requests"] == 6  # 3 per replica
    metrics = requests.get(two_replicas.url + "/metrics", timeout=10).text
    assert "tgi_queue_size 0" in metrics and "tgi_batch_current_size 0" in metrics


def test_sigterm_stops_every_replica(two_replicas):
    pids = two_replicas.engine_pids()
    assert two_replicas.stop() == 0, two_replicas.log()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_one_replica_dying_stops_the_server_with_nonzero_exit(two_replicas):
    pids = two_replicas.engine_pids()
    os.kill(pids[1], signal.SIGKILL)
    assert two_replicas.process.wait(30) != 0
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(two_replicas.url + "/ping", timeout=5)
