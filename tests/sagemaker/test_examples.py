"""The scripts in sagemaker_examples/, run unchanged as a user runs them: local mode over the stand-in docker, and
predict/stream against the local runtime stand-in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from sagemaker_helpers import RuntimeProcess
from servers import REPO_ROOT, free_port

pytestmark = pytest.mark.integration

EXAMPLES = REPO_ROOT / "sagemaker_examples"
STANDIN_BIN = REPO_ROOT / "tests" / "sagemaker" / "bin"


def run_example(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180):
    """Run an example script to completion; returns the completed process (output captured)."""
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=EXAMPLES, capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def standin_env(tmp_path):
    """The stand-in docker first on PATH, the server tuned for tests."""
    return {"PATH": f"{STANDIN_BIN}{os.pathsep}{os.environ['PATH']}", "STANDIN_DOCKER_PYTHON": sys.executable,
            "STANDIN_DOCKER_STATE_DIR": str(tmp_path / "state"), "TORCH_NUM_THREADS": "1",
            "SHUTDOWN_GRACE_SECONDS": "3"}


def test_local_mode_py(standin_env, tiny_model_dir):
    result = run_example("local_mode.py", "--image-uri", "serving:cpu", "--model-dir", str(tiny_model_dir),
                         "--port", str(free_port()), env=standin_env)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert any(line.startswith("What is deep learning?") for line in lines), result.stdout[-2000:]


def test_deploy_py_local_then_predict_messages_py(standin_env, tiny_model_dir, tmp_path):
    port = free_port()
    log = open(tmp_path / "deploy.log", "w+")
    deploy = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "deploy.py"), "--image-uri", "serving:cpu", "--instance-type", "local",
         "--model-data", f"file://{tiny_model_dir}", "--port", str(port)],
        cwd=EXAMPLES, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **standin_env},
        # Ctrl-C must reach it even when the suite runs in the background, where the shell ignores SIGINT and
        # children inherit that (Python then never raises KeyboardInterrupt)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 150
        while "is in service" not in (tmp_path / "deploy.log").read_text():
            assert deploy.poll() is None and time.monotonic() < deadline, (tmp_path / "deploy.log").read_text()
            time.sleep(0.5)
        result = run_example("predict_messages.py", "--endpoint-name", "any", "--local", "--port", str(port),
                             "--max-tokens", "8")
        assert '"completion_tokens"' in result.stdout
    finally:
        deploy.send_signal(signal.SIGINT)
        try:
            deploy.wait(60)
        except subprocess.TimeoutExpired:
            deploy.kill()
            deploy.wait()
        log.close()
    assert deploy.returncode == 0, (tmp_path / "deploy.log").read_text()[-3000:]


def test_stream_py_and_predict_messages_py_through_the_local_runtime(server, tmp_path):
    runtime = RuntimeProcess(server.url, tmp_path)
    try:
        env = {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime.url}
        streamed = run_example("stream.py", "--endpoint-name", "my-llm", "--max-tokens", "8", env=env)
        assert "boto3 invoke_endpoint_with_response_stream:" in streamed.stderr
        assert "predictor.predict_stream:" in streamed.stderr
        assert len([line for line in streamed.stdout.splitlines() if line.strip()]) >= 1
        answered = run_example("predict_messages.py", "--endpoint-name", "my-llm", "--max-tokens", "4", env=env)
        assert '"completion_tokens": ' in answered.stdout
    finally:
        runtime.stop()


def test_adapters_py_registers_and_invokes_an_adapter_component(server, tiny_model_dir, tmp_path):
    from serving.testing.tiny_adapter import build_tiny_adapter

    adapter_dir = build_tiny_adapter(tiny_model_dir, tmp_path / "sql")
    runtime = RuntimeProcess(server.url, tmp_path, "--adapter-component", "my-llm-sql=sql")
    try:
        registered = run_example("adapters.py", "register", "--container", server.url, "--adapter",
                                 f"sql={adapter_dir}")
        assert registered.stdout.strip() == "Adapter sql registered"
        env = {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime.url}
        for client in ((), ("--sdk",)):
            answered = run_example("adapters.py", "invoke", "--endpoint-name", "my-llm", "--component",
                                   "my-llm-sql", "--max-tokens", "4", *client, env=env)
            assert '"completion_tokens": ' in answered.stdout
        metrics = requests.get(server.url + "/metrics", timeout=10).text
        assert 'serving_adapter_requests{adapter="sql"} 2' in metrics
    finally:
        runtime.stop()
        requests.delete(server.url + "/adapters/sql", timeout=60)
