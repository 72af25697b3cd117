"""Every error the HTTP layer sends, declared once: the engine's kinds, their statuses and the body shapes.

TGI routes answer `{"error": msg, "error_type": type}`. OpenAI routes (`/v1/*`, and `/invocations` with `messages`
or `prompt`) answer OpenAI's shape `{"error": {"message", "type", "param", "code"}}` (the `openai` client reads
`error.message`/`type`/`code`), with TGI's `error_type` kept beside it so that TGI's own Python client still
classifies the error; a user's mistake is a 400 `invalid_request_error` there, as OpenAI answers it, and an error
after a stream opened is that same body as one SSE event, then `[DONE]`. Framework errors about the body (bad
Content-Type, bad JSON, wrong shape, body too large) are plain text on TGI's routes, as axum sends them, and the
OpenAI JSON body on the OpenAI routes.
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
    "model_not_found": 404,
}

# A user's mistake: the OpenAI routes answer it with 400, OpenAI's `invalid_request_error` (other kinds keep their
# status, and their `error_type` as OpenAI's `type`), and no route ever answers it with a 5xx.
INVALID_REQUEST = "invalid_request_error"
USERS_MISTAKES = frozenset({ErrorKind.VALIDATION.value, ErrorKind.TEMPLATE.value, "tool_error",
                                "suffix not supported", "batch size exceeded"})
INVALID_REQUESTS = USERS_MISTAKES | {"model_not_found"}  # OpenAI's `type` of these is `invalid_request_error`


class ApiError(Exception):
    """An error reported as JSON: its `error_type` fixes the HTTP status through `STATUS`."""

    def __init__(self, error_type: str, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.code = code
        self.status = STATUS[error_type]

    @classmethod
    def validation(cls, message: str) -> "ApiError":
        """A request parameter out of range, with TGI's `Input validation error: ` prefix."""
        return cls(ErrorKind.VALIDATION.value, f"Input validation error: {message}")

    @classmethod
    def from_failed(cls, failed: Failed) -> "ApiError":
        """The engine's `Failed` event, whose message is already the user-facing text (and its code, if any)."""
        return cls(failed.kind.value, failed.message, failed.code)

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

    def users_mistake(self) -> bool:
        """Whether the request itself is at fault (bad parameters, a prompt too long, a tool or template error)."""
        return self.error_type in USERS_MISTAKES

    def openai_status(self) -> int:
        """The status on the OpenAI routes: 400 for a user's mistake."""
        return 400 if self.users_mistake() else self.status

    def openai_body(self) -> dict[str, Any]:
        """OpenAI's error body, plus TGI's `error_type` for TGI's client; also the error event of OpenAI streams."""
        kind = INVALID_REQUEST if self.error_type in INVALID_REQUESTS else self.error_type
        return {"error": {"message": self.message, "type": kind, "param": None, "code": self.code},
                "error_type": self.error_type}


class BodyError(Exception):
    """A framework error about the request body: a plain-text answer, as axum's extractors give; on the OpenAI
    routes OpenAI's JSON body (bad JSON and a wrong shape are 400 there)."""

    def __init__(self, status: int, text: str, param: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.param = param  # the field at fault, for OpenAI's `error.param`

    def response(self) -> Response:
        """The answer in the shape of the route that is serving the request."""
        if not g.get("openai_errors"):
            return Response(self.text, self.status, content_type="text/plain; charset=utf-8")
        status = 400 if self.status == 422 else self.status
        return json_response({"error": {"message": self.text, "type": INVALID_REQUEST, "param": self.param,
                                        "code": None}, "error_type": INVALID_REQUEST}, status)


def use_openai_errors() -> None:
    """Answer this request's JSON errors in OpenAI's shape."""
    g.openai_errors = True


def error_response(error: ApiError) -> Response:
    """The JSON response for `error` in the shape of the route that is serving the request (a counted failure
    when the route counts its requests)."""
    if g.get("count_failures"):
        services().metrics.failure(error.error_type)
    if g.get("openai_errors"):
        return json_response(error.openai_body(), error.openai_status())
    return json_response(error.tgi_body(), error.status)


def _http_exception(exc: HTTPException) -> Response:
    """Unknown paths and wrong methods: werkzeug's status and headers (405's Allow) with an empty body."""
    response = exc.get_response()
    response.set_data(b"")
    del response.headers["Content-Type"]
    return response


def register(app: Flask) -> None:
    """Install the handlers that turn every exception into the right answer, never an HTML page."""
    app.register_error_handler(ApiError, error_response)
    app.register_error_handler(BodyError, BodyError.response)
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(Exception, lambda exc: error_response(ApiError.from_exception(exc)))
