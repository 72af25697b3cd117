"""The engine process main: a ZeroMQ ROUTER in front of `LLMEngine`, the only IO on the engine side.

Each loop turn drains every message waiting on the socket (new requests, aborts, calls), hands new requests
and tokenize calls to the tokenizer process (`tokenizer_process`: big prompts never pause the steps), queues the
requests it has validated, runs one engine step when there is work, and sends each HTTP worker one `EventBatch`
with everything the step made for it. Requests waiting for the tokenizer count as waiting, and at most
MAX_CONCURRENT_REQUESTS of them wait (more are `overloaded`). When idle it blocks on the socket and the
tokenizer's wakeup pipe, so it costs nothing. Every turn (at most once a HEARTBEAT_INTERVAL) it touches
the heartbeat file, whose age tells the launcher when the engine is stuck in a step. On SIGTERM every request
still queued or running ends with an `unavailable` failure, which its HTTP worker reports. LoRA adapter calls:
an unregister is answered at once; a register when its adapter's files are checked (and loaded), on the engine's
load thread (`engine/adapters.py`), so its `AdapterResult` goes out on a later turn.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import defaultdict
from types import FrameType
from typing import TYPE_CHECKING

import msgspec
import zmq

from serving.config import EngineConfig, from_env
from serving.logs import setup_logging
from serving.messages import (
    AbortRequest,
    ClientMessage,
    EngineEvent,
    ErrorKind,
    EventBatch,
    Failed,
    Finished,
    GenerateRequest,
    HealthRequest,
    InfoRequest,
    InfoResult,
    RegisterAdapterRequest,
    TokenizeRequest,
    TokenizeResult,
    UnregisterAdapterRequest,
    decode_client_message,
    encode,
)

if TYPE_CHECKING:
    from serving.engine.engine import LLMEngine
    from serving.engine.tokenizer_process import TokenizerProcess

logger = logging.getLogger(__name__)

IDLE_POLL_MS = 200
HEARTBEAT_INTERVAL = 0.5


class EngineWorker:
    """Owns the socket and the routing of events back to the worker that asked."""

    def __init__(self, engine: LLMEngine, address: str, heartbeat_path: str | None = None,
                 tokenizer: TokenizerProcess | None = None) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.heartbeat_path = heartbeat_path
        self._last_beat = 0.0
        self._last_state: tuple[int, int] = (0, 0)
        self.address = address
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.socket.bind(address)
        self.owners: dict[str, bytes] = {}
        self.adapter_calls: dict[str, bytes] = {}  # register calls waiting for their adapter's load
        self.outbox: dict[bytes, list[EngineEvent]] = defaultdict(list)
        self.running = True

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: finish the current turn and leave the loop."""
        logger.info("engine received signal %d, stopping", signum)
        self.running = False

    def serve(self) -> None:
        """Run until stopped."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        if self.tokenizer is not None:
            poller.register(self.tokenizer.wakeup_fd, zmq.POLLIN)
        while self.running:
            timeout = 0 if self.engine.has_work() else IDLE_POLL_MS
            if poller.poll(timeout):
                self._drain()
            self._take_tokenized()
            if self.engine.has_work():
                self._route(self.engine.step())
            for result in self.engine.adapter_results():
                self.outbox[self.adapter_calls.pop(result.call_id)].append(result)
            self._log_state()
            self._flush()
            self._beat()
        self._route(self.engine.fail_all(ErrorKind.UNAVAILABLE, "The server is shutting down"))
        self._route([Failed(request_id, ErrorKind.UNAVAILABLE, "The server is shutting down")
                     for request_id in list(self.owners)])  # still with the tokenizer
        self._flush()
        self.engine.close()
        if self.tokenizer is not None:
            self.tokenizer.close()
        self.socket.setsockopt(zmq.LINGER, 1000)  # let those last events go out
        self.socket.close()
        self.context.term()
        if self.address.startswith("ipc://"):
            path = self.address[len("ipc://"):]
            if os.path.exists(path):
                os.unlink(path)

    def _log_state(self) -> None:
        """A debug line whenever the numbers of running or waiting sequences change."""
        state = self.engine.stats()
        if state != self._last_state:
            self._last_state = state
            logger.debug("scheduler: %d running, %d waiting, %d tokens reserved", *state,
                         self.engine.batch_tokens())

    def _beat(self) -> None:
        """Touch the heartbeat file (the loop turns: the engine is not stuck)."""
        now = time.monotonic()
        if self.heartbeat_path is None or now - self._last_beat < HEARTBEAT_INTERVAL:
            return
        self._last_beat = now
        try:
            with open(self.heartbeat_path, "a"):
                os.utime(self.heartbeat_path)
        except OSError:
            logger.exception("cannot touch the heartbeat file %s", self.heartbeat_path)

    def _drain(self) -> None:
        """Handle every message that is already waiting, without blocking."""
        while True:
            try:
                identity, payload = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = decode_client_message(payload)
            except msgspec.DecodeError:
                logger.error("dropping an undecodable message from %r", identity)
                continue
            self._handle(identity, message)

    def _handle(self, identity: bytes, message: ClientMessage) -> None:
        """Dispatch one client message to the engine."""
        if isinstance(message, GenerateRequest):
            logger.debug("request %s received", message.request_id)
            self.owners[message.request_id] = identity
            if self.tokenizer is None:
                self._route(self.engine.add_request(message))
            elif len(self.tokenizer) >= self.engine.limits.max_concurrent_requests:
                self._route([Failed(message.request_id, ErrorKind.OVERLOADED, "Model is overloaded")])
            else:
                self.tokenizer.submit(message.request_id, message, identity)
        elif isinstance(message, AbortRequest):
            self.owners.pop(message.request_id, None)
            if self.tokenizer is not None:
                self.tokenizer.cancel(message.request_id)
            self.engine.abort(message.request_id)
        elif isinstance(message, TokenizeRequest):
            if self.tokenizer is None:
                self.outbox[identity].append(self.engine.tokenize(message))
            else:
                self.tokenizer.submit(message.call_id, message, identity)
        elif isinstance(message, InfoRequest):
            self.outbox[identity].append(InfoResult(call_id=message.call_id, info=self.engine.info()))
        elif isinstance(message, RegisterAdapterRequest):
            result = self.engine.register_adapter(message.call_id, message.spec)
            if result is None:
                self.adapter_calls[message.call_id] = identity  # answered when its load ends
            else:
                self.outbox[identity].append(result)
        elif isinstance(message, UnregisterAdapterRequest):
            self.outbox[identity].append(self.engine.unregister_adapter(message.call_id, message.name))
        elif isinstance(message, HealthRequest):
            health = self.engine.health(message.call_id)
            if self.tokenizer is not None:
                health = msgspec.structs.replace(health, waiting=health.waiting + len(self.tokenizer))
            self.outbox[identity].append(health)

    def _take_tokenized(self) -> None:
        """Queue the requests the tokenizer process has validated, and send the tokenize answers."""
        if self.tokenizer is None:
            return
        for job, result in self.tokenizer.finished():
            if isinstance(result, TokenizeResult):
                self.outbox[job.owner].append(result)
            elif job.message.request_id not in self.owners:
                continue  # aborted meanwhile
            elif isinstance(result, Failed):
                self._route([result])
            else:
                self._route(self.engine.add_request(job.message, prompt=result))

    def _route(self, events: list[EngineEvent]) -> None:
        """Queue each request event for the worker that owns the request; forget finished requests."""
        for event in events:
            request_id = event.request_id
            identity = self.owners.get(request_id)
            if identity is None:
                continue
            self.outbox[identity].append(event)
            if isinstance(event, (Finished, Failed)):
                del self.owners[request_id]

    def _flush(self) -> None:
        """Send each worker one batch with everything queued for it."""
        for identity, events in self.outbox.items():
            self.socket.send_multipart([identity, encode(EventBatch(events=tuple(events)))])
        self.outbox.clear()


def run(config: EngineConfig) -> None:
    """Load the model, bind the socket and serve until SIGTERM or SIGINT."""
    from serving.engine.engine import LLMEngine
    from serving.engine.tokenizer_process import TokenizerProcess

    engine = LLMEngine.from_config(config)
    tokenizer = TokenizerProcess(engine.loaded.tokenizer, engine.limits)
    worker = EngineWorker(engine, config.engine_address, config.heartbeat_path, tokenizer)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    logger.info("engine ready on %s", config.engine_address)
    worker.serve()


def main() -> None:
    """Entry point of the engine process (`python -m serving.engine.worker`)."""
    from serving.engine.loader import ModelLoadError

    config = from_env()
    setup_logging(config.engine.log_level)
    try:
        run(config.engine)
    except ModelLoadError as error:
        logger.error("cannot load the model: %s", error)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
