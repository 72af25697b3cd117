"""Every error the HTTP layer sends, declared once: the engine's kinds, their statuses and the body shapes.

TGI routes answer `{"error": msg, "error_type": type}`. OpenAI routes answer OpenAI's shape
`{"error": {"message", "type", "param", "code"}}` (the `openai` client reads `error.message`/`type`), with TGI's
`error_type` kept beside it so that TGI's own Python client still classifies the error. Framework errors (bad
Content-Type, bad JSON, wrong shape, body too large) are plain text on every route, as axum sends them.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException

from serving.api.context import services
from serving.api.wire import json_response
from serving.client import EngineUnavailable
from serving.messages import ErrorKind, Failed

logger = logging.getLogger(__name__)

STATUS: dict[str, int] = {
    ErrorKind.VALIDATION.value: 422,
    ErrorKind.OVERLOADED.value: 429,
    ErrorKind.GENERATION.value: 424,
    ErrorKind.TEMPLATE.value: 422,
    ErrorKind.INCOMPLETE.value: 500,
    ErrorKind.UNAVAILABLE.value: 503,
    "incomplete_generation_stream": 500,
    "stream_serialization_error": 500,
    "tool_error": 422,
    "suffix not supported": 422,
    "batch size exceeded": 422,
    "Input validation error": 422,  # /vertex without instances
    "Incomplete generation": 500,  # /vertex when an instance fails
    "healthcheck": 503,
    "shutting_down": 503,
    "internal_error": 500,
}


class ApiError(Exception):
    """An error reported as JSON: its `error_type` fixes the HTTP status through `STATUS`."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = STATUS[error_type]

    @classmethod
    def validation(cls, message: str) -> "ApiError":
        """A request parameter out of range, with TGI's `Input validation error: ` prefix."""
        return cls(ErrorKind.VALIDATION.value, f"Input validation error: {message}")

    @classmethod
    def from_failed(cls, failed: Failed) -> "ApiError":
        """The engine's `Failed` event, whose message is already the user-facing text."""
        return cls(failed.kind.value, failed.message)

    @classmethod
    def incomplete(cls, streaming: bool) -> "ApiError":
        """The engine's events ended without a `Finished`."""
        if streaming:
            return cls("incomplete_generation_stream", "Incomplete generation stream")
        return cls(ErrorKind.INCOMPLETE.value, "Incomplete generation")

    @classmethod
    def serialization(cls) -> "ApiError":
        """A stream event that could not be written as JSON."""
        return cls("stream_serialization_error", "Stream event serialization error")

    @classmethod
    def from_exception(cls, exc: BaseException) -> "ApiError":
        """Anything else that went wrong: an unreachable engine is 503, a bug is a logged 500."""
        if isinstance(exc, EngineUnavailable):
            return cls(ErrorKind.UNAVAILABLE.value, f"Engine unavailable: {exc}")
        logger.error("unexpected error while serving a request", exc_info=exc)
        return cls("internal_error", "Internal server error")

    def tgi_body(self) -> dict[str, Any]:
        """TGI's error body, also its SSE error event."""
        return {"error": self.message, "error_type": self.error_type}

    def openai_body(self) -> dict[str, Any]:
        """OpenAI's error body, plus TGI's `error_type` for TGI's client."""
        return {"error": {"message": self.message, "type": self.error_type, "param": None, "code": None},
                "error_type": self.error_type}

    def openai_event(self) -> dict[str, Any]:
        """TGI's SSE error event on OpenAI routes, with the real status (TGI always says 422)."""
        return {"error": {"message": self.message, "http_status_code": self.status}}


class BodyError(Exception):
    """A framework error about the request body: a plain-text answer, as axum's extractors give."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def use_openai_errors() -> None:
    """Answer this request's JSON errors in OpenAI's shape."""
    g.openai_errors = True


def error_response(error: ApiError) -> Response:
    """The JSON response for `error` in the shape of the route that is serving the request (a counted failure
    when the route counts its requests)."""
    if g.get("count_failures"):
        services().metrics.failure(error.error_type)
    body = error.openai_body() if g.get("openai_errors") else error.tgi_body()
    return json_response(body, error.status)


def _http_exception(exc: HTTPException) -> Response:
    """Unknown paths and wrong methods: werkzeug's status and headers (405's Allow) with an empty body."""
    response = exc.get_response()
    response.set_data(b"")
    del response.headers["Content-Type"]
    return response


def register(app: Flask) -> None:
    """Install the handlers that turn every exception into the right answer, never an HTML page."""
    app.register_error_handler(ApiError, error_response)
    app.register_error_handler(
        BodyError, lambda exc: Response(exc.text, exc.status, content_type="text/plain; charset=utf-8"))
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(Exception, lambda exc: error_response(ApiError.from_exception(exc)))
