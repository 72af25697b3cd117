"""The local runtime stand-in's adapter inference components: boto3's `InferenceComponentName` reaches the
container as SageMaker's adapter header, in front of a container that records what it was sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import boto3
import pytest

from sagemaker_helpers import RuntimeProcess

pytestmark = pytest.mark.integration


class RecordingContainer(ThreadingHTTPServer):
    """A container whose `/invocations` answers `[]` and keeps each request's headers."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.seen: list[dict[str, str]] = []


class _Recorder(BaseHTTPRequestHandler):
    """Records the headers and answers an empty JSON list."""

    server: RecordingContainer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        """Keep the headers, answer `[]`."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")


@pytest.fixture
def container() -> Iterator[RecordingContainer]:
    """The recording container on a free loopback port."""
    server = RecordingContainer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_an_adapter_component_is_sent_as_the_adapter_header(container, tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{container.server_address[1]}"
    runtime = RuntimeProcess(url, tmp_path, "--adapter-component", "sql-ic=sql")
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
        client = boto3.client("sagemaker-runtime")
        body = json.dumps({"inputs": "hi"})
        for component in ("sql-ic", "base-ic"):
            response = client.invoke_endpoint(EndpointName="llm", InferenceComponentName=component,
                                              ContentType="application/json", Body=body)
            assert json.loads(response["Body"].read()) == []
    finally:
        runtime.stop()
    adapter, base = container.seen
    assert adapter["X-Amzn-SageMaker-Adapter-Identifier"] == "sql"
    assert adapter["X-Amzn-SageMaker-Inference-Component"] == "sql-ic"
    assert "X-Amzn-SageMaker-Adapter-Identifier" not in base
