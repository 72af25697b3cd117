"""The error catalogue: every error kind the HTTP side answers, declared once with all that depends on it.

Each `Error` fixes its wire `error_type` (TGI's body and stream events), its HTTP status on TGI's routes and on
the OpenAI routes (`/v1/*`, and `/invocations` with `messages` or `prompt`), its OpenAI `type`, and the `err`
label under which `tgi_request_failure` counts it (TGI's `InferError` -> status is the model). Call sites name a
member, never a string, so a typo is an `AttributeError` at import rather than a 500 at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from serving.messages import AdapterStatus, ErrorKind


@dataclass(frozen=True)
class ErrorSpec:
    """What one error kind is on the wire and in the metrics."""

    error_type: str  # TGI's `error_type`
    status: int  # on TGI's routes
    openai_status: int  # on the OpenAI routes
    openai_type: str  # OpenAI's `error.type`
    metric: str  # the `err` label of `tgi_request_failure`


INVALID_REQUEST = "invalid_request_error"  # OpenAI's `type` of an error in the request itself


def _same(error_type: str, status: int, metric: str | None = None) -> ErrorSpec:
    """A kind whose status and type are the same on both route families."""
    return ErrorSpec(error_type, status, status, error_type, metric or error_type)


def _mistake(error_type: str, status: int, metric: str | None = None, openai_status: int = 400) -> ErrorSpec:
    """A user's mistake: TGI's status on its routes, OpenAI's 400 (or `openai_status`) `invalid_request_error`."""
    return ErrorSpec(error_type, status, openai_status, INVALID_REQUEST, metric or error_type)


class Error(Enum):
    """Every error kind of the HTTP side."""

    # The engine's kinds (`serving.messages.ErrorKind`), by the same member names.
    VALIDATION = _mistake("validation", 422)
    OVERLOADED = _same("overloaded", 429)
    GENERATION = _same("generation", 424)
    TEMPLATE = _mistake("template_error", 422, "template")
    INCOMPLETE = _same("incomplete_generation", 500, "incomplete")
    UNAVAILABLE = _same("unavailable", 503)
    # An unknown LoRA adapter: TGI's 422 `validation` on its routes, vLLM's 404 on the OpenAI routes.
    ADAPTER_NOT_FOUND = _mistake("validation", 422, openai_status=404)
    # Raised by the HTTP side itself.
    STREAM_SERIALIZATION = _same("stream_serialization_error", 500)
    TOOL = _mistake("tool_error", 422, "validation")
    SUFFIX_UNSUPPORTED = _mistake("suffix not supported", 422, "validation")
    BATCH_SIZE = _mistake("batch size exceeded", 422, "validation")
    VERTEX_VALIDATION = _same("Input validation error", 422)  # /vertex without instances
    VERTEX_INCOMPLETE = _same("Incomplete generation", 500)  # /vertex when an instance fails
    HEALTHCHECK = _same("healthcheck", 503)
    SHUTTING_DOWN = _same("shutting_down", 503)
    TOO_MANY_CONNECTIONS = _same("too_many_connections", 503)  # a reserved connection asked for more than health
    INTERNAL = _same("internal_error", 500)
    MODEL_NOT_FOUND = _mistake("model_not_found", 404, openai_status=404)  # GET /v1/models/{id} of another model
    # Registering and unregistering LoRA adapters (`AdapterStatus`), with SageMaker's statuses on both families.
    ADAPTER_BAD_REQUEST = _mistake("adapter_bad_request", 400)
    ADAPTER_MISSING = _mistake("adapter_not_found", 404, openai_status=404)  # no such source, or not registered
    ADAPTER_LOAD_FAILED = _mistake("adapter_load_failed", 424, openai_status=424)  # its files cannot serve the model
    ADAPTER_NO_ROOM = _same("adapter_no_room", 507)  # every resident adapter slot is pinned or in use
    DROPPED = _same("dropped", 499)  # the client went away: only counted, never answered
    # Framework errors about the request itself, raised before a route's own checks.
    UNSUPPORTED_MEDIA_TYPE = _mistake("unsupported_media_type", 415, openai_status=415)
    BAD_JSON = _mistake("bad_json", 400)
    WRONG_SHAPE = _mistake("wrong_shape", 422)
    PAYLOAD_TOO_LARGE = _mistake("payload_too_large", 413, openai_status=413)
    BAD_REQUEST = _same("bad_request", 400)
    REQUEST_TIMEOUT = _same("request_timeout", 408)
    URI_TOO_LONG = _same("uri_too_long", 414)
    HEADERS_TOO_LARGE = _same("request_header_fields_too_large", 431)
    EXPECTATION_FAILED = _same("expectation_failed", 417)
    NOT_FOUND = _same("not_found", 404)
    METHOD_NOT_ALLOWED = _same("method_not_allowed", 405)

    @property
    def spec(self) -> ErrorSpec:
        """This kind's wire facts."""
        return self.value

    @property
    def error_type(self) -> str:
        """TGI's `error_type`."""
        return self.value.error_type

    def status(self, openai: bool = False) -> int:
        """The HTTP status on TGI's routes, or on the OpenAI routes."""
        return self.value.openai_status if openai else self.value.status

    @property
    def users_mistake(self) -> bool:
        """Whether the request itself is at fault (never a 5xx on any route)."""
        return self.value.openai_type == INVALID_REQUEST

    @classmethod
    def of_engine(cls, kind: ErrorKind) -> Error:
        """The kind of an engine `Failed` event."""
        return _ENGINE_KINDS[kind]

    @classmethod
    def of_adapter_status(cls, status: AdapterStatus) -> Error:
        """The kind of a failed adapter registration or unregistration."""
        return _ADAPTER_KINDS[status]


_ENGINE_KINDS = {kind: Error[kind.name] for kind in ErrorKind}
_ADAPTER_KINDS = {
    AdapterStatus.BAD_REQUEST: Error.ADAPTER_BAD_REQUEST,
    AdapterStatus.NOT_FOUND: Error.ADAPTER_MISSING,
    AdapterStatus.LOAD_FAILED: Error.ADAPTER_LOAD_FAILED,
    AdapterStatus.NO_ROOM: Error.ADAPTER_NO_ROOM,
}
