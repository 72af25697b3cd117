"""gunicorn's gevent worker, hardened: read deadlines, a 413 that the client reads, and JSON framework errors.

- A request's head must arrive within gunicorn's keep-alive window (its own rule) and its body within
  REQUEST_READ_TIMEOUT seconds of the head: a body that trickles or stops short of its `Content-Length` gets 408
  and its connection is closed, so half-sent requests cannot hold connections (and starve `/ping`) for ever.
- A body over PAYLOAD_LIMIT gets no `100 Continue`; after the app's 413 the connection is half-closed and what the
  client still sends is read and dropped (until the deadline), so the client reads the 413 instead of a reset.
- A body the app left unread is drained within the same deadline before the connection is reused, else closed.
- Beyond MAX_CONNECTIONS a worker keeps RESERVED_CONNECTIONS more for health checks: on those, a request head
  must come within RESERVED_HEAD_TIMEOUT, `/ping` and `/health` are served (then the connection is closed) and
  anything else gets 503 at once, so a flood that fills every regular connection still leaves `/ping` answering
  (SageMaker pings the port it invokes, from few addresses: a per-client cap would throttle SageMaker itself).
- Errors that gunicorn answers itself before the app runs (a malformed request line or header, a URI or headers
  too long) are JSON in TGI's shape, or OpenAI's under `/v1`, instead of gunicorn's HTML pages.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import gevent
from gunicorn.http import errors as http_errors
from gunicorn.http.body import LengthReader
from gunicorn.workers.ggevent import GeventWorker

from serving.api.catalogue import Error
from serving.api.errors import ApiError, BodyError
from serving.api.wire import dumpb
from serving.config import ServerConfig, from_env

DRAIN_CHUNK = 64 * 1024
RESERVED_CONNECTIONS = 100
RESERVED_HEAD_TIMEOUT = 2.0
HEALTH_PATHS = frozenset({"/ping", "/health"})
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20
# gunicorn's request-parsing errors with their own status; every other parse error (an unknown transfer coding
# included, which gunicorn answers 501: a caller's mistake is never a 5xx here) is a 400.
PARSE_ERRORS: tuple[tuple[type[Exception], Error], ...] = (
    (http_errors.LimitRequestLine, Error.URI_TOO_LONG),
    (http_errors.LimitRequestHeaders, Error.HEADERS_TOO_LARGE),
    (http_errors.ExpectationFailed, Error.EXPECTATION_FAILED),
)
REASONS = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long", 417: "Expectation Failed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


class DeadlineReader:
    """A request body reader whose reads all end by `deadline` (monotonic seconds)."""

    def __init__(self, reader: Any, deadline: float, request: Any) -> None:
        self._reader = reader
        self._request = request
        self.deadline = deadline
        self.expired = False

    def read(self, size: int) -> bytes:
        """Read up to `size` bytes before the deadline; a timeout is a 408, a malformed body (chunking) a 400."""
        remaining = self.deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise gevent.Timeout()
            with gevent.Timeout(remaining):
                return self._reader.read(size)
        except gevent.Timeout:
            self.expired = self._request.must_close = True
            raise BodyError(Error.REQUEST_TIMEOUT, "Failed to buffer the request body: timed out") from None
        except http_errors.ParseException as exc:
            self._request.must_close = True
            raise BodyError(Error.BAD_REQUEST, f"Failed to buffer the request body: {exc}") from None


def framework_error(exc: BaseException, path: str | None) -> tuple[int, bytes]:
    """The status and JSON body for an error that gunicorn met before the app ran."""
    if isinstance(exc, http_errors.ParseException):
        kind = next((kind for cls, kind in PARSE_ERRORS if isinstance(exc, cls)), Error.BAD_REQUEST)
        error = ApiError(kind, f"Bad request: {exc}")
    else:
        error = ApiError(Error.INTERNAL, "Internal server error")
    openai = path is not None and path.startswith("/v1/")
    return error.status(openai), dumpb(error.openai_body() if openai else error.tgi_body())


class HttpWorker(GeventWorker):
    """The gevent worker that `python -m serving` runs gunicorn with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.worker_connections += RESERVED_CONNECTIONS  # the size of gevent's connection pool
        self.connections = 0
        self.reserved: set[int] = set()  # the greenlets serving connections beyond MAX_CONNECTIONS

    def init_process(self) -> None:
        """Read the deadlines and limits once, then run."""
        self.server_config: ServerConfig = from_env().server
        super().init_process()

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        """Serve one connection, as a reserved one when the regular ones are all taken."""
        self.connections += 1
        current = id(gevent.getcurrent())
        if self.connections > self.cfg.worker_connections:
            self.reserved.add(current)
        try:
            super().handle(listener, client, addr)
        finally:
            self.connections -= 1
            self.reserved.discard(current)

    def timeout_ctx(self) -> gevent.Timeout:
        """How long a request head may take: the keep-alive window, or RESERVED_HEAD_TIMEOUT on a reserved
        connection."""
        if id(gevent.getcurrent()) in self.reserved:
            return gevent.Timeout(RESERVED_HEAD_TIMEOUT, False)
        return super().timeout_ctx()

    def handle_request(self, listener_name: Any, req: Any, sock: socket.socket, addr: Any) -> bool:
        """Serve one request under its body deadline; close the connection when its body was not all read."""
        if id(gevent.getcurrent()) in self.reserved:
            if req.method != "GET" or req.path not in HEALTH_PATHS:
                error = ApiError(Error.TOO_MANY_CONNECTIONS, "Too many connections: only health checks are served")
                _send_json(sock, error.status(), dumpb(error.tgi_body()))
                raise StopIteration()
            req.must_close = True  # free the reserved connection for the next health check
        config = self.server_config
        too_large = isinstance(req.body.reader, LengthReader) and req.body.reader.length > config.payload_limit
        if too_large:  # the app answers 413 at once: no "100 Continue" first, and the connection ends after it
            req._expected_100_continue, req.must_close = False, True
        deadline = time.monotonic() + config.request_read_timeout
        reader = req.body.reader = DeadlineReader(req.body.reader, deadline, req)
        kept = super().handle_request(listener_name, req, sock, addr)
        if too_large:
            _shut_write(sock)
        if too_large or reader.expired or not _drained(req.body):
            raise StopIteration()
        return kept

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        """gunicorn's own error answers, as JSON."""
        if isinstance(exc, http_errors.ParseException):
            self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        else:
            self.log.exception("Error handling request")
        status, body = framework_error(exc, getattr(req or getattr(exc, "req", None), "path", None))
        if _send_json(client, status, body):
            _linger(client)


def _send_json(sock: socket.socket, status: int, body: bytes) -> bool:
    """Write a whole JSON response that closes the connection; whether it could be written."""
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    try:
        sock.sendall(head.encode("latin-1") + body)
    except OSError:
        return False
    return True


def _shut_write(sock: socket.socket) -> None:
    """Half-close: the client sees the end of the response while what it still sends is read."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _linger(sock: socket.socket) -> None:
    """Half-close, then read and drop what the client still sends for a moment (LINGER_BYTES at most), so that
    unread request bytes do not turn the close into a reset before the client has read the answer."""
    _shut_write(sock)
    received = 0
    try:
        with gevent.Timeout(LINGER_SECONDS, False):
            while received < LINGER_BYTES and (chunk := sock.recv(DRAIN_CHUNK)):
                received += len(chunk)
    except OSError:
        pass


def _drained(body: Any) -> bool:
    """Read and drop what is left of a body (within its reader's deadline); whether it ended cleanly."""
    try:
        while body.read(DRAIN_CHUNK):
            pass
    except (BodyError, OSError):
        return False
    return True
