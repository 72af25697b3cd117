"""Request bodies as axum's `Json` extractor reads them: Content-Type, size limit, JSON syntax, then shape."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from flask import Request
from pydantic import BaseModel, ValidationError

from serving.api.catalogue import Error
from serving.api.errors import BodyError

READ_CHUNK = 64 * 1024
DESERIALIZE_PREFIX = "Failed to deserialize the JSON body into the target type: "
_JSON_CONTENT_TYPE = re.compile(r"^application/([^;\s]+\+)?json\s*(;.*)?$", re.IGNORECASE)

M = TypeVar("M", bound=BaseModel)
MAX_DEPTH = 128  # serde_json's recursion limit
RECURSION_ERROR = "Failed to parse the request body as JSON: recursion limit exceeded"
LONE_SURROGATE = "Failed to parse the request body as JSON: lone surrogate in hex escape"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _too_deep(value: Any) -> bool:
    """Whether arrays and objects nest deeper than MAX_DEPTH (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _lone_surrogate(value: Any) -> bool:
    """Whether a string (or key) anywhere in `value` holds a lone surrogate, which JSON's `\\uD800` escapes can
    make and which no UTF-8 encoder accepts (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _reject_constant(name: str) -> Any:
    """JSON has no NaN or Infinity, which Python's parser would accept."""
    raise ValueError(f"invalid number `{name}`")


def read_json(request: Request, limit: int) -> tuple[Any, str]:
    """The parsed body and its text; 415 without a JSON Content-Type, 413 over `limit` bytes, 408 when the body
    does not arrive in time (see `http_worker`), 400 on bad JSON (a lone surrogate included, as serde_json)."""
    if not _JSON_CONTENT_TYPE.match(request.headers.get("Content-Type", "")):
        raise BodyError(Error.UNSUPPORTED_MEDIA_TYPE, "Expected request with `Content-Type: application/json`")
    too_large = BodyError(Error.PAYLOAD_TOO_LARGE, "Failed to buffer the request body: length limit exceeded")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while chunk := request.stream.read(READ_CHUNK):  # under gunicorn, within the body's deadline (`http_worker`)
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BodyError(Error.BAD_JSON, RECURSION_ERROR) from None
    except UnicodeDecodeError as exc:
        raise BodyError(Error.BAD_JSON,
                        f"Failed to parse the request body as JSON: invalid UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise BodyError(Error.BAD_JSON, "Failed to parse the request body as JSON: "
                             f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise BodyError(Error.BAD_JSON, f"Failed to parse the request body as JSON: {exc}") from None
    if _too_deep(data):
        raise BodyError(Error.BAD_JSON, RECURSION_ERROR)
    if _SURROGATE_ESCAPE.search(text) and _lone_surrogate(data):
        raise BodyError(Error.BAD_JSON, LONE_SURROGATE)
    return data, text


def _path(loc: tuple[int | str, ...]) -> str:
    """serde_path_to_error's notation: `parameters.stop[0]`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe(error: dict[str, Any]) -> tuple[str, str | None]:
    """One pydantic error as `<path>: <message>`, with serde's wording for a missing field; and the bad field's
    path (None for the body itself)."""
    loc = tuple(error["loc"])
    if error["type"] == "missing":
        message = f"missing field `{loc[-1]}`"
        loc, field = loc[:-1], _path(loc)
    else:
        message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
        field = _path(loc) or None
    return (f"{_path(loc)}: {message}" if loc else message), field


def deserialize(model: type[M], data: Any) -> M:
    """Validate parsed JSON against `model`, or a 422 plain-text error naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        text, field = _describe(exc.errors(include_url=False)[0])
        raise BodyError(Error.WRONG_SHAPE, DESERIALIZE_PREFIX + text, field) from None


def parse_body(request: Request, limit: int, model: type[M]) -> M:
    """Read, parse and validate the request body as `model`."""
    data, _ = read_json(request, limit)
    return deserialize(model, data)
