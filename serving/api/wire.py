"""Compact JSON on the wire, with keys in the order they were built, as serde writes it."""

from __future__ import annotations

import json
from typing import Any, Mapping

from flask import Response


def dumps(value: Any) -> str:
    """Compact JSON (no spaces, raw UTF-8), the way serde writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_response(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response whose keys keep the order they were built in."""
    return Response(dumps(value), status, headers=dict(headers or {}), content_type="application/json")
