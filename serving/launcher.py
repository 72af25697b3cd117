"""`python -m serving`: read the configuration once, start the engine, wait for it, start gunicorn, supervise.

The engine runs in its own process (`serving.engine.worker`), started with a fresh interpreter rather than a
fork so that no HTTP worker ever inherits CUDA state; with ENGINE_REPLICAS=N there are N such processes, each with
its own copy of the model, its own socket and heartbeat file and its share of the cores, and the HTTP workers
spread the requests over them. gunicorn's gevent workers start only once every engine answers a health call, so
SageMaker's `/ping` is refused until the model is loaded and warmed up.
If any child dies the others are stopped and the launcher exits non-zero; so does an engine whose loop has not
turned (its heartbeat file untouched) for ENGINE_STALL_TIMEOUT seconds, which the launcher then kills, so that
SageMaker replaces the instance. An engine that died or froze is announced to the HTTP workers first (the
engine-down file): within a moment every stream in flight ends with an error event and `/ping` answers 503, and
only then is gunicorn stopped.
The children run in process groups of their own and die with the launcher (PR_SET_PDEATHSIG): a SIGTERM sent to
the launcher's whole group (systemd, `kill -- -PGID`, an init that forwards to the group) reaches only the
launcher, and the engine and the HTTP workers follow its shutdown instead of their own copy of the signal.
SIGTERM drains: the launcher creates the drain file, on which the HTTP workers answer every new request 503
(`shutting_down`), waits until the engine has nothing queued or running (at most SHUTDOWN_GRACE_SECONDS, or until
a second SIGTERM), then stops the engine, which ends whatever is left with an error event, and gunicorn, and
exits 0.
The HTTP workers record Prometheus metrics in prometheus_client's multiprocess mode, in a fresh directory
(`PROMETHEUS_MULTIPROC_DIR`) that the launcher creates for them and removes when it exits.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from types import FrameType
from typing import Sequence

import msgspec
import zmq

from serving.config import Config, ConfigError, for_replica, from_env
from serving.lifeline import die_with_parent
from serving.logs import setup_logging
from serving.messages import HealthRequest, HealthResult, decode_event_batch, encode

logger = logging.getLogger("serving.launcher")

SUPERVISE_INTERVAL = 0.2
ENGINE_STOP_TIMEOUT = 15.0
ENGINE_DOWN_NOTICE = 1.0  # seconds the HTTP workers get to end their streams after an engine died, before they stop
SAGEMAKER_ARGUMENTS = ("serve",)


def start_child(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A child process in a process group of its own, which dies with the launcher."""
    return subprocess.Popen(command, env=env, process_group=0, preexec_fn=die_with_parent)


def engine_health(address: str, timeout: float = 1.0) -> HealthResult | None:
    """Ask the engine for its health over a short-lived socket; None when it does not answer."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send(encode(HealthRequest(call_id=uuid.uuid4().hex)))
        if not sock.poll(int(timeout * 1000)):
            return None
        batch = decode_event_batch(sock.recv())
    except (zmq.ZMQError, msgspec.DecodeError):
        return None
    finally:
        sock.close()
    return next((event for event in batch.events if isinstance(event, HealthResult)), None)


def engine_is_ready(address: str, timeout: float = 1.0) -> bool:
    """Whether the engine answers its health call as healthy."""
    result = engine_health(address, timeout)
    return result is not None and result.healthy


def stop_process(process: subprocess.Popen, timeout: float, name: str) -> int:
    """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0f s, killing it", name, timeout)
            process.kill()
    return process.wait()


def gunicorn_command(config: Config) -> list[str]:
    """gunicorn with gevent workers serving the Flask app factory."""
    server = config.server
    return [
        sys.executable, "-m", "gunicorn",
        "--worker-class", "serving.api.http_worker.HttpWorker",
        "--workers", str(server.workers),
        "--worker-connections", str(server.max_connections),
        "--bind", f"{server.host}:{server.port}",
        "--graceful-timeout", str(int(server.shutdown_grace_seconds)),
        "--keep-alive", "75",
        "--log-level", server.log_level,
        "--error-logfile", "-",
        "serving.api.wsgi:app_from_env()",
    ]


def raise_open_file_limit(config: Config) -> None:
    """Let every HTTP worker hold its MAX_CONNECTIONS sockets: the soft limit of open files, up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = config.server.max_connections * config.server.workers + 1024
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class Launcher:
    """Starts and supervises the engine and gunicorn."""

    def __init__(self, config: Config, metrics_dir: str) -> None:
        self.config = config
        self.heartbeat = f"{metrics_dir}.heartbeat"
        self.drain_file = f"{metrics_dir}.draining"
        self.down_file = f"{metrics_dir}.engine-down"
        self.heartbeats = [for_replica(self.heartbeat, r) for r in range(config.server.engine_replicas)]
        self.env = dict(os.environ, SERVING_ENGINE_ADDRESS=config.server.engine_address,
                        PROMETHEUS_MULTIPROC_DIR=metrics_dir, SERVING_ENGINE_HEARTBEAT=self.heartbeat,
                        SERVING_DRAIN_FILE=self.drain_file, SERVING_ENGINE_DOWN_FILE=self.down_file)
        self.stopping = False
        self.forced = False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT handler: begin a graceful shutdown; a second signal ends what is still running."""
        if self.stopping:
            logger.info("received signal %d again, ending the requests still in flight", signum)
            self.forced = True
            return
        logger.info("received signal %d, draining", signum)
        self.stopping = True

    def wait_for_engines(self, engines: list[subprocess.Popen]) -> bool:
        """Poll every engine's health until all answer, one dies, a stop is asked, or the start timeout passes."""
        deadline = time.monotonic() + self.config.server.engine_start_timeout
        waiting = dict(zip(self.config.server.engine_addresses, engines))
        while time.monotonic() < deadline and not self.stopping:
            for address, engine in list(waiting.items()):
                if engine.poll() is not None:
                    logger.error("the engine exited with code %d while starting", engine.returncode)
                    return False
                if engine_is_ready(address):
                    del waiting[address]
            if not waiting:
                return True
            time.sleep(SUPERVISE_INTERVAL)
        if not self.stopping:
            logger.error("the engine was not ready after %.0f s", self.config.server.engine_start_timeout)
        return False

    def engine_stalled(self) -> bool:
        """Whether some engine's loop has not turned for ENGINE_STALL_TIMEOUT seconds."""
        for heartbeat in self.heartbeats:
            try:
                age = time.time() - os.path.getmtime(heartbeat)
            except OSError:
                continue  # not written yet
            if age > self.config.server.engine_stall_timeout:
                return True
        return False

    def run(self) -> int:
        """Start both processes, supervise them, and return the launcher's exit code."""
        try:
            return self._run()
        finally:
            for path in [*self.heartbeats, self.drain_file, self.down_file]:
                if os.path.exists(path):
                    os.unlink(path)

    def drain(self, engines: list[subprocess.Popen]) -> None:
        """Refuse new requests and wait until the engines are idle, the grace period ends or a second signal."""
        with open(self.drain_file, "w"):
            pass
        deadline = time.monotonic() + self.config.server.shutdown_grace_seconds
        while not self.forced and time.monotonic() < deadline and all(e.poll() is None for e in engines):
            healths = [engine_health(address, timeout=0.5) for address in self.config.server.engine_addresses]
            if all(h is not None and h.running == 0 and h.waiting == 0 for h in healths):
                return
            time.sleep(SUPERVISE_INTERVAL)
        logger.warning("ending the requests still in flight")

    def announce_engine_down(self) -> None:
        """Tell the HTTP workers that the engine is gone: they fail what is in flight and `/ping` turns 503."""
        with open(self.down_file, "w"):
            pass

    def stop_after_engine_down(self, http: subprocess.Popen) -> int:
        """Give the HTTP workers a moment to end their streams with an error event, stop gunicorn; exit code 1."""
        time.sleep(ENGINE_DOWN_NOTICE)
        stop_process(http, 5.0, "gunicorn")
        return 1

    def stop_engines(self, engines: list[subprocess.Popen]) -> int:
        """Stop every engine (SIGTERM to all first, so they wind down together); the first non-zero exit code, or 0."""
        for engine in engines:
            if engine.poll() is None:
                engine.send_signal(signal.SIGTERM)
        codes = [stop_process(engine, ENGINE_STOP_TIMEOUT, "engine") for engine in engines]
        return next((code for code in codes if code != 0), 0)

    def _run(self) -> int:
        """Start the engines and gunicorn and supervise them."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        engines = [start_child([sys.executable, "-m", "serving.engine.worker"],
                               dict(self.env, SERVING_ENGINE_REPLICA=str(replica)))
                   for replica in range(self.config.server.engine_replicas)]
        logger.info("engine process%s %s starting for %s", "es" if len(engines) > 1 else "",
                    ", ".join(str(e.pid) for e in engines), self.config.engine.model_id)
        if not self.wait_for_engines(engines):
            self.stop_engines(engines)
            return 0 if self.stopping else 1
        http = start_child(gunicorn_command(self.config), self.env)
        logger.info("serving on http://%s:%d (gunicorn %d)", self.config.server.host, self.config.server.port,
                    http.pid)
        while not self.stopping:
            dead = next((e for e in engines if e.poll() is not None), None)
            if dead is not None:
                logger.error("the engine exited with code %d; stopping the HTTP server", dead.returncode)
                self.announce_engine_down()
                self.stop_engines(engines)
                return self.stop_after_engine_down(http)
            if self.engine_stalled():
                logger.error("the engine made no progress for %.0f s; killing it and stopping the HTTP server",
                             self.config.server.engine_stall_timeout)
                self.announce_engine_down()
                for engine in engines:
                    engine.kill()
                    engine.wait()
                return self.stop_after_engine_down(http)
            if http.poll() is not None:
                logger.error("gunicorn exited with code %d; stopping the engine", http.returncode)
                self.stop_engines(engines)
                return 1
            time.sleep(SUPERVISE_INTERVAL)
        self.drain(engines)
        engine_code = self.stop_engines(engines)
        http_code = stop_process(http, 5.0, "gunicorn")
        logger.info("stopped (gunicorn %d, engine %d)", http_code, engine_code)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: accepts SageMaker's `serve` argument; a bad setting exits 2 with one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    unknown = [arg for arg in args if arg not in SAGEMAKER_ARGUMENTS]
    try:
        config = from_env()
    except ConfigError as error:
        print(f"serving: configuration error: {error}", file=sys.stderr)
        return 2
    setup_logging(config.server.log_level, role="launcher")
    if unknown:
        logger.info("ignoring arguments %s", " ".join(unknown))
    log_model_choice(config)
    raise_open_file_limit(config)
    with tempfile.TemporaryDirectory(prefix="serving-metrics-") as metrics_dir:  # the HTTP workers' metrics files
        return Launcher(config, metrics_dir).run()


def log_model_choice(config: Config) -> None:
    """Say which model is served and why, and which settings have no effect here."""
    engine = config.engine
    if engine.model_source == "embedded default model":
        logger.warning("HF_MODEL_ID is not set and /opt/ml/model holds no model: serving the embedded default "
                       "model (%s); set HF_MODEL_ID to a hub id or a model directory to serve another",
                       engine.model_id)
    else:
        logger.info("model %s (from %s)", engine.model_id, engine.model_source)
    if config.ignored:
        logger.info("settings with no effect in this server, ignored: %s", ", ".join(config.ignored))
