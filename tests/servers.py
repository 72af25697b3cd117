"""Real server processes for integration tests: `python -m serving` on a free loopback port, stopped by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A running `python -m serving` on 127.0.0.1, with its log file."""

    process: subprocess.Popen
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def engine_pids(self) -> list[int]:
        """The launcher's engine processes (its children running `serving.engine.worker`), sorted."""
        found = subprocess.run(["pgrep", "-f", "-P", str(self.process.pid), "serving.engine.worker"],
                               capture_output=True, text=True).stdout.split()
        return sorted(int(pid) for pid in found)

    def engine_pid(self) -> int:
        """The one engine process's pid."""
        pids = self.engine_pids()
        assert len(pids) == 1, self.log()
        return pids[0]

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll /ping until 200, failing early if the process exits."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the launcher by pid, SIGKILL its process group if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def start_server(model_dir: Path, log_dir: Path, **env_overrides: str) -> ServerProcess:
    """Start `python -m serving` for `model_dir` on a free loopback port (not yet ready)."""
    port = free_port()
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("HF_", "SM_", "SAGEMAKER_", "MAX_", "PORT"))
    }
    env.update(
        HF_MODEL_ID=str(model_dir),
        HOSTNAME="127.0.0.1",
        PORT=str(port),
        TORCH_NUM_THREADS="1",
        SERVING_ENGINE_ADDRESS=f"ipc://{log_dir}/engine-{port}.sock",
        SHUTDOWN_GRACE_SECONDS="10",
        PYTHONUNBUFFERED="1",
    )
    env.update(env_overrides)
    log_path = log_dir / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving"], env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServerProcess(process=process, port=port, log_path=log_path, env=env)


@contextmanager
def running_server(model_dir: Path, log_dir: Path, **env_overrides: str) -> Iterator[ServerProcess]:
    """A started and ready `python -m serving` (see `start_server`), stopped by pid on leaving."""
    proc = start_server(model_dir, log_dir, **env_overrides)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@contextmanager
def template_server(tmp_path_factory: Any, name: str, template: Path, added_tokens: Any,
                    **env_overrides: str) -> Iterator[ServerProcess]:
    """A running server on a tiny model (2,048 positions) with `template` as its chat template and `added_tokens`
    (a family's markers) in its tokenizer, stopped by pid on leaving."""
    from serving.testing.tiny_model import TinyModelSpec, build_tiny_model

    spec = TinyModelSpec(max_position_embeddings=2048, added_tokens=added_tokens, chat_template=template.read_text())
    model = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{name}"), spec)
    with running_server(model, tmp_path_factory.mktemp(f"server-{name}"), MAX_TOTAL_TOKENS="2048",
                        **env_overrides) as proc:
        yield proc


def openai_client(server: ServerProcess) -> Any:
    """The openai SDK's client for `server`'s /v1 routes, without retries."""
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
