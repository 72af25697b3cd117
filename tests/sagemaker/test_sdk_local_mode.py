"""Layer B: a user's SDK code from the Hugging Face docs, only `image_uri` changed, in the SDK's local mode.

`HuggingFaceModel(...).deploy(instance_type="local")` drives `docker compose`; here a stand-in `docker` on PATH runs
the compose service as a host process (tests/sagemaker/standin_docker.py), so no docker engine is needed. With a
real engine and a built image, the same code runs the image (see sagemaker_examples/local_mode.py).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import requests

from servers import free_port

pytestmark = pytest.mark.integration

STANDIN_BIN = Path(__file__).resolve().parent / "bin"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/serving:local-test"


def wait_gone(pid: int, timeout: float = 30.0) -> bool:
    """Whether process `pid` exited within `timeout` (it is not our child, so poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def standin_docker(monkeypatch, tmp_path):
    """The stand-in first on PATH; yields the directory where it records the server's pid."""
    state = tmp_path / "standin-state"
    monkeypatch.setenv("PATH", f"{STANDIN_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_DOCKER_PYTHON", sys.executable)
    monkeypatch.setenv("STANDIN_DOCKER_STATE_DIR", str(state))
    monkeypatch.setenv("TORCH_NUM_THREADS", "1")
    # delete_endpoint waits for the server to exit, and the SDK's pooled keep-alive connection holds gunicorn's
    # graceful shutdown for the whole grace period (30 s by default).
    monkeypatch.setenv("SHUTDOWN_GRACE_SECONDS", "3")
    yield state
    for pid_file in state.glob("*.pid"):
        pid = int(pid_file.read_text())
        if not wait_gone(pid, 0.1):
            os.kill(pid, signal.SIGTERM)
            if not wait_gone(pid, 20):
                os.killpg(pid, signal.SIGKILL)


def test_deploy_local_and_predict_messages(standin_docker, tiny_model_dir, tmp_path):
    import boto3
    from sagemaker.huggingface import HuggingFaceModel
    from sagemaker.local import LocalSession

    port = free_port()
    session = LocalSession(boto_session=boto3.Session(region_name="us-east-1"))
    session.config = {"local": {"local_code": True, "serving_port": port, "container_root": str(tmp_path)}}
    # The Hugging Face docs' deploy code, with our image and a local model instead of the hub.
    model = HuggingFaceModel(
        image_uri=IMAGE,
        env={"HF_MODEL_ID": "/opt/ml/model", "SM_NUM_GPUS": json.dumps(1), "MAX_TOTAL_TOKENS": json.dumps(256),
             "MESSAGES_API_ENABLED": "true", "HF_TASK": "text-generation"},
        role="arn:aws:iam::111111111111:role/dummy",
        model_data=f"file://{tiny_model_dir}",
        code_location="s3://unused-bucket/code",
        sagemaker_session=session,
    )
    started = time.monotonic()
    predictor = model.deploy(initial_instance_count=1, instance_type="local", wait=False)
    try:
        assert time.monotonic() - started < 120
        (pid_file,) = standin_docker.glob("*.pid")
        reply = predictor.predict({"messages": [{"role": "user", "content": "What is deep learning?"}],
                                   "max_tokens": 8})
        assert reply["object"] == "chat.completion"
        assert reply["choices"][0]["message"]["role"] == "assistant"
        assert reply["usage"]["completion_tokens"] <= 8
        generated = predictor.predict({"inputs": "What is deep learning?", "parameters": {"max_new_tokens": 4}})
        assert generated[0]["generated_text"].startswith("What is deep learning?")
        info = requests.get(f"http://127.0.0.1:{port}/info", timeout=10).json()
        assert info["model_id"] == str(tiny_model_dir), "HF_MODEL_ID=/opt/ml/model is the mounted model_data"
        assert info["max_total_tokens"] == 256
    finally:
        predictor.delete_endpoint()
    assert wait_gone(int(pid_file.read_text())), "delete_endpoint stops the server"
