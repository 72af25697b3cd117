"""The engine process's IO thread: the ZeroMQ socket the HTTP workers talk to, and the tokenizer process.

The step loop holds the main thread for a whole step (tens of milliseconds, hundreds with a long prompt chunk).
When the loop also read the socket and took the tokenizer's results, a request that arrived during a step waited
for its end to be read, then for the end of the next one to come back tokenized, and was scheduled a step after
that: at 64 concurrent streams of the mixed-length workload, 197 ms (p50) from read to tokenized and 576 ms from
read to first token. The courier reads every message as it arrives, hands new requests and tokenize calls to the
tokenizer process at once, and itself answers what needs no engine (tokenize calls, and requests refused by the
tokenizer or by the overload limit); what needs the engine waits in `inbox`, which the loop empties before each
step. The loop's outgoing batches come through an inproc socket, since a ZeroMQ socket must stay on one thread.
Its own work is a few decodes and sends per request, and its blocked poll holds no GIL.

Shutting down is two calls from the loop's thread: `seal` (from then on every generate request still with the
tokenizer or newly read is refused as `unavailable` here, and nothing new enters `inbox`), then `close` (the
batches posted so far go out, then the socket closes).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import zmq

from serving.messages import (
    AbortRequest,
    ClientMessage,
    EngineEvent,
    ErrorKind,
    EventBatch,
    Failed,
    GenerateRequest,
    TokenizeRequest,
    TokenizeResult,
    decode_client_message,
    encode,
)

if TYPE_CHECKING:
    from serving.engine.tokenizer_process import TokenizerProcess
    from serving.engine.validation import Prompt

logger = logging.getLogger(__name__)

SHUTDOWN_MESSAGE = "The server is shutting down"
_SEAL, _CLOSE = b"seal", b"close"  # one-frame control messages on the outlet (batches have two frames)


@dataclass(frozen=True)
class Delivery:
    """A message for the engine, from the HTTP worker `owner`; a generate request comes with its prompt as the
    tokenizer process checked it (None without a tokenizer process: the engine checks it)."""

    owner: bytes
    message: ClientMessage
    prompt: Prompt | None = None


class Courier:
    """The socket and the tokenizer process, served on a thread of their own."""

    def __init__(self, context: zmq.Context, address: str, tokenizer: TokenizerProcess | None) -> None:
        """Bind `address` now (so that an error shows at once); `start` serves it."""
        self.tokenizer = tokenizer
        self.inbox: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.socket.bind(address)
        outlet = f"inproc://courier-{id(self)}"
        self._pull = context.socket(zmq.PULL)  # the courier's end
        self._pull.bind(outlet)
        self._push = context.socket(zmq.PUSH)  # the loop's end
        self._push.setsockopt(zmq.LINGER, 0)  # what the courier never took is dropped at close, not waited for
        self._push.connect(outlet)
        self._sealed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="courier", daemon=True)

    def start(self) -> None:
        """Serve the socket on the courier's thread."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether its thread is serving (it ends only after `close`, or when it failed)."""
        return self._thread.is_alive()

    def pending(self) -> int:
        """Requests and calls with the tokenizer process."""
        return len(self.tokenizer) if self.tokenizer is not None else 0

    def post(self, owner: bytes, events: list[EngineEvent]) -> None:
        """Send `owner` one batch of events (from the loop's thread)."""
        self._push.send_multipart([owner, encode(EventBatch(events=tuple(events)))])

    def seal(self) -> None:
        """Stop handing generate requests to the engine, refusing them as `unavailable`; returns once the courier
        has (everything in `inbox` by then is all it will ever hold)."""
        self._push.send(_SEAL)
        self._sealed.wait(5.0)

    def close(self) -> None:
        """Send the batches posted so far, close the socket and end the thread."""
        if self._thread.is_alive():
            self._push.send(_CLOSE)
            self._thread.join(5.0)
        else:  # never started, or failed (its sockets are then closed already: closing again does nothing)
            self.socket.close()
            self._pull.close(linger=0)
        self._push.close()

    def _serve(self) -> None:
        """The courier's thread: until `close`, relay what arrives on the socket, the outlet and the tokenizer."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        if self.tokenizer is not None:
            poller.register(self.tokenizer.wakeup_fd, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if self.socket in ready:
                    self._read()
                if self.tokenizer is not None and self.tokenizer.wakeup_fd in ready:  # a job is done
                    self._take_tokenized()
                if self._pull in ready and not self._relay():
                    return
        except Exception:
            logger.exception("the engine's courier thread failed")
            raise
        finally:
            self.socket.setsockopt(zmq.LINGER, 1000)  # let the last batches go out
            self.socket.close()
            self._pull.close(linger=0)

    def _relay(self) -> bool:
        """Send the loop's waiting batches; False once it asked to close."""
        while True:
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            if frames == [_CLOSE]:
                return False
            if frames == [_SEAL]:
                self._seal()
                continue
            self.socket.send_multipart(frames)

    def _seal(self) -> None:
        """Refuse every generate request the tokenizer holds, and from now on every new one."""
        if self.tokenizer is not None:
            for job in self.tokenizer.drop_all():
                if isinstance(job.message, GenerateRequest):
                    self._answer(job.owner, unavailable(job.message.request_id))
        self._sealed.set()

    def _read(self) -> None:
        """Handle every message already waiting on the socket, without blocking."""
        while True:
            try:
                owner, payload = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = decode_client_message(payload)
            except msgspec.DecodeError:
                logger.error("dropping an undecodable message from %r", owner)
                continue
            self._handle(owner, message)

    def _handle(self, owner: bytes, message: ClientMessage) -> None:
        """Pass one message on: to the tokenizer process, to the engine, or straight back."""
        if isinstance(message, GenerateRequest):
            logger.debug("request %s received", message.request_id)
            if self._sealed.is_set():
                self._answer(owner, unavailable(message.request_id))
            elif self.tokenizer is None:
                self.inbox.put(Delivery(owner, message))
            elif len(self.tokenizer) >= self.tokenizer.max_jobs:
                self._answer(owner, Failed(message.request_id, ErrorKind.OVERLOADED, "Model is overloaded"))
            else:
                self.tokenizer.submit(message.request_id, message, owner)
            return
        if self.tokenizer is not None:
            if isinstance(message, TokenizeRequest):
                self.tokenizer.submit(message.call_id, message, owner)
                return
            if isinstance(message, AbortRequest):
                self.tokenizer.cancel(message.request_id)
        self.inbox.put(Delivery(owner, message))

    def _take_tokenized(self) -> None:
        """Pass on what the tokenizer process finished: answers to tokenize calls and refusals go back at once,
        checked requests to the engine."""
        assert self.tokenizer is not None
        for job, result in self.tokenizer.finished():
            if isinstance(result, (TokenizeResult, Failed)):
                self._answer(job.owner, result)
            elif self._sealed.is_set():
                self._answer(job.owner, unavailable(job.message.request_id))
            else:
                assert isinstance(job.message, GenerateRequest)
                self.inbox.put(Delivery(job.owner, job.message, result))

    def _answer(self, owner: bytes, event: EngineEvent) -> None:
        """Send one event to its HTTP worker (a batch of one)."""
        self.socket.send_multipart([owner, encode(EventBatch(events=(event,)))])


def unavailable(request_id: str) -> Failed:
    """The failure of a request the engine will not run, since it is stopping."""
    return Failed(request_id, ErrorKind.UNAVAILABLE, SHUTDOWN_MESSAGE)
