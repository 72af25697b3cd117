"""A local stand-in for the SageMaker runtime API, in front of a running container, for users without AWS access.

    python -m serving.sagemaker_local --container http://127.0.0.1:8080 --port 8081
    export AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:8081 AWS_DEFAULT_REGION=us-east-1 \\
           AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local

Then boto3's `sagemaker-runtime` client and the SageMaker SDK's `Predictor` work unchanged: `invoke_endpoint`
(`POST /endpoints/{name}/invocations`) forwards the body and the headers SageMaker passes on to the container's
`POST /invocations` and returns its answer; `invoke_endpoint_with_response_stream`
(`POST /endpoints/{name}/invocations-response-stream`) forwards the same way and wraps each chunk the container
sends in an AWS event-stream `PayloadPart` frame as it arrives, like SageMaker does. A container error (non-2xx)
becomes SageMaker's `ModelError` (HTTP 424, `OriginalStatusCode`, `OriginalMessage`); a stream that breaks after it
started ends with a `ModelStreamError` event. Signatures are not checked; any credentials do.

Every endpoint name goes to `--container`, unless `--endpoint NAME=URL` names endpoints (then others are 400
`ValidationError`, like an unknown endpoint). An adapter inference component, `--adapter-component IC=ADAPTER`:
an invocation with `InferenceComponentName=IC` reaches the container with SageMaker's
`X-Amzn-SageMaker-Adapter-Identifier: ADAPTER` header, as an endpoint with adapter inference components sends it
(register the adapter with the container's `POST /adapters` first, as SageMaker does when it creates the
component). Only the standard library is used.
"""

from __future__ import annotations

import argparse
import binascii
import http.client
import json
import logging
import re
import struct
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping
from urllib.parse import unquote, urlsplit

logger = logging.getLogger("serving.sagemaker_local")

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's limit on the request body
CONTAINER_TIMEOUT = 60.0 + 10.0  # SageMaker gives a container 60 s to answer
STREAM_CHUNK = 64 * 1024
# Request headers SageMaker passes on to the container (the rest are SageMaker's own or dropped).
FORWARDED_HEADERS = (
    "Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes", "X-Amzn-SageMaker-Target-Model",
    "X-Amzn-SageMaker-Target-Variant", "X-Amzn-SageMaker-Target-Container-Hostname",
    "X-Amzn-SageMaker-Inference-Id", "X-Amzn-SageMaker-Enable-Explanations",
    "X-Amzn-SageMaker-Inference-Component", "X-Amzn-SageMaker-Session-Id",
)
ADAPTER_HEADER = "X-Amzn-SageMaker-Adapter-Identifier"
ROUTE = re.compile(r"^/endpoints/([^/]+)/(invocations|invocations-response-stream)$")
VARIANT = "AllTraffic"
ACCOUNT = "000000000000"


def _header(name: str, value: str) -> bytes:
    """One event-stream header of type string (7)."""
    encoded_name, encoded_value = name.encode(), value.encode()
    return struct.pack("!B", len(encoded_name)) + encoded_name + struct.pack("!BH", 7, len(encoded_value)) \
        + encoded_value


def event_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total length, headers length, CRC32), headers, payload, CRC32."""
    encoded_headers = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded_headers))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + encoded_headers + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def payload_part(data: bytes) -> bytes:
    """A `PayloadPart` event carrying `data`."""
    return event_frame({":event-type": "PayloadPart", ":content-type": "application/octet-stream",
                        ":message-type": "event"}, data)


def model_stream_error(message: str, code: str = "StreamBroken") -> bytes:
    """A `ModelStreamError` exception event, which ends a response stream."""
    body = json.dumps({"Message": message, "ErrorCode": code}).encode()
    return event_frame({":exception-type": "ModelStreamError", ":content-type": "application/json",
                        ":message-type": "exception"}, body)


def model_error_body(status: int, body: bytes, endpoint: str) -> dict:
    """SageMaker's `ModelError` for a container that answered `status` with `body`."""
    text = body.decode("utf-8", errors="replace")
    kind = "client" if 400 <= status < 500 else "server"
    return {
        "ErrorCode": f"{kind.capitalize()}.{status}",
        "Message": f'Received {kind} error ({status}) from primary with message "{text}". See '
                   f"https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logEventViewer:"
                   f"group=/aws/sagemaker/Endpoints/{endpoint} in account {ACCOUNT} for more information.",
        "OriginalMessage": text,
        "OriginalStatusCode": status,
        "LogStreamArn": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{endpoint}",
    }


class RuntimeHandler(BaseHTTPRequestHandler):
    """The two runtime routes, plus `GET /ping` for the stand-in's own readiness."""

    protocol_version = "HTTP/1.1"
    server: "RuntimeServer"

    def log_message(self, format: str, *args: object) -> None:
        """Access log through logging."""
        logger.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        """Readiness of the stand-in itself."""
        if self.path == "/ping":
            self._reply(200, b"", "text/plain")
        else:
            self._error(404, "UnknownOperationException", "Unknown operation")

    def do_POST(self) -> None:  # noqa: N802
        """Route an invocation."""
        match = ROUTE.match(urlsplit(self.path).path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if match is None:
            self._error(404, "UnknownOperationException", "Unknown operation")
            return
        endpoint, operation = unquote(match.group(1)), match.group(2)
        target = self.server.container_for(endpoint)
        if target is None:
            self._error(400, "ValidationError", f"Endpoint {endpoint} of account {ACCOUNT} not found.")
            return
        if len(body) > MAX_PAYLOAD_BYTES:
            self._error(400, "ValidationError", f"Request payload size {len(body)} exceeds the limit of "
                                                f"{MAX_PAYLOAD_BYTES} bytes.")
            return
        headers = {name: self.headers[name] for name in FORWARDED_HEADERS if self.headers.get(name) is not None}
        adapter = self.server.adapters.get(self.headers.get("X-Amzn-SageMaker-Inference-Component", ""))
        if adapter is not None:
            headers[ADAPTER_HEADER] = adapter
        if operation == "invocations-response-stream":
            headers.pop("Accept", None)
            accept = self.headers.get("X-Amzn-SageMaker-Accept")
            if accept:
                headers["Accept"] = accept
        try:
            connection, response = self._forward(target, body, headers)
        except OSError as error:
            self._error(424, "ModelError", f"Could not reach the container at {target}: {error}")
            return
        try:
            if not 200 <= response.status < 300:
                self._reply(424, json.dumps(model_error_body(response.status, response.read(), endpoint)).encode(),
                            "application/json", {"x-amzn-ErrorType": "ModelError"})
            elif operation == "invocations":
                self._reply_invocation(response)
            else:
                self._reply_stream(response)
        finally:
            connection.close()

    def _forward(self, target: str, body: bytes, headers: dict[str, str]):
        """POST the body to the container's /invocations; returns the connection and the response (unread)."""
        url = urlsplit(target)
        connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=CONTAINER_TIMEOUT)
        connection.request("POST", url.path.rstrip("/") + "/invocations", body=body, headers=headers)
        return connection, connection.getresponse()

    def _response_headers(self, response: http.client.HTTPResponse) -> dict[str, str]:
        """The runtime's headers about the model's answer."""
        headers = {"x-Amzn-Invoked-Production-Variant": VARIANT}
        attributes = response.getheader("X-Amzn-SageMaker-Custom-Attributes")
        if attributes is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
        return headers

    def _reply_invocation(self, response: http.client.HTTPResponse) -> None:
        """InvokeEndpoint: the container's whole body and content type."""
        body = response.read()
        content_type = response.getheader("Content-Type") or "application/json"
        self._reply(200, body, content_type, self._response_headers(response))

    def _reply_stream(self, response: http.client.HTTPResponse) -> None:
        """InvokeEndpointWithResponseStream: each chunk as it arrives, in a PayloadPart frame."""
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("X-Amzn-SageMaker-Content-Type", response.getheader("Content-Type") or "application/json")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in self._response_headers(response).items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while True:
                try:
                    data = response.read1(STREAM_CHUNK)
                except (OSError, http.client.HTTPException) as error:
                    self._write_chunk(model_stream_error(f"The model's response stream broke: {error}"))
                    break
                if not data:
                    break
                self._write_chunk(payload_part(data))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; closing the container connection stops it

    def _write_chunk(self, data: bytes) -> None:
        """One HTTP/1.1 chunk, flushed."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _reply(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        """A whole response."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, error_type: str, message: str) -> None:
        """An AWS JSON error that botocore maps to the named exception."""
        self._reply(status, json.dumps({"message": message}).encode(), "application/json",
                    {"x-amzn-ErrorType": error_type})


class RuntimeServer(ThreadingHTTPServer):
    """The stand-in's HTTP server: one thread per connection."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], container: str | None, endpoints: Mapping[str, str],
                 adapters: Mapping[str, str] | None = None) -> None:
        super().__init__(address, RuntimeHandler)
        self.container = container
        self.endpoints = dict(endpoints)
        self.adapters = dict(adapters or {})  # adapter inference component name -> the adapter it serves

    def container_for(self, endpoint: str) -> str | None:
        """The container URL serving `endpoint`, or None for an unknown endpoint."""
        return self.endpoints.get(endpoint) or (None if self.endpoints else self.container)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m serving.sagemaker_local", description=__doc__.split("\n\n")[0])
    parser.add_argument("--container", default="http://127.0.0.1:8080",
                        help="URL of the running container (default http://127.0.0.1:8080)")
    parser.add_argument("--endpoint", action="append", default=[], metavar="NAME=URL",
                        help="serve only these endpoint names, each from its own container (repeatable)")
    parser.add_argument("--adapter-component", action="append", default=[], metavar="IC=ADAPTER",
                        help="an adapter inference component: invocations naming IC run the LoRA adapter ADAPTER "
                             "(repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on (default 8081; 0: any free port)")
    args = parser.parse_args(argv)
    args.endpoints = _pairs(parser, "--endpoint", "NAME=URL", args.endpoint)
    args.adapters = _pairs(parser, "--adapter-component", "IC=ADAPTER", args.adapter_component)
    return args


def _pairs(parser: argparse.ArgumentParser, option: str, form: str, items: list[str]) -> dict[str, str]:
    """The `KEY=VALUE` items of a repeatable option (a malformed one stops with the usage)."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            parser.error(f"{option} takes {form}, not {item!r}")
        pairs[key] = value
    return pairs


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [sagemaker-local %(process)d] %(message)s")
    server = RuntimeServer((args.host, args.port), args.container, args.endpoints, args.adapters)
    host, port = server.server_address[:2]
    targets = ", ".join(f"{name} -> {url}" for name, url in args.endpoints.items()) or f"any name -> {args.container}"
    logger.info("SageMaker runtime stand-in on http://%s:%d (%s)", host, port, targets)
    logger.info("use it with: export AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://%s:%d", host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
