"""SAGEMAKER.md layer A: the server process started as the image starts it (`python -m serving serve`), on
SAGEMAKER_BIND_TO_PORT, with what the SDK injects; /ping only once ready, and fast under full load."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time

import pytest
import requests

from servers import REPO_ROOT, ServerProcess, free_port

pytestmark = pytest.mark.integration

SDK_ENV = {"SAGEMAKER_PROGRAM": "", "SAGEMAKER_SUBMIT_DIRECTORY": "", "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
           "SAGEMAKER_REGION": "us-east-1", "SM_NUM_GPUS": "1", "HF_MODEL_QUANTIZE": "false",
           "MESSAGES_API_ENABLED": "true", "HF_TASK": "text-generation"}


@pytest.fixture(scope="module")
def sagemaker_server(tiny_model_dir, tmp_path_factory):
    """`python -m serving serve` on SAGEMAKER_BIND_TO_PORT (PORT says otherwise), every /ping status recorded."""
    log_dir = tmp_path_factory.mktemp("sagemaker-server")
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("HF_", "SM_", "SAGEMAKER_", "MAX_", "PORT"))}
    env.update(SDK_ENV, HF_MODEL_ID=str(tiny_model_dir), SAGEMAKER_BIND_TO_PORT=str(port), PORT=str(free_port()),
               HOSTNAME="127.0.0.1", TORCH_NUM_THREADS="1", MAX_TOTAL_TOKENS="512", PYTHONUNBUFFERED="1",
               SERVING_ENGINE_ADDRESS=f"ipc://{log_dir}/engine.sock", SHUTDOWN_GRACE_SECONDS="5")
    log_path = log_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "serving", "serve"], env=env, cwd=REPO_ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    proc = ServerProcess(process=process, port=port, log_path=log_path, env=env)
    statuses = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status = requests.get(proc.url + "/ping", timeout=2).status_code
            except requests.ConnectionError:
                status = None
            statuses.append(status)
            if status == 200:
                break
            time.sleep(0.05)
        proc.statuses = statuses
        yield proc
    finally:
        proc.stop()


def test_ping_is_200_only_once_ready(sagemaker_server):
    statuses = sagemaker_server.statuses
    assert statuses[-1] == 200, sagemaker_server.log()
    assert statuses[0] is None, "nothing listens while the model loads"
    assert set(statuses[:-1]) <= {None, 503}
    assert "engine ready" in sagemaker_server.log()


def test_sdk_variables_are_named_in_the_log(sagemaker_server):
    assert ("ignored: MESSAGES_API_ENABLED, HF_TASK, SAGEMAKER_CONTAINER_LOG_LEVEL, SAGEMAKER_REGION"
            in sagemaker_server.log())


def test_ping_answers_fast_under_full_load(sagemaker_server):
    url = sagemaker_server.url

    def stream(index: int) -> int:
        body = {"inputs": f"The model {index}", "parameters": {"max_new_tokens": 400}}
        with requests.post(url + "/generate_stream", json=body, stream=True, timeout=300) as response:
            for _ in response.iter_lines():
                pass
            return response.status_code

    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        futures = [pool.submit(stream, index) for index in range(48)]
        latencies = []
        while not all(future.done() for future in futures):
            started = time.monotonic()
            assert requests.get(url + "/ping", timeout=2).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
        assert [future.result() for future in futures] == [200] * 48
    assert len(latencies) >= 5, "the load lasted long enough to measure"
    assert max(latencies) < 2.0, sorted(latencies)[-5:]  # SageMaker's limit; typical here: 20-250 ms
    print(f"\n/ping under load: {len(latencies)} pings, ms: {sorted(int(x * 1000) for x in latencies)}")
