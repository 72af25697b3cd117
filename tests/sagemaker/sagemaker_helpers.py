"""Helpers for the SageMaker tests: the local runtime stand-in as a process, stopped by pid."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import requests

from servers import REPO_ROOT, free_port


class RuntimeProcess:
    """`python -m serving.sagemaker_local` on a free loopback port, stopped by pid."""

    def __init__(self, container_url: str, log_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"sagemaker-local-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving.sagemaker_local", "--container", container_url,
                 "--port", str(self.port), *extra],
                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.url + "/ping", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the runtime stand-in did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the process by pid."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
