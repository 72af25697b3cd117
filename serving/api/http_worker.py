"""gunicorn's gevent worker, hardened: read deadlines, a 413 that the client reads, and JSON framework errors.

- A request's head must arrive within gunicorn's keep-alive window (its own rule) and its body within
  REQUEST_READ_TIMEOUT seconds of the head: a body that trickles or stops short of its `Content-Length` gets 408
  and its connection is closed, so half-sent requests cannot hold connections (and starve `/ping`) for ever.
- A body over PAYLOAD_LIMIT gets no `100 Continue`; after the app's 413 the connection is half-closed and what the
  client still sends is read and dropped (until the deadline), so the client reads the 413 instead of a reset.
- A body the app left unread is drained within the same deadline before the connection is reused, else closed.
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
           431: "Request Header Fields Too Large", 500: "Internal Server Error"}


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

    def init_process(self) -> None:
        """Read the deadlines and limits once, then run."""
        self.server_config: ServerConfig = from_env().server
        super().init_process()

    def handle_request(self, listener_name: Any, req: Any, sock: socket.socket, addr: Any) -> bool:
        """Serve one request under its body deadline; close the connection when its body was not all read."""
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
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        try:
            client.sendall(head.encode("latin-1") + body)
        except OSError:
            self.log.debug("Failed to send error message.")
            return
        _linger(client)


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
