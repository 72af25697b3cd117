"""The engine events of one HTTP request's engine requests, merged in arrival order and regrouped per token.

The engine client's reader puts every event of every engine request (`n`, `best_of`, a list of prompts run side
by side) straight onto the feed's one queue, tagged with the request's index (`EngineClientProtocol.open`): one
relay per HTTP request, no greenlet per engine request. (Under gunicorn's gevent worker, whose monkey-patching
makes `threading` and `queue` cooperative, the threads here are greenlets.) Closing the feed closes every engine
request still running at once, which aborts it in the engine, so a request whose client went away while queued
is never prefilled. Under gunicorn a watcher polls the HTTP client's socket while the requests run and closes the
feed when the client hangs up, so a disconnect is noticed at once even when nothing is being written (queued, or
a non-streaming request). The reader waits without a timeout (a timed wait costs a timer per token under gevent);
a streaming feed's ticker puts a keep-alive marker on the queue when no event came for the keep-alive interval.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

from flask import has_request_context, request as http_request

from serving.api.errors import ApiError
from serving.api.requestlog import current_record
from serving.client import EngineClientProtocol
from serving.messages import Admitted, ErrorKind, Failed, Finished, GenerateRequest, Thinking, TokenDelta

logger = logging.getLogger(__name__)

_IDLE = object()  # put by the keep-alive ticker
_CLOSED = object()  # put by `close`: wakes a reader whose feed was closed under it (the client hung up)
# A hang-up wakes the watcher at once; this bounds only how long it outlives its feed (each look costs a timer).
WATCH_INTERVAL = 2.0


class AdmittedFacts:
    """What the engine's `Admitted` said about a request's prompt (`admitted`, when it came)."""

    admitted: Admitted | None

    @property
    def prompt_text(self) -> str | None:
        """The decoded prompt, when the request asked for `echo`."""
        return None if self.admitted is None else self.admitted.prompt_text

    @property
    def thinking(self) -> Thinking:
        """Where the request's chat prompt left a reasoning model's thinking section."""
        return Thinking.UNOPENED if self.admitted is None else self.admitted.thinking


@dataclass(frozen=True)
class Step(AdmittedFacts):
    """One generated token of request `index`; `finished` is set on that request's last token, `admitted` on its
    first."""

    index: int
    delta: TokenDelta
    finished: Finished | None = None
    admitted: Admitted | None = None


@dataclass(frozen=True)
class Generation(AdmittedFacts):
    """One engine request's whole output."""

    deltas: list[TokenDelta]
    finished: Finished
    admitted: Admitted | None = None

    def mean_logprob(self) -> float:
        """The mean log-probability of the generated tokens, which ranks `best_of` sequences."""
        logprobs = [delta.token.logprob for delta in self.deltas if delta.token.logprob is not None]
        return sum(logprobs) / len(logprobs) if logprobs else 0.0


class EventFeed:
    """The events of `requests`, tagged with each request's index."""

    def __init__(self, client: EngineClientProtocol, requests: Sequence[GenerateRequest]) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._closed = threading.Event()
        self._first: tuple[int, object] | None = None
        self._last_item = time.monotonic()
        self._client = client
        self._record = current_record()
        self._ids = [request.request_id for request in requests]
        self._live = set(self._ids)
        self._running = len(requests)
        for index, request in enumerate(requests):
            try:
                client.open(request, self._queue, index)
            except Exception as exc:  # handed to the reader, which reports it
                self._queue.put((index, exc))
        sock = http_request.environ.get("gunicorn.socket") if has_request_context() else None
        if sock is not None:
            threading.Thread(target=self._watch, args=(sock,), daemon=True, name="feed-watch").start()

    def _watch(self, sock: socket.socket) -> None:
        """Close the feed when the HTTP client hangs up while its requests run."""
        while not self._closed.is_set() and self._live:
            try:
                readable, _, _ = select.select([sock], [], [], WATCH_INTERVAL)
                if not readable:
                    continue
                if self._closed.is_set():
                    # The response is over and gunicorn may already be reading this keep-alive connection's next
                    # request: a second greenlet waiting in recv on it raises ConcurrentObjectUseError there.
                    return
                if sock.recv(1, socket.MSG_PEEK):
                    return  # the client sent more (a pipelined request): it is still there, stop watching
            except (OSError, ValueError):
                pass
            logger.debug("client hung up; aborting %s", sorted(self._live))
            self.close()
            return

    def _next(self) -> tuple[int, object]:
        """The next event (or the ticker's `_IDLE` marker)."""
        if self._first is not None:
            item, self._first = self._first, None
        else:
            item = self._queue.get()
        self._last_item = time.monotonic()
        return item

    def _tick(self, interval: float) -> None:
        """Put `_IDLE` on the queue whenever `interval` seconds pass with no item taken, until the feed closes."""
        while True:
            wait = self._last_item + interval - time.monotonic()
            if wait <= 0:
                self._queue.put((0, _IDLE))
                wait = interval
            if self._closed.wait(wait):
                return

    def first(self, every_failure: bool = False) -> None:
        """Wait for the first event and keep it; raise what must be an HTTP error rather than a stream event.

        TGI renders the chat template before it starts streaming, so a template failure is an HTTP 422; an
        exception in the engine client before anything was sent is an HTTP 500. With `every_failure` (OpenAI's
        routes) any failure that comes first, a validation error at admission included, is an HTTP error.
        """
        self._first = self._next()
        event = self._first[1]
        if isinstance(event, Failed) and (every_failure or event.kind == ErrorKind.TEMPLATE):
            self.close()
            raise ApiError.from_failed(event)
        if isinstance(event, Exception):
            self.close()
            raise event

    def _ended(self, index: int) -> None:
        """Note that request `index` sent its last event."""
        self._running -= 1
        self._live.discard(self._ids[index])

    def steps(self, keepalive: float | None) -> Iterator[Step | ApiError | None]:
        """Each token as it arrives (a request's last one with its `Finished`, which carries it); None after each
        `keepalive` seconds without one. An `ApiError` (a `Failed` event, an exception, or `dropped` when the
        hang-up watcher closed the feed) is the last item.
        """
        if keepalive is not None:
            threading.Thread(target=self._tick, args=(keepalive,), daemon=True, name="feed-tick").start()
        admitted: dict[int, Admitted] = {}
        while self._running:
            index, event = self._next()
            if event is _IDLE:
                yield None
                continue
            error = None
            if event is _CLOSED:  # closed under us: the HTTP client went away
                error = ApiError.dropped()
            elif isinstance(event, Exception):
                self._ended(index)
                error = ApiError.from_exception(event)
            elif isinstance(event, Failed):
                self._ended(index)
                error = ApiError.from_failed(event)
            elif isinstance(event, Admitted):
                admitted[index] = event
            elif isinstance(event, TokenDelta):
                yield Step(index, event, admitted=admitted.pop(index, None))
            elif isinstance(event, Finished):
                self._ended(index)
                if self._record is not None:
                    self._record.finished.append(event)
                yield Step(index, TokenDelta(event.request_id, event.token, event.top_tokens), event,
                           admitted.pop(index, None))
            if error is not None:
                if self._record is not None:
                    self._record.error_type = error.error_type
                yield error
                return

    def collect(self) -> list[Generation]:
        """Every request's whole output, in request order; the first error is raised."""
        deltas: dict[int, list[TokenDelta]] = {}
        finished: dict[int, Finished] = {}
        admitted: dict[int, Admitted] = {}
        try:
            for step in self.steps(None):
                if isinstance(step, ApiError):
                    raise step
                assert step is not None
                deltas.setdefault(step.index, []).append(step.delta)
                if step.admitted is not None:
                    admitted[step.index] = step.admitted
                if step.finished is not None:
                    finished[step.index] = step.finished
        finally:
            self.close()
        return [Generation(deltas[index], finished[index], admitted.get(index)) for index in sorted(finished)]

    def close(self) -> None:
        """Close (abort) every request that has not ended, at once, and wake the reader."""
        if self._closed.is_set():
            return
        self._closed.set()
        for request_id in list(self._live):
            try:
                self._client.close(request_id)
            except Exception:
                logger.exception("closing %s failed", request_id)
        self._queue.put((-1, _CLOSED))
