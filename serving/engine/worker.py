"""The engine process main: the step loop of `LLMEngine`, fed by the courier's thread (`courier`).

The courier reads the ZeroMQ socket as messages arrive and has new requests tokenized and checked by the tokenizer
process (`tokenizer_process`: big prompts never pause the steps) while a step runs. Each loop turn takes what it
delivered (checked requests, aborts, calls), runs one engine step when there is work, and posts each HTTP worker
one `EventBatch` with everything the step made for it. Requests waiting for the tokenizer count as waiting, and
at most MAX_CONCURRENT_REQUESTS of them wait (more are `overloaded`). When idle it blocks on the courier's inbox,
so it costs nothing. Every turn (at most once a HEARTBEAT_INTERVAL) it touches the heartbeat file, whose age
tells the launcher when the engine is stuck in a step. On SIGTERM every request still queued or running ends with
an `unavailable` failure, which its HTTP worker reports. LoRA adapter calls: an unregister is answered at once; a
register when its adapter's files are checked (and loaded), on the engine's load thread (`engine/adapters.py`),
so its `AdapterResult` goes out on a later turn.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import time
from collections import defaultdict
from types import FrameType
from typing import TYPE_CHECKING

import msgspec
import zmq

from serving.config import EngineConfig, from_env
from serving.engine.courier import SHUTDOWN_MESSAGE, Courier, Delivery, unavailable
from serving.logs import setup_logging
from serving.messages import (
    AbortRequest,
    EngineEvent,
    ErrorKind,
    Failed,
    Finished,
    GenerateRequest,
    HealthRequest,
    InfoRequest,
    InfoResult,
    RegisterAdapterRequest,
    TokenizeRequest,
    UnregisterAdapterRequest,
)

if TYPE_CHECKING:
    from serving.engine.engine import LLMEngine
    from serving.engine.tokenizer_process import TokenizerProcess

logger = logging.getLogger(__name__)

IDLE_POLL = 0.2  # seconds an idle loop waits for a message before it turns
HEARTBEAT_INTERVAL = 0.5


class EngineWorker:
    """The step loop, fed by the courier's thread (`courier`), and the routing of events back to the worker that
    asked."""

    def __init__(self, engine: LLMEngine, address: str, heartbeat_path: str | None = None,
                 tokenizer: TokenizerProcess | None = None) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.heartbeat_path = heartbeat_path
        self._last_beat = 0.0
        self._last_state: tuple[int, int] = (0, 0)
        self.address = address
        self.context = zmq.Context()
        self.courier = Courier(self.context, address, tokenizer)
        self.owners: dict[str, bytes] = {}
        self.adapter_calls: dict[str, bytes] = {}  # register calls waiting for their adapter's load
        self.outbox: dict[bytes, list[EngineEvent]] = defaultdict(list)
        self.running = True

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: finish the current turn and leave the loop."""
        logger.info("engine received signal %d, stopping", signum)
        self.running = False

    def serve(self) -> None:
        """Run until stopped; whatever ends it, the sockets, the tokenizer process and the engine are closed."""
        self.courier.start()
        try:
            while self.running:
                self._take(wait=not self.engine.has_work())
                if self.engine.has_work():
                    self._route(self.engine.step())
                for result in self.engine.adapter_results():
                    self.outbox[self.adapter_calls.pop(result.call_id)].append(result)
                self._log_state()
                self._flush()
                self._beat()
            self.courier.seal()
            for delivery in self._deliveries():  # read before the seal: refused like the running ones
                if isinstance(delivery.message, GenerateRequest):
                    self.outbox[delivery.owner].append(unavailable(delivery.message.request_id))
            self._route(self.engine.fail_all(ErrorKind.UNAVAILABLE, SHUTDOWN_MESSAGE))
            self._flush()
        finally:
            self._close()

    def _close(self) -> None:
        """Close the courier (sending what was posted), the engine, the tokenizer process and the socket."""
        self.courier.close()
        self.engine.close()
        if self.tokenizer is not None:
            self.tokenizer.close()
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

    def _take(self, wait: bool) -> None:
        """Handle what the courier has delivered; `wait`: when nothing has, wait up to IDLE_POLL for something.
        Raises when the courier's thread died: with nothing reading the socket the engine would serve no one, so
        the process ends and the launcher sees it."""
        if not self.courier.alive:
            raise RuntimeError("the engine's courier thread died")
        if wait:
            try:
                self._handle(self.courier.inbox.get(timeout=IDLE_POLL))
            except queue.Empty:
                return
        for delivery in self._deliveries():
            self._handle(delivery)

    def _deliveries(self) -> list[Delivery]:
        """Everything in the courier's inbox now."""
        deliveries = []
        while True:
            try:
                deliveries.append(self.courier.inbox.get_nowait())
            except queue.Empty:
                return deliveries

    def _handle(self, delivery: Delivery) -> None:
        """Dispatch one delivered message to the engine."""
        identity, message = delivery.owner, delivery.message
        if isinstance(message, GenerateRequest):
            self.owners[message.request_id] = identity
            self._route(self.engine.add_request(message, prompt=delivery.prompt))
        elif isinstance(message, AbortRequest):
            self.owners.pop(message.request_id, None)
            self.engine.abort(message.request_id)
        elif isinstance(message, TokenizeRequest):
            self.outbox[identity].append(self.engine.tokenize(message))
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
            waiting = health.waiting + self.courier.pending()
            self.outbox[identity].append(msgspec.structs.replace(health, waiting=waiting))

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
            self.courier.post(identity, events)
        self.outbox.clear()


def run(config: EngineConfig) -> None:
    """Load the model, bind the socket and serve until SIGTERM or SIGINT."""
    from serving.engine.engine import LLMEngine
    from serving.engine.tokenizer_process import TokenizerProcess

    engine = LLMEngine.from_config(config)
    tokenizer = TokenizerProcess(engine.loaded.tokenizer, engine.limits)
    engine.start_grammars()
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
