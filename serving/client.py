"""The HTTP workers' handle on the engine process: generate, tokenize, info and health over a local socket."""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Iterator, Protocol

import msgspec

from serving.messages import (
    AbortRequest,
    EngineEvent,
    Failed,
    Finished,
    GenerateRequest,
    HealthRequest,
    HealthResult,
    InfoRequest,
    ModelInfo,
    TokenizeRequest,
    TokenizeResult,
    decode_event_batch,
    encode,
)

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0
# /ping must answer within SageMaker's 2 s even while the engine is in a long step (a big prefill on a slow device):
# a health call that is not answered within HEALTH_ANSWER_WAIT is judged by the engine's recent activity instead.
HEALTH_ANSWER_WAIT = 0.5
BUSY_GRACE = 30.0  # the engine counts as alive while it sent this worker something within this many seconds
_CANCELLED = object()  # put on a request's queue by `abort`: its generator ends and aborts the request


class EngineClientProtocol(Protocol):
    """What the API layer needs from the engine; tests substitute a fake with the same methods."""

    def generate(self, request: GenerateRequest) -> Iterator[EngineEvent]:
        """Yield `Admitted`, then `TokenDelta`s, then one `Finished`; or a `Failed` at any point, which ends it.

        Closing the iterator early (the HTTP client went away) aborts the request in the engine.
        """
        ...

    def abort(self, request_id: str) -> None:
        """End the generation of `request_id` now, even while it waits for its next event, aborting it in the engine."""
        ...

    def tokenize(self, request: TokenizeRequest) -> TokenizeResult:
        """Tokenize text or a chat; a failure comes back in `TokenizeResult.error`."""
        ...

    def info(self) -> ModelInfo:
        """The loaded model's facts and resolved limits (cached after the first call)."""
        ...

    def health(self, timeout: float = 1.5) -> HealthResult | None:
        """The engine's health, or None when it did not answer within `timeout` seconds."""
        ...


class EngineUnavailable(RuntimeError):
    """The engine did not answer a call in time."""


class EngineClient:
    """`EngineClientProtocol` over a ZeroMQ DEALER socket, for one gevent worker process.

    The socket and its reader greenlet are created on first use, so a client built before gunicorn forks
    never shares a socket between processes. One reader greenlet routes each event of each `EventBatch` to
    the queue of the request (or call) it belongs to; nothing here blocks the gevent hub.
    """

    def __init__(self, address: str) -> None:
        self._address = address
        self._socket = None
        self._pid: int | None = None
        self._queues: dict[str, "gevent.queue.Queue"] = {}
        self._info: ModelInfo | None = None
        self._last_message = 0.0
        self._last_health: HealthResult | None = None

    def _ensure_connected(self) -> None:
        """Create the socket and reader greenlet in this process (again after a fork)."""
        if self._socket is not None and self._pid == os.getpid():
            return
        import gevent
        import zmq.green as zmq

        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, f"w{os.getpid()}-{uuid.uuid4().hex[:8]}".encode())
        sock.connect(self._address)
        self._socket = sock
        self._pid = os.getpid()
        self._queues = {}
        gevent.spawn(self._read_loop, sock)

    def _read_loop(self, sock) -> None:
        """Route every incoming event to the queue waiting for it; events for nobody are dropped."""
        while True:
            try:
                batch = decode_event_batch(sock.recv())
            except msgspec.DecodeError:
                logger.exception("undecodable message from the engine")
                continue
            self._last_message = time.monotonic()
            for event in batch.events:
                key = getattr(event, "request_id", None) or getattr(event, "call_id")
                queue = self._queues.get(key)
                if queue is not None:
                    queue.put(event)

    def _send(self, message: object) -> None:
        """Send one message to the engine."""
        self._ensure_connected()
        self._socket.send(encode(message))

    def _open(self, key: str) -> "gevent.queue.Queue":
        """Register a queue for the events of one request or call."""
        import gevent.queue

        self._ensure_connected()
        queue: gevent.queue.Queue = gevent.queue.Queue()
        self._queues[key] = queue
        return queue

    def _call(self, message: TokenizeRequest | InfoRequest | HealthRequest, timeout: float):
        """Send a request that has exactly one reply and wait for it."""
        import gevent.queue

        queue = self._open(message.call_id)
        try:
            self._send(message)
            return queue.get(timeout=timeout)
        except gevent.queue.Empty:
            raise EngineUnavailable(f"the engine did not answer within {timeout:g} s") from None
        finally:
            self._queues.pop(message.call_id, None)

    def generate(self, request: GenerateRequest) -> Iterator[EngineEvent]:
        """Yield the request's events until `Finished` or `Failed`; closing early aborts it in the engine."""
        queue = self._open(request.request_id)
        done = False
        try:
            self._send(request)
            while not done:
                event = queue.get()
                if event is _CANCELLED:
                    return
                done = isinstance(event, (Finished, Failed))
                yield event
        finally:
            self._queues.pop(request.request_id, None)
            if not done:
                self._send(AbortRequest(request_id=request.request_id))

    def abort(self, request_id: str) -> None:
        """Wake the request's generator, which ends and sends `AbortRequest` (a request still queued is never run)."""
        queue = self._queues.get(request_id)
        if queue is not None:
            queue.put(_CANCELLED)

    def tokenize(self, request: TokenizeRequest) -> TokenizeResult:
        """Tokenize text or a chat in the engine."""
        return self._call(request, timeout=CALL_TIMEOUT)

    def info(self) -> ModelInfo:
        """The loaded model's facts, fetched once."""
        if self._info is None:
            self._info = self._call(InfoRequest(call_id=uuid.uuid4().hex), timeout=CALL_TIMEOUT).info
        return self._info

    def health(self, timeout: float = 1.5) -> HealthResult | None:
        """The engine's health, or None when it does not answer in time.

        A busy engine answers only between steps. When no answer came within HEALTH_ANSWER_WAIT, the last answer
        stands if it was healthy and the engine has sent this worker anything within BUSY_GRACE seconds (it is
        working, not gone); otherwise the call waits for the rest of `timeout`.
        """
        import gevent.queue

        call = HealthRequest(call_id=uuid.uuid4().hex)
        deadline = time.monotonic() + timeout
        queue = self._open(call.call_id)
        try:
            self._send(call)
            try:
                result = queue.get(timeout=min(timeout, HEALTH_ANSWER_WAIT))
            except gevent.queue.Empty:
                last = self._last_health
                if last is not None and last.healthy and time.monotonic() - self._last_message < BUSY_GRACE:
                    return last
                try:
                    result = queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except gevent.queue.Empty:
                    return None
        finally:
            self._queues.pop(call.call_id, None)
        self._last_health = result
        return result
