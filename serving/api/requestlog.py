"""Request ids (`X-Request-Id`, `X-Amzn-SageMaker-Inference-Id`) and one structured log line per request.

An incoming id in either header is kept when it is short and plain (letters, digits, `._:-`), else a new one is
made; both headers carry it back. When the response is closed (a stream included) the logger `serving.access`
writes one JSON line: id, method, route, status, prompt and generated tokens, queue, inference and total time,
finish reasons, the LoRA adapter asked for and the error type of a stream that ended in an error event. No
prompt text, header or body is ever logged. Health, metrics and docs calls are logged at debug level.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

from flask import Flask, Response, g, has_request_context, request

from serving.messages import Finished

logger = logging.getLogger("serving.access")

HEADERS = ("X-Request-Id", "X-Amzn-SageMaker-Inference-Id")
PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
QUIET_PATHS = frozenset({"/ping", "/health", "/metrics", "/docs", "/api-doc/openapi.json"})


@dataclass
class RequestRecord:
    """What one HTTP request did, filled in as it runs."""

    request_id: str
    started: float
    finished: list[Finished] = field(default_factory=list)
    error_type: str | None = None
    adapter: str | None = None  # the LoRA adapter the request named (None: the base model)


def current_record() -> RequestRecord | None:
    """The record of the request being handled, if any."""
    return g.get("request_record") if has_request_context() else None


def start() -> None:
    """Take the caller's request id or make one."""
    incoming = next((request.headers[name] for name in HEADERS if request.headers.get(name)), None)
    request_id = incoming if incoming is not None and PLAIN_ID.fullmatch(incoming) else uuid.uuid4().hex
    g.request_record = RequestRecord(request_id, time.monotonic())


def finish(response: Response) -> Response:
    """Return the id in both headers and log the request's line once the response is closed."""
    record = current_record()
    if record is None:
        return response
    for name in HEADERS:
        response.headers[name] = record.request_id
    method, path, status = request.method, request.path, response.status_code
    response.call_on_close(lambda: log_line(record, method, path, status))
    return response


def log_line(record: RequestRecord, method: str, path: str, status: int) -> None:
    """Write the request's JSON line."""
    done = record.finished
    fields = {
        "request_id": record.request_id,
        "method": method,
        "route": path,
        "status": status,
        "prompt_tokens": sum(f.input_length for f in done),
        "generated_tokens": sum(f.generated_tokens for f in done),
        "queue_time": round(max((f.queue_time for f in done), default=0.0), 6),
        "inference_time": round(max((f.inference_time for f in done), default=0.0), 6),
        "total_time": round(time.monotonic() - record.started, 6),
        "finish_reason": ",".join(f.finish_reason.value for f in done) or None,
        "adapter": record.adapter,
        "error_type": record.error_type,
    }
    logger.log(logging.DEBUG if path in QUIET_PATHS else logging.INFO, "%s", json.dumps(fields))


def register(app: Flask) -> None:
    """Install the request id and the log line on `app`."""
    app.before_request(start)
    app.after_request(finish)
