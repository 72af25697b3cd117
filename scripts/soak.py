"""Soak test (not in CI): mixed streaming and non-streaming clients with random parameters and random disconnects
against a real server for a fixed time; reports 5xx answers, leaked sequences and RSS growth after warm-up.

    python scripts/soak.py --duration 1800 --clients 8            # starts its own server on the tiny test model
    python scripts/soak.py --model /path/to/model --duration 300   # another model

Exit status 0 when there was no 5xx, no sequence left running or queued once the clients stopped, and every
server process grew by less than 5% RSS between the end of the warm-up and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["The", "Once upon a time", "What is deep learning?", "hello " * 40, "Write a poem about the sea"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every live process under `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def rss_kib(pid: int) -> int:
    """A process's resident set size in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def command_line(pid: int) -> str:
    """A process's command line, shortened."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
    except OSError:
        return "?"


def gauges(url: str) -> dict[str, float]:
    """tgi_queue_size and tgi_batch_current_size from /metrics."""
    text = requests.get(url + "/metrics", timeout=10).text
    return {name: float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))
            for name in ("tgi_queue_size", "tgi_batch_current_size")}


def random_request(rng: random.Random) -> tuple[str, dict, bool]:
    """A route, its body and whether it streams."""
    params = {"max_new_tokens": rng.randint(1, 64)}
    if rng.random() < 0.5:
        params.update(do_sample=True, temperature=rng.uniform(0.1, 2.0), top_p=rng.uniform(0.1, 1.0),
                      top_k=rng.randint(1, 50), seed=rng.randint(0, 2**31))
    if rng.random() < 0.2:
        params["stop"] = [rng.choice(["a", "the", "\n"])]
    if rng.random() < 0.1:
        params["repetition_penalty"] = rng.uniform(1.0, 2.0)
    prompt = rng.choice(PROMPTS)
    route = rng.choice(["/generate", "/generate_stream", "/chat", "/invocations"])
    if route == "/chat":
        stream = rng.random() < 0.5
        return "/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}],
                                        "max_tokens": params["max_new_tokens"], "stream": stream,
                                        "temperature": params.get("temperature", 1.0)}, stream
    if route == "/invocations":
        stream = rng.random() < 0.3
        return route, {"inputs": prompt, "parameters": params, "stream": stream}, stream
    return route, {"inputs": prompt, "parameters": params}, route == "/generate_stream"


class Soak:
    """Runs the clients and counts what came back."""

    def __init__(self, url: str, end: float, seed: int, disconnect_rate: float) -> None:
        self.url = url
        self.end = end
        self.seed = seed
        self.disconnect_rate = disconnect_rate
        self.statuses: Counter[int] = Counter()
        self.stream_errors: Counter[str] = Counter()
        self.disconnects = 0
        self.client_errors: Counter[str] = Counter()
        self.lock = threading.Lock()

    def client(self, index: int) -> None:
        """One client: requests back to back until the end."""
        rng = random.Random(self.seed * 1000 + index)
        while time.monotonic() < self.end:
            route, body, stream = random_request(rng)
            try:
                if rng.random() < self.disconnect_rate:
                    self.cut(route, body, rng)
                else:
                    self.complete(route, body, stream)
            except (OSError, requests.RequestException) as exc:
                with self.lock:
                    self.client_errors[type(exc).__name__] += 1

    def complete(self, route: str, body: dict, stream: bool) -> None:
        """A request read to its end."""
        response = requests.post(self.url + route, json=body, stream=stream, timeout=120)
        errors = []
        if stream and response.status_code == 200:
            for line in response.iter_lines():
                if line.startswith(b"data:") and b'"error"' in line and b"[DONE]" not in line:
                    errors.append(json.loads(line[5:]).get("error_type", "?"))
        else:
            response.content
        with self.lock:
            self.statuses[response.status_code] += 1
            for error in errors:
                self.stream_errors[error] += 1

    def cut(self, route: str, body: dict, rng: random.Random) -> None:
        """A request whose client goes away at a random point (before, while queued, mid-stream)."""
        payload = json.dumps(body).encode()
        host, port = self.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            budget = rng.choice([0, 0, 1, rng.randint(100, 2000)])
            received = 0
            sock.settimeout(5)
            try:
                while received < budget:
                    chunk = sock.recv(min(4096, budget - received))
                    if not chunk:
                        break
                    received += len(chunk)
            except TimeoutError:
                pass  # a short answer on a kept-alive connection: it ended before the budget
        with self.lock:
            self.disconnects += 1


def main() -> int:
    """Run the soak and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--disconnect-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="model directory (default: a freshly built tiny test model)")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="soak-"))
    model = args.model
    if model is None:
        from serving.testing.tiny_model import build_tiny_model
        model = str(build_tiny_model(scratch / "model"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SM_", "SAGEMAKER_", "MAX_", "PORT"))}
    env.update(HF_MODEL_ID=model, HOSTNAME="127.0.0.1", PORT=str(port), TORCH_NUM_THREADS="1",
               SERVING_ENGINE_ADDRESS=f"ipc://{scratch}/engine.sock", LOG_LEVEL="warning",
               SAGEMAKER_MODEL_SERVER_WORKERS=str(args.workers), MAX_CONCURRENT_REQUESTS="64")
    url = f"http://127.0.0.1:{port}"
    with open(scratch / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "serving"], env=env, cwd=REPO_ROOT, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if requests.get(url + "/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print((scratch / "server.log").read_text()[-3000:], file=sys.stderr)
                return 2
            time.sleep(0.5)
        started = time.monotonic()
        soak = Soak(url, started + args.duration, args.seed, args.disconnect_rate)
        threads = [threading.Thread(target=soak.client, args=(i,), daemon=True) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        baseline: dict[int, int] = {}
        peak_running = 0.0
        while time.monotonic() < soak.end:
            time.sleep(5)
            peak_running = max(peak_running, gauges(url)["tgi_batch_current_size"])
            if not baseline and time.monotonic() - started >= args.warmup:
                baseline = {pid: rss_kib(pid) for pid in descendants(server.pid)}
        for thread in threads:
            thread.join(180)
        leaked = gauges(url)
        settle = time.monotonic() + 10
        while sum(leaked.values()) and time.monotonic() < settle:
            time.sleep(0.5)
            leaked = gauges(url)
        final = {pid: rss_kib(pid) for pid in baseline}
        growth = {f"{pid} {command_line(pid)}": {"baseline_kib": baseline[pid], "final_kib": final[pid],
                                                 "growth_pct": round(100 * (final[pid] - baseline[pid])
                                                                     / max(1, baseline[pid]), 2)}
                  for pid in baseline}
        server_errors = sum(n for status, n in soak.statuses.items() if status >= 500)
        report = {
            "duration_s": args.duration, "clients": args.clients, "requests_completed": sum(soak.statuses.values()),
            "statuses": dict(sorted(soak.statuses.items())), "stream_error_events": dict(soak.stream_errors),
            "disconnects": soak.disconnects, "client_errors": dict(soak.client_errors),
            "server_5xx": server_errors, "leaked_sequences": leaked, "peak_running": peak_running,
            "rss": growth, "server_alive": server.poll() is None,
        }
        print(json.dumps(report, indent=2))
        ok = (server_errors == 0 and not sum(leaked.values()) and server.poll() is None
              and all(g["growth_pct"] < 5 for g in growth.values()))
        return 0 if ok else 1
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


if __name__ == "__main__":
    sys.exit(main())
