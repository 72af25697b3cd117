"""The errors the HTTP layer sends and their body shapes; each kind and its statuses are in `catalogue`.

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

from serving.api.catalogue import Error
from serving.api.context import failure_tally
from serving.api.wire import json_response
from serving.client import EngineUnavailable
from serving.messages import ErrorKind, Failed

logger = logging.getLogger(__name__)

MODEL_NOT_FOUND_CODE = "model_not_found"  # OpenAI's `error.code` of a model (or adapter) that does not exist

class ApiError(Exception):
    """An error reported as JSON: its catalogue `kind` fixes the status, the types and the metrics label."""

    def __init__(self, kind: Error, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code  # OpenAI's `error.code`, where it has one

    @property
    def error_type(self) -> str:
        """TGI's `error_type`."""
        return self.kind.error_type

    def status(self, openai: bool = False) -> int:
        """The HTTP status on TGI's routes, or on the OpenAI routes."""
        return self.kind.status(openai)

    @classmethod
    def validation(cls, message: str) -> "ApiError":
        """A request parameter out of range, with TGI's `Input validation error: ` prefix."""
        return cls(Error.VALIDATION, f"Input validation error: {message}")

    @classmethod
    def from_failed(cls, failed: Failed) -> "ApiError":
        """The engine's `Failed` event, whose message is already the user-facing text (and its code, if any; an
        unknown adapter is OpenAI's `model_not_found`)."""
        code = failed.code
        if code is None and failed.kind is ErrorKind.ADAPTER_NOT_FOUND:
            code = MODEL_NOT_FOUND_CODE
        return cls(Error.of_engine(failed.kind), failed.message, code)

    @classmethod
    def dropped(cls) -> "ApiError":
        """The HTTP client went away before its generations ended (the answer goes nowhere; it is counted)."""
        return cls(Error.DROPPED, "The client went away")

    @classmethod
    def serialization(cls) -> "ApiError":
        """A stream event that could not be written as JSON."""
        return cls(Error.STREAM_SERIALIZATION, "Stream event serialization error")

    @classmethod
    def from_exception(cls, exc: BaseException) -> "ApiError":
        """Anything else that went wrong: an unreachable engine is 503, a bug is a logged 500."""
        if isinstance(exc, EngineUnavailable):
            return cls(Error.UNAVAILABLE, f"Engine unavailable: {exc}")
        logger.error("unexpected error while serving a request", exc_info=exc)
        return cls(Error.INTERNAL, "Internal server error")

    def tgi_body(self) -> dict[str, Any]:
        """TGI's error body, also its SSE error event."""
        return {"error": self.message, "error_type": self.error_type}

    def openai_body(self) -> dict[str, Any]:
        """OpenAI's error body, plus TGI's `error_type` for TGI's client; also the error event of OpenAI streams."""
        return {"error": {"message": self.message, "type": self.kind.spec.openai_type, "param": None,
                          "code": self.code}, "error_type": self.error_type}


class BodyError(Exception):
    """A framework error about the request body: a plain-text answer, as axum's extractors give; on the OpenAI
    routes OpenAI's JSON body (bad JSON and a wrong shape are 400 there), with the field at fault as `param`."""

    def __init__(self, kind: Error, text: str, param: str | None = None) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text
        self.param = param

    def response(self) -> Response:
        """The answer in the shape of the route that is serving the request."""
        if not g.get("openai_errors"):
            return Response(self.text, self.kind.status(), content_type="text/plain; charset=utf-8")
        return json_response({"error": {"message": self.text, "type": self.kind.spec.openai_type,
                                        "param": self.param, "code": None}, "error_type": self.kind.error_type},
                             self.kind.status(openai=True))


def use_openai_errors() -> None:
    """Answer this request's JSON errors in OpenAI's shape."""
    g.openai_errors = True


def error_response(error: ApiError) -> Response:
    """The JSON response for `error` in the shape of the route that is serving the request (a counted failure
    when the route counts its requests)."""
    tally = failure_tally()
    if tally is not None:
        tally.fail(error.kind)
    openai = bool(g.get("openai_errors"))
    return json_response(error.openai_body() if openai else error.tgi_body(), error.status(openai))


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
