"""Layer D: the image itself on a real docker engine, started the way SageMaker starts it (`docker run IMAGE serve`).

The image is $SERVING_IMAGE, else serving:cpu; `bash scripts/build_image.sh cpu` builds it and runs this file.
Everything skips, with the reason, when no docker engine answers or the image is not there. Containers use the
host network and listen on 127.0.0.1 only; each is removed by its id.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGE = os.environ.get("SERVING_IMAGE", "serving:cpu")
SDK_ENV = {"SAGEMAKER_PROGRAM": "", "SAGEMAKER_SUBMIT_DIRECTORY": "", "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
           "SAGEMAKER_REGION": "us-east-1", "MESSAGES_API_ENABLED": "true", "HF_TASK": "text-generation"}


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """Run a docker command and capture its output."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


def docker_skip_reason() -> str | None:
    """Why the image cannot be tested here, or None."""
    if shutil.which("docker") is None:
        return "no docker executable on PATH"
    try:
        if docker("info", timeout=20, check=False).returncode != 0:
            return "no docker engine answers (docker info failed)"
    except subprocess.TimeoutExpired:
        return "no docker engine answers (docker info timed out)"
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        return f"image {IMAGE} not found: build it with `bash scripts/build_image.sh cpu` or set SERVING_IMAGE"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    """The image under test, or a skip."""
    reason = docker_skip_reason()
    if reason:
        pytest.skip(reason)
    return IMAGE


class Container:
    """A detached container on the host network, listening on 127.0.0.1:port."""

    def __init__(self, image: str, port: int, env: dict[str, str], volumes: dict[Path, str] | None = None,
                 args: tuple[str, ...] = ("serve",)) -> None:
        command = ["run", "-d", "--network", "host"]
        for name, value in {"HOSTNAME": "127.0.0.1", "SAGEMAKER_BIND_TO_PORT": str(port), **env}.items():
            command += ["-e", f"{name}={value}"]
        for host, inside in (volumes or {}).items():
            command += ["-v", f"{host}:{inside}:ro"]
        self.id = docker(*command, image, *args).stdout.strip()
        self.url = f"http://127.0.0.1:{port}"

    def logs(self) -> str:
        """Everything the container wrote."""
        result = docker("logs", self.id, check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        """Whether the container is still running."""
        return docker("inspect", "-f", "{{.State.Running}}", self.id, check=False).stdout.strip() == "true"

    def wait_ready(self, timeout: float = 240.0) -> float:
        """Poll /ping like SageMaker (2 s timeout) until 200; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.running():
                raise AssertionError(f"the container exited:\n{self.logs()}")
            try:
                if requests.get(self.url + "/ping", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError(f"/ping not 200 after {timeout} s:\n{self.logs()}")

    def stop(self, timeout: int = 30) -> int:
        """`docker stop` (SIGTERM, then SIGKILL after `timeout`); returns the exit code."""
        docker("stop", "-t", str(timeout), self.id, timeout=timeout + 30, check=False)
        return int(docker("inspect", "-f", "{{.State.ExitCode}}", self.id).stdout.strip())

    def remove(self) -> None:
        """Remove the container by id."""
        docker("rm", "-f", self.id, check=False)


@pytest.fixture(scope="module")
def container(image: str, tiny_model_dir: Path) -> Iterator[Container]:
    """The image serving the tiny model mounted at /opt/ml/model, with no HF_MODEL_ID, as SageMaker runs it."""
    box = Container(image, free_port(), {**SDK_ENV, "MAX_TOTAL_TOKENS": "256"}, {tiny_model_dir: "/opt/ml/model"})
    try:
        seconds = box.wait_ready()
        print(f"\n{image}: /ping 200 after {seconds:.1f} s")
        yield box
    finally:
        box.remove()


def test_image_metadata(image):
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert config["Entrypoint"] == ["/opt/venv/bin/python", "-m", "serving"], "exec form"
    assert config["Cmd"] == ["serve"]
    tools = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                   "for t in gcc cc make g++ pip apt-get; do command -v $t; done; "
                   "ls /root/.cache /var/lib/apt/lists 2>/dev/null | grep -v '^/' | grep -v '^$' || true",
                   check=False).stdout.split()
    assert [tool for tool in tools if not tool.endswith("apt-get")] == [], "no build tools, pip or caches"


def test_the_cpu_image_carries_its_decode_kernel_prebuilt(image):
    """The CPU variant loads its decode kernel from the image (no compiler there, nothing built at start)."""
    labels = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]["Labels"]
    if labels.get("serving.variant") != "cpu":
        pytest.skip("a GPU image attends on the GPU")
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "/opt/venv/bin/python", image, "-c",
                 "from serving.engine.cpu_kernels import library_path, load; print(library_path().exists(), load())")
    assert out.stdout.split() == ["True", "None"], out.stdout + out.stderr


def test_ping_and_info(container):
    ping = requests.get(container.url + "/ping", timeout=2)
    assert (ping.status_code, ping.content) == (200, b"")
    info = requests.get(container.url + "/info", timeout=10).json()
    assert info["model_id"] == "/opt/ml/model"
    assert info["max_total_tokens"] == 256
    assert (info["model_device_type"], info["device_map"]) == ("cpu", {"": "cpu"})
    logs = container.logs()
    assert "model /opt/ml/model (from /opt/ml/model)" in logs
    assert "ignored: MESSAGES_API_ENABLED, HF_TASK" in logs


def test_invocations_inputs_messages_prompt(container):
    url = container.url + "/invocations"
    generated = requests.post(url, json={"inputs": "What is deep learning?",
                                         "parameters": {"max_new_tokens": 5}}, timeout=60)
    assert generated.status_code == 200, generated.text
    assert generated.json()[0]["generated_text"].startswith("What is deep learning?")
    chat = requests.post(url, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
                         headers={"X-Amzn-SageMaker-Custom-Attributes": "x=1", "X-Unknown": "ignored"}, timeout=60)
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["role"] == "assistant"
    completion = requests.post(url, json={"prompt": "The", "max_tokens": 3}, timeout=60)
    assert completion.json()["object"] == "text_completion"
    invalid = requests.post(url, json={"inputs": "hi", "parameters": {"top_p": 7}}, timeout=60)
    assert invalid.status_code == 422 and invalid.json()["error_type"] == "validation"


def test_invocations_stream(container):
    response = requests.post(container.url + "/invocations", stream=True, timeout=60, json={
        "inputs": "What is deep learning?", "parameters": {"max_new_tokens": 8}, "stream": True})
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers.get("Transfer-Encoding") == "chunked"
    events = [json.loads(line[len(b"data:"):]) for line in response.iter_lines() if line.startswith(b"data:")]
    assert [event["index"] for event in events] == list(range(1, 9))
    assert events[-1]["generated_text"] is not None


def test_ping_stays_fast_under_load(container):
    import concurrent.futures

    def stream(index: int) -> int:
        body = {"inputs": f"The model {index}", "parameters": {"max_new_tokens": 240}}
        with requests.post(container.url + "/generate_stream", json=body, stream=True, timeout=300) as response:
            for _ in response.iter_lines():
                pass
            return response.status_code

    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        futures = [pool.submit(stream, index) for index in range(48)]
        latencies = []
        while not all(future.done() for future in futures):
            started = time.monotonic()
            assert requests.get(container.url + "/ping", timeout=2).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
        assert [future.result() for future in futures] == [200] * 48
    assert len(latencies) >= 3 and max(latencies) < 2.0, latencies  # SageMaker's limit
    print(f"\n/ping under load: {len(latencies)} pings, max {max(latencies) * 1000:.0f} ms")


def test_sigterm_stops_the_container_with_0(image, tiny_model_dir):
    box = Container(image, free_port(), {"HF_MODEL_ID": "/opt/ml/model"}, {tiny_model_dir: "/opt/ml/model"})
    try:
        box.wait_ready()
        started = time.monotonic()
        assert box.stop() == 0
        assert time.monotonic() - started < 25
    finally:
        box.remove()


def test_a_bad_setting_stops_start_up_with_one_line(image):
    result = docker("run", "--rm", "--network", "none", "-e", "HF_MODEL_QUANTIZE=gptq", image, "serve",
                    check=False)
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == ["serving: configuration error: HF_MODEL_QUANTIZE='gptq' is not supported: "
                     "HF_MODEL_QUANTIZE accepts nothing yet (leave it unset)"]


def test_nothing_configured_serves_the_embedded_default_model(image):
    has_default = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c",
                         "from serving.config import DEFAULT_MODEL_DIR as d; print((d / 'config.json').is_file())",
                         check=False).stdout.strip()
    if has_default != "True":
        pytest.skip("this image carries no embedded default model")
    box = Container(image, free_port(), {}, args=())
    try:
        box.wait_ready()
        assert "serving the embedded default model" in box.logs()
        reply = requests.post(box.url + "/invocations", timeout=60, json={
            "messages": [{"role": "user", "content": "What is deep learning?"}], "max_tokens": 10})
        assert reply.status_code == 200, reply.text
    finally:
        box.remove()


def test_sdk_local_mode_deploys_and_predicts_with_the_image(image, tiny_model_dir, tmp_path, monkeypatch):
    """Layer B on the real engine: the SDK's local mode runs the image (through the stand-in's compose, which
    starts it with the real docker on the host network: this engine has no compose plugin or bridge network)."""
    pytest.importorskip("sagemaker", reason="the SageMaker SDK v2 is not installed")
    import boto3

    repo = Path(__file__).resolve().parent.parent.parent
    config = tmp_path / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    real_docker = shutil.which("docker")
    for name, value in {
        "PATH": f"{repo / 'tests' / 'sagemaker' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "STANDIN_DOCKER_REAL": real_docker, "STANDIN_DOCKER_PYTHON": sys.executable,
        "STANDIN_DOCKER_STATE_DIR": str(tmp_path / "state"), "SHUTDOWN_GRACE_SECONDS": "3",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true", "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
    }.items():
        monkeypatch.setenv(name, value)
    from sagemaker.huggingface import HuggingFaceModel
    from sagemaker.local import LocalSession

    port = free_port()
    session = LocalSession(boto_session=boto3.Session(region_name="us-east-1"))
    session.config = {"local": {"local_code": True, "serving_port": port, "container_root": str(tmp_path)}}
    model = HuggingFaceModel(image_uri=image, env={"HF_MODEL_ID": "/opt/ml/model", "SM_NUM_GPUS": json.dumps(1)},
                             role="arn:aws:iam::111111111111:role/dummy", model_data=f"file://{tiny_model_dir}",
                             code_location="s3://unused-bucket/code", sagemaker_session=session)
    predictor = model.deploy(initial_instance_count=1, instance_type="local", wait=False)
    try:
        reply = predictor.predict({"messages": [{"role": "user", "content": "What is deep learning?"}],
                                   "max_tokens": 8})
        assert reply["choices"][0]["message"]["role"] == "assistant"
        info = requests.get(f"http://127.0.0.1:{port}/info", timeout=10).json()
        assert info["model_id"] == "/opt/ml/model"
    finally:
        predictor.delete_endpoint()
        for name_file in (tmp_path / "state").glob("*.container"):
            docker("rm", "-f", name_file.read_text(), check=False)
