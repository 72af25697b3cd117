"""Who may call what, as TGI's router decides it: `API_KEY` bearer auth on the generation routes, and CORS.

With an API key, `POST` to a generation route needs `Authorization: Bearer <key>` or gets 401 with an empty
body: the scheme word is case-insensitive, the key is compared exactly and in constant time (TGI lowercases the
whole header, so a key differing in case passed there). Health, info, metrics, models and docs stay open
(API.md §0.2); `/chat_tokenize`, which TGI leaves open, needs the key too: it costs as much as a prompt, and so
do the LoRA adapter routes (`/adapters` with any method, vLLM's load and unload), which change what is served.
CORS follows tower-http's layer as TGI configures it: methods GET and POST, the one header `content-type`, origin
`*` unless `CORS_ALLOW_ORIGIN` lists origins (then only a listed `Origin` is echoed).
A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered before routing and auth, on any path.
"""

from __future__ import annotations

import hmac

from flask import Flask, Response, request

from serving.config import ServerConfig

PROTECTED_PATHS = frozenset({
    "/", "/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions", "/vertex", "/invocations",
    "/tokenize", "/chat_tokenize",
})
ADAPTER_PATHS = frozenset({"/adapters", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"})
ALLOW_METHODS = "GET,POST"
ALLOW_HEADERS = "content-type"
VARY = "origin, access-control-request-method, access-control-request-headers"


def _empty(status: int) -> Response:
    """A response with no body and no content type, as axum sends a bare status."""
    response = Response(b"", status)
    del response.headers["Content-Type"]
    return response


def _protected() -> bool:
    """Whether the current request needs the API key."""
    path = request.path
    if path in ADAPTER_PATHS or path.startswith("/adapters/"):
        return True
    return request.method == "POST" and path in PROTECTED_PATHS


class AccessControl:
    """The API key check and the CORS headers of one app."""

    def __init__(self, config: ServerConfig) -> None:
        self.expected = None if config.api_key is None else config.api_key.encode("utf-8")
        self.origins = config.cors_allow_origins

    def allowed_origin(self) -> str | None:
        """The `Access-Control-Allow-Origin` value for this request, or None to send none."""
        if not self.origins:
            return "*"
        origin = request.headers.get("Origin")
        return origin if origin in self.origins else None

    def preflight(self) -> Response | None:
        """Answer a CORS preflight; None lets any other request through."""
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        response = _empty(200)
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        return response

    def authorize(self) -> Response | None:
        """401 for a protected route without the right bearer token; None lets the request through."""
        if self.expected is None or not _protected():
            return None
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")  # WSGI headers are latin-1
        if scheme.lower() == "bearer" and hmac.compare_digest(key.encode("latin-1", "replace"), self.expected):
            return None
        return _empty(401)

    def add_cors_headers(self, response: Response) -> Response:
        """The allowed origin (when there is one) and `Vary` on every response."""
        origin = self.allowed_origin()
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = VARY
        return response


def register(app: Flask, config: ServerConfig) -> None:
    """Install CORS (outermost, as in TGI) and the API key check on `app`."""
    access = AccessControl(config)
    app.before_request(access.preflight)
    app.before_request(access.authorize)
    app.after_request(access.add_cors_headers)
