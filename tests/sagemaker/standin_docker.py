"""A stand-in `docker` for the SageMaker SDK's local mode where no docker engine runs (CI), SAGEMAKER.md §6 layer B.

It answers the six sub-commands the SDK calls: `docker info`, `docker context inspect`, `docker images -q IMAGE`
(the image "exists", so there is no ECR login or pull), `docker compose version` (a v2), `docker compose -f FILE up
...` and `docker compose -f FILE down`. `up` runs the compose service's command (`serve`) as a host process,
`python -m serving serve`, the way the image's entrypoint would: the service's environment, the host directory
mounted at /opt/ml/model as the model directory (SERVING_MODEL_DIR, and any value naming /opt/ml/model rewritten to
it), the published host port as SAGEMAKER_BIND_TO_PORT, and 127.0.0.1 as the listening address. It stays in the
foreground like `compose up`, sends the server's output to stdout (the SDK reads only stdout), and passes SIGTERM
on. The server's pid is written to $STANDIN_DOCKER_STATE_DIR (when set) so a test can make sure it stopped.

With $STANDIN_DOCKER_REAL set to a real docker executable, `up` runs the service's image instead, with that docker:
`docker run --network host` with the same environment and mounts (everything stays on loopback), so the SDK's local
mode drives the real image on a machine that has a docker engine but no compose plugin or bridge network.

Run through the `bin/docker` wrapper, with the interpreter in $STANDIN_DOCKER_PYTHON (it needs PyYAML and serving).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

MODEL_DIR = "/opt/ml/model"
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED")
# A test may tune the server through these (docker would not pass the host's environment on).
TEST_TUNING_ENV = ("TORCH_NUM_THREADS", "SHUTDOWN_GRACE_SECONDS")


def compose_file(args: list[str]) -> Path:
    """The `-f FILE` argument of a compose command."""
    return Path(args[args.index("-f") + 1])


def state_dir() -> Path | None:
    """Where pids are recorded, if the caller asked."""
    value = os.environ.get("STANDIN_DOCKER_STATE_DIR")
    return Path(value) if value else None


def service_process(service: dict) -> tuple[list[str], dict[str, str]]:
    """The host command line and environment that stand in for the service's container."""
    env = {name: os.environ[name] for name in PASSED_ENV + TEST_TUNING_ENV if name in os.environ}
    for item in service.get("environment", []):
        name, _, value = item.partition("=")
        env[name] = value
    mounts = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        mounts[container] = host
    if MODEL_DIR in mounts:
        env["SERVING_MODEL_DIR"] = mounts[MODEL_DIR]
        for name, value in list(env.items()):
            if value == MODEL_DIR or value.startswith(MODEL_DIR + "/"):
                env[name] = mounts[MODEL_DIR] + value[len(MODEL_DIR):]
    for port in service.get("ports", []):
        host_port, _, container_port = str(port).rpartition(":")
        if container_port == "8080":
            env["SAGEMAKER_BIND_TO_PORT"] = host_port
    env["HOSTNAME"] = "127.0.0.1"
    env["PYTHONUNBUFFERED"] = "1"
    command = service.get("command", "serve")
    arguments = command.split() if isinstance(command, str) else list(command)
    return [sys.executable, "-m", "serving", *arguments], env


def container_process(service: dict, real_docker: str) -> tuple[list[str], dict[str, str]]:
    """The real `docker run` that stands in for `compose up` of the service, on the host network."""
    env = {}
    for item in service.get("environment", []):
        name, _, value = item.partition("=")
        env[name] = value
    env = {name: value for name, value in env.items() if not name.startswith("AWS_")}
    env.update({name: os.environ[name] for name in TEST_TUNING_ENV if name in os.environ})
    for port in service.get("ports", []):
        host_port, _, container_port = str(port).rpartition(":")
        if container_port == "8080":
            env["SAGEMAKER_BIND_TO_PORT"] = host_port
    env["HOSTNAME"] = "127.0.0.1"
    command = [real_docker, "run", "--rm", "--network", "host", "--name", service["container_name"]]
    for name, value in env.items():
        command += ["-e", f"{name}={value}"]
    for volume in service.get("volumes", []):
        command += ["-v", volume]
    arguments = service.get("command", "serve")
    command += [service["image"], *(arguments.split() if isinstance(arguments, str) else arguments)]
    return command, dict(os.environ)


def compose_up(path: Path) -> int:
    """Run the (single) service in the foreground until it exits or we are told to stop."""
    services = yaml.safe_load(path.read_text())["services"]
    (name, service), = services.items()
    real_docker = os.environ.get("STANDIN_DOCKER_REAL")
    command, env = container_process(service, real_docker) if real_docker else service_process(service)
    print(f"standin-docker: {name}: {' '.join(command)}", flush=True)
    process = subprocess.Popen(command, env=env, stdout=sys.stdout, stderr=subprocess.STDOUT,
                               start_new_session=True)
    for directory in filter(None, (state_dir(), path.parent)):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.pid").write_text(str(process.pid))
        if real_docker:
            (directory / f"{name}.container").write_text(service["container_name"])

    def forward(signum: int, frame: object) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return process.wait()


def compose_down(path: Path) -> int:
    """Stop the services `up` started from this file."""
    for pid_file in path.parent.glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
    return 0


def main(args: list[str]) -> int:
    """Dispatch a docker command line."""
    if args[:1] == ["info"]:
        print("Server:\n Server Version: standin\n Cgroup Driver: cgroupfs")
        return 0
    if args[:2] == ["context", "inspect"]:
        print(json.dumps([{"Name": "default", "Endpoints": {"docker": {"Host": "unix:///var/run/docker.sock"}}}]))
        return 0
    if args[:2] == ["images", "-q"]:
        real_docker = os.environ.get("STANDIN_DOCKER_REAL")
        if real_docker:
            return subprocess.run([real_docker, *args]).returncode
        print("0123456789ab")
        return 0
    if args[:2] == ["compose", "version"]:
        print("Docker Compose version v2.40.0-standin")
        return 0
    if args[:1] == ["compose"] and "up" in args:
        return compose_up(compose_file(args))
    if args[:1] == ["compose"] and "down" in args:
        return compose_down(compose_file(args))
    print(f"standin-docker: unsupported command: docker {' '.join(args)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
