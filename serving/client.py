"""The HTTP workers' handle on the engine process: generate, tokenize, info, health and LoRA adapter registration
over a local socket."""

from __future__ import annotations

import logging
import os
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import msgspec
import msgspec.structs

from serving.messages import (
    AbortRequest,
    AdapterResult,
    AdapterSpec,
    AdapterStatus,
    EngineEvent,
    ErrorKind,
    Failed,
    Finished,
    GenerateRequest,
    HealthRequest,
    HealthResult,
    InfoRequest,
    ModelInfo,
    RegisterAdapterRequest,
    TokenizeRequest,
    TokenizeResult,
    UnregisterAdapterRequest,
    decode_event_batch,
    encode,
)

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0
ADAPTER_CALL_TIMEOUT = 900.0  # registering an adapter may download it from the hub and load it
# /ping must answer within SageMaker's 2 s even while the engine is in a long step (a big prefill on a slow device):
# a health call that is not answered within HEALTH_ANSWER_WAIT is judged by the engine's recent activity instead.
HEALTH_ANSWER_WAIT = 0.5
PREFIX_ROUTE_CHARS = 64  # about an engine KV cache block of tokens: the text that names a request's first block
PREFIX_ROUTE_TOKENS = 16  # an engine KV cache block, for prompts given as token ids
ROUTE_SLACK = 2
BUSY_GRACE = 30.0  # the engine counts as alive while it sent this worker something within this many seconds
ENGINE_WATCH_INTERVAL = 0.25  # how often a worker looks for the launcher's engine-down file
ENGINE_DOWN_MESSAGE = "The engine stopped"
_ENGINE_DOWN = object()  # put on every call's queue when the engine is down: each call raises


class Sink(Protocol):
    """Where a generation's events go: a queue of `(tag, event)` pairs."""

    def put(self, item: tuple[int, EngineEvent]) -> None:
        """Add one item."""
        ...


class EngineClientProtocol(Protocol):
    """What the API layer needs from the engine; tests substitute a fake with the same methods."""

    def open(self, request: GenerateRequest, sink: Sink, tag: int) -> None:
        """Start a generation: `(tag, event)` goes onto `sink` for each of its events, `Admitted`, then
        `TokenDelta`s, then one `Finished`, or a `Failed` at any point, which ends it."""
        ...

    def close(self, request_id: str) -> None:
        """Stop relaying a generation; one that has not ended is aborted in the engine (a queued one never runs)."""
        ...

    def tokenize(self, request: TokenizeRequest) -> TokenizeResult:
        """Tokenize text or a chat; a failure comes back in `TokenizeResult.error`."""
        ...

    def info(self, refresh: bool = False) -> ModelInfo:
        """The loaded model's facts and resolved limits, cached after the first call; `refresh` asks the engine
        again (the registered adapters change)."""
        ...

    def health(self, timeout: float = 1.5) -> HealthResult | None:
        """The engine's health, or None when it did not answer within `timeout` seconds."""
        ...

    def register_adapter(self, spec: AdapterSpec) -> AdapterResult:
        """Register a LoRA adapter with every engine replica (all or none)."""
        ...

    def unregister_adapter(self, name: str) -> AdapterResult:
        """Unregister a LoRA adapter from every engine replica."""
        ...


class EngineUnavailable(RuntimeError):
    """The engine did not answer a call in time, or it is down."""


@dataclass
class _Replica:
    """One engine process as this worker sees it: its socket, what it last said, the requests sent to it."""

    address: str
    socket: Any = None
    last_message: float = 0.0
    last_health: HealthResult | None = None
    in_flight: int = 0


@dataclass(frozen=True)
class _Route:
    """Where the events of one generation go, and which replica runs it."""

    sink: Sink
    tag: int
    replica: _Replica


class EngineClient:
    """`EngineClientProtocol` over ZeroMQ DEALER sockets, one per engine replica, for one gevent worker process.

    The sockets and their reader greenlets are created on first use, so a client built before gunicorn forks
    never shares a socket between processes. A reader greenlet per socket puts each event of each `EventBatch`
    straight onto the sink of the generation it belongs to (or the queue of the call waiting for it): one relay
    per request, no greenlet of its own; nothing here blocks the gevent hub. A generation whose text starts with
    at least PREFIX_ROUTE_CHARS characters (or whose token ids fill a KV cache block) goes to the replica that a
    hash of them names (requests that share a prefix meet the cache blocks it left there), unless that replica has
    more than ROUTE_SLACK requests of this worker in flight beyond the least busy one; any other goes to the least
    busy replica. Tokenize and info calls go to the first.

    When the launcher finds an engine dead or frozen it creates `down_path`; a watcher greenlet sees it within
    ENGINE_WATCH_INTERVAL and from then on every generation in flight and every later one fails (`unavailable`),
    every call raises `EngineUnavailable` and `health` answers None, so streams end with an error event at once
    and `/ping` turns 503.
    """

    def __init__(self, addresses: str | Sequence[str], down_path: str | None = None) -> None:
        self._replicas = [_Replica(address) for address in ([addresses] if isinstance(addresses, str) else addresses)]
        self._down_path = down_path
        self._down = False
        self._pid: int | None = None
        self._queues: dict[str, "gevent.queue.Queue"] = {}
        self._routes: dict[str, _Route] = {}
        self._info: ModelInfo | None = None
        self._turn = 0

    def _ensure_connected(self) -> None:
        """Create the sockets and reader greenlets in this process (again after a fork)."""
        if self._pid == os.getpid():
            return
        import gevent
        import zmq.green as zmq

        context = zmq.Context()
        self._pid = os.getpid()
        self._queues, self._routes = {}, {}
        for replica in self._replicas:
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IDENTITY, f"w{os.getpid()}-{uuid.uuid4().hex[:8]}".encode())
            sock.connect(replica.address)
            replica.socket, replica.in_flight = sock, 0
            gevent.spawn(self._read_loop, replica)
        if self._down_path is not None:
            gevent.spawn(self._watch_engine, self._down_path)

    def _watch_engine(self, down_path: str) -> None:
        """Wait for the launcher's engine-down file, then fail everything in flight."""
        import gevent

        while not os.path.exists(down_path):
            gevent.sleep(ENGINE_WATCH_INTERVAL)
        logger.error("the engine is down: failing %d generations and %d calls in flight", len(self._routes),
                     len(self._queues))
        self._down = True
        for request_id in list(self._routes):
            self._fail_down(request_id, self._end(request_id))
        for queue in list(self._queues.values()):
            queue.put(_ENGINE_DOWN)

    @staticmethod
    def _fail_down(request_id: str, route: _Route) -> None:
        """End a generation with the engine-down failure."""
        route.sink.put((route.tag, Failed(request_id, ErrorKind.UNAVAILABLE, ENGINE_DOWN_MESSAGE)))

    def _read_loop(self, replica: _Replica) -> None:
        """Put every incoming event onto the sink or queue waiting for it; events for nobody are dropped."""
        while True:
            try:
                batch = decode_event_batch(replica.socket.recv())
            except msgspec.DecodeError:
                logger.exception("undecodable message from the engine")
                continue
            replica.last_message = time.monotonic()
            for event in batch.events:
                request_id = getattr(event, "request_id", None)
                route = self._routes.get(request_id) if request_id is not None else None
                if route is not None:
                    if isinstance(event, (Finished, Failed)):
                        self._end(request_id)
                    route.sink.put((route.tag, event))
                    continue
                queue = self._queues.get(getattr(event, "call_id", None) or request_id)
                if queue is not None:
                    queue.put(event)

    def _send(self, message: object, replica: _Replica | None = None) -> None:
        """Send one message to an engine (the first one unless `replica` is given)."""
        self._ensure_connected()
        (replica or self._replicas[0]).socket.send(encode(message))

    def _open(self, key: str) -> "gevent.queue.Queue":
        """Register a queue for the reply to one call."""
        import gevent.queue

        self._ensure_connected()
        queue: gevent.queue.Queue = gevent.queue.Queue()
        self._queues[key] = queue
        return queue

    def _call(self, message: TokenizeRequest | InfoRequest | RegisterAdapterRequest | UnregisterAdapterRequest,
              timeout: float, replica: _Replica | None = None):
        """Send a request that has exactly one reply and wait for it."""
        import gevent.queue

        if self._down:
            raise EngineUnavailable(ENGINE_DOWN_MESSAGE.lower())
        queue = self._open(message.call_id)
        try:
            self._send(message, replica)
            result = queue.get(timeout=timeout)
            if result is _ENGINE_DOWN:
                raise EngineUnavailable(ENGINE_DOWN_MESSAGE.lower())
            return result
        except gevent.queue.Empty:
            raise EngineUnavailable(f"the engine did not answer within {timeout:g} s") from None
        finally:
            self._queues.pop(message.call_id, None)

    def _least_busy(self) -> _Replica:
        """The replica with the fewest requests in flight (taking turns among equals)."""
        self._turn += 1
        count = len(self._replicas)
        return min((self._replicas[(self._turn + i) % count] for i in range(count)), key=lambda r: r.in_flight)

    def _route(self, request: GenerateRequest) -> _Replica:
        """The replica for a generation: by the hash of its prompt's beginning, then by load."""
        least = self._least_busy()
        if len(self._replicas) == 1:
            return least
        if request.prompt_ids is not None:
            ids = request.prompt_ids[:PREFIX_ROUTE_TOKENS]
            key = ",".join(map(str, ids)).encode() if len(ids) == PREFIX_ROUTE_TOKENS else None
        else:
            text = request.prompt or "".join(f"{m.role}:{m.content}\n" for m in
                                             (request.chat.messages if request.chat is not None else ()))
            key = text[:PREFIX_ROUTE_CHARS].encode() if len(text) >= PREFIX_ROUTE_CHARS else None
        if key is None:
            return least
        preferred = self._replicas[zlib.crc32(key) % len(self._replicas)]
        return preferred if preferred.in_flight <= least.in_flight + ROUTE_SLACK else least

    def open(self, request: GenerateRequest, sink: Sink, tag: int) -> None:
        """Send a generation to its replica (`_route`); its events go onto `sink` as `(tag, event)`."""
        if self._down:
            self._fail_down(request.request_id, _Route(sink, tag, self._replicas[0]))
            return
        self._ensure_connected()
        replica = self._route(request)
        replica.in_flight += 1
        self._routes[request.request_id] = _Route(sink, tag, replica)
        self._send(request, replica)

    def _end(self, request_id: str) -> _Route:
        """Forget a generation that ended (or is being closed)."""
        route = self._routes.pop(request_id)
        route.replica.in_flight -= 1
        return route

    def close(self, request_id: str) -> None:
        """Stop relaying a generation, aborting it in the engine unless it already ended."""
        if request_id in self._routes:
            route = self._end(request_id)
            self._send(AbortRequest(request_id=request_id), route.replica)

    def tokenize(self, request: TokenizeRequest) -> TokenizeResult:
        """Tokenize text or a chat in the engine."""
        return self._call(request, timeout=CALL_TIMEOUT)

    def info(self, refresh: bool = False) -> ModelInfo:
        """The loaded model's facts, fetched once (again with `refresh`, and after this worker registered or
        unregistered an adapter); the request and batch-token limits add up every replica's. Generations use the
        cached facts, so only the routes that show the adapters (`/info`, `/v1/models`, `/adapters`) pay a round
        trip for the current set, which another worker may have changed."""
        if self._info is None or refresh:
            infos = [self._call(InfoRequest(call_id=uuid.uuid4().hex), CALL_TIMEOUT, replica).info
                     for replica in self._replicas]
            self._info = msgspec.structs.replace(
                infos[0], max_concurrent_requests=sum(info.max_concurrent_requests for info in infos),
                max_batch_total_tokens=sum(info.max_batch_total_tokens for info in infos),
                num_blocks=sum(info.num_blocks for info in infos))
        return self._info

    def _fan_out(self, make: Callable[[], RegisterAdapterRequest | UnregisterAdapterRequest],
                 replicas: Sequence[_Replica]) -> list[AdapterResult | EngineUnavailable]:
        """Send one adapter call to each of `replicas` at once and wait for every answer (or its failure)."""
        import gevent

        jobs = [gevent.spawn(self._call, make(), ADAPTER_CALL_TIMEOUT, replica) for replica in replicas]
        gevent.joinall(jobs)
        results: list[AdapterResult | EngineUnavailable] = []
        for job in jobs:
            if isinstance(job.exception, EngineUnavailable):
                results.append(job.exception)
            elif job.exception is not None:
                raise job.exception
            else:
                results.append(job.value)
        return results

    def register_adapter(self, spec: AdapterSpec) -> AdapterResult:
        """Register `spec` with every replica at once. When one refuses (or does not answer) the replicas that
        accepted it unregister it again, and the first refusal is the answer (or `EngineUnavailable` raised)."""
        results = self._fan_out(lambda: RegisterAdapterRequest(call_id=uuid.uuid4().hex, spec=spec), self._replicas)
        refused = [result for result in results if not isinstance(result, AdapterResult)
                   or result.status is not AdapterStatus.OK]
        if refused:
            accepted = [replica for replica, result in zip(self._replicas, results)
                        if isinstance(result, AdapterResult) and result.status is AdapterStatus.OK]
            if accepted:
                logger.warning("adapter %s: rolling back its registration on %d replicas", spec.name, len(accepted))
                self._fan_out(lambda: UnregisterAdapterRequest(call_id=uuid.uuid4().hex, name=spec.name), accepted)
        self._refresh_info()
        if refused and isinstance(refused[0], EngineUnavailable):
            raise refused[0]
        return refused[0] if refused else results[0]

    def unregister_adapter(self, name: str) -> AdapterResult:
        """Unregister `name` from every replica: done when any replica had it and none failed otherwise;
        NOT_FOUND when none had it."""
        results = self._fan_out(lambda: UnregisterAdapterRequest(call_id=uuid.uuid4().hex, name=name),
                                self._replicas)
        self._refresh_info()
        for result in results:
            if isinstance(result, EngineUnavailable):
                raise result
        failed = [result for result in results if result.status not in (AdapterStatus.OK, AdapterStatus.NOT_FOUND)]
        done = [result for result in results if result.status is AdapterStatus.OK]
        return failed[0] if failed else (done or results)[0]

    def _refresh_info(self) -> None:
        """Fetch the model's facts again after the adapters changed (kept as they were when it fails)."""
        try:
            self.info(refresh=True)
        except EngineUnavailable:
            logger.warning("the engine did not answer an info call after an adapter change")

    @staticmethod
    def _health_answer(replica: _Replica, queue: "gevent.queue.Queue", started: float, timeout: float
                       ) -> HealthResult | None:
        """One replica's answer to the health call sent at `started`, its last healthy answer while it is busy
        (see `health`), or None."""
        import gevent.queue

        try:
            result = queue.get(timeout=max(0.0, started + min(timeout, HEALTH_ANSWER_WAIT) - time.monotonic()))
        except gevent.queue.Empty:
            last = replica.last_health
            if last is not None and last.healthy and time.monotonic() - replica.last_message < BUSY_GRACE:
                return last
            try:
                result = queue.get(timeout=max(0.0, started + timeout - time.monotonic()))
            except gevent.queue.Empty:
                return None
        if result is _ENGINE_DOWN:
            return None
        replica.last_health = result
        return result

    def health(self, timeout: float = 1.5) -> HealthResult | None:
        """Every engine's health, summed (healthy when all are), or None when one does not answer in time (or
        the engine is down).

        A busy engine answers only between steps. When no answer came within HEALTH_ANSWER_WAIT, its last answer
        stands if it was healthy and the engine has sent this worker anything within BUSY_GRACE seconds (it is
        working, not gone); otherwise the call waits for the rest of `timeout`.
        """
        if self._down:
            return None
        calls = [(replica, HealthRequest(call_id=uuid.uuid4().hex)) for replica in self._replicas]
        started = time.monotonic()
        queues = [self._open(call.call_id) for _, call in calls]
        try:
            for replica, call in calls:
                self._send(call, replica)
            results = [self._health_answer(replica, queue, started, timeout)
                       for (replica, _), queue in zip(calls, queues)]
        finally:
            for _, call in calls:
                self._queues.pop(call.call_id, None)
        if None in results:
            return None
        if len(results) == 1:
            return results[0]
        return HealthResult(call_id=calls[0][1].call_id, healthy=all(r.healthy for r in results),
                            running=sum(r.running for r in results), waiting=sum(r.waiting for r in results),
                            batch_tokens=sum(r.batch_tokens for r in results),
                            blocks_used=sum(r.blocks_used for r in results),
                            blocks_free=sum(r.blocks_free for r in results),
                            prefix_queried_tokens=sum(r.prefix_queried_tokens for r in results),
                            prefix_hit_tokens=sum(r.prefix_hit_tokens for r in results),
                            preemptions=sum(r.preemptions for r in results))
