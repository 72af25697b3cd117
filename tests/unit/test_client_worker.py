"""The engine client and the engine worker loop over a real ZeroMQ socket, with a scripted engine (no torch)."""

from __future__ import annotations

import threading
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import gevent
import gevent.queue
import pytest

from serving.client import EngineClient
from serving.engine.worker import EngineWorker
from serving.messages import (
    AdapterResult,
    AdapterSpec,
    AdapterStatus,
    Admitted,
    ErrorKind,
    Failed,
    Finished,
    FinishReason,
    GenerateRequest,
    HealthResult,
    ModelInfo,
    SamplingParams,
    RegisterAdapterRequest,
    StoppingParams,
    TokenDelta,
    TokenInfo,
    TokenizeRequest,
    TokenizeResult,
    TokenSpan,
    UnregisterAdapterRequest,
    decode_event_batch,
    encode,
)

INFO = ModelInfo(model_id="scripted", model_sha=None, model_pipeline_tag=None, max_input_tokens=7,
                 max_total_tokens=8, max_batch_total_tokens=64, max_concurrent_requests=4, dtype="float32",
                 device="cpu", device_map={"": "cpu"}, has_chat_template=False, num_parameters=0)


@dataclass
class ScriptedEngine:
    """Emits one token per step per request, `max_new_tokens` of them; fails prompts that say 'fail'.

    A request whose prompt starts with 'hold' is admitted but makes no token until `release` is set, so a test can
    look at it while it is surely still running, however fast the machine is.
    """

    running: dict[str, list] = field(default_factory=dict)
    held: dict[str, list] = field(default_factory=dict)
    aborted: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    registered: list[AdapterResult] = field(default_factory=list)
    closed: bool = False

    def add_request(self, request: GenerateRequest, prompt: Any = None):
        if request.prompt == "fail":
            return [Failed(request.request_id, ErrorKind.VALIDATION, "Input validation error: no")]
        state = [request.stopping.max_new_tokens, 0]
        (self.held if (request.prompt or "").startswith("hold") else self.running)[request.request_id] = state
        return [Admitted(request.request_id, input_length=1, seed=None)]

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        self.running.pop(request_id, None)
        self.held.pop(request_id, None)

    def has_work(self) -> bool:
        if self.held and self.release.is_set():
            self.running.update(self.held)
            self.held.clear()
        return bool(self.running)

    def step(self):
        events = []
        for request_id, state in list(self.running.items()):
            state[1] += 1
            token = TokenInfo(id=state[1], text=f"t{state[1]}", logprob=-1.0)
            if state[1] == state[0]:
                del self.running[request_id]
                events.append(Finished(request_id, FinishReason.LENGTH, state[1], "done", 1, None, 0.0, 0.0, token))
            else:
                events.append(TokenDelta(request_id, token))
        return events

    def tokenize(self, request: TokenizeRequest) -> TokenizeResult:
        return TokenizeResult(call_id=request.call_id, tokens=(TokenSpan(id=1, text=request.text, start=0,
                                                                         stop=len(request.text)),))

    def info(self) -> ModelInfo:
        return INFO

    def health(self, call_id: str) -> HealthResult:
        running, waiting = self.stats()
        return HealthResult(call_id=call_id, healthy=True, running=running, waiting=waiting)

    def stats(self) -> tuple[int, int]:
        return len(self.running) + len(self.held), 0

    def batch_tokens(self) -> int:
        return 0

    def fail_all(self, kind: ErrorKind, message: str) -> list:
        failed = [Failed(request_id, kind, message) for request_id in [*self.running, *self.held]]
        self.running.clear()
        self.held.clear()
        return failed

    def register_adapter(self, call_id: str, spec: AdapterSpec) -> AdapterResult | None:
        """Answered at the next turn, as a load on the engine's thread would be."""
        self.registered.append(AdapterResult(call_id, AdapterStatus.OK, f"Adapter {spec.name} registered"))
        return None

    def unregister_adapter(self, call_id: str, name: str) -> AdapterResult:
        return AdapterResult(call_id, AdapterStatus.NOT_FOUND, f"adapter {name!r} is not registered")

    def adapter_results(self) -> list[AdapterResult]:
        results, self.registered = self.registered, []
        return results

    def close(self) -> None:
        self.closed = True


@contextmanager
def served(engine: Any, address: str) -> Iterator[EngineWorker]:
    """`engine` behind an engine worker on `address`, in a thread that is stopped and joined on exit."""
    worker = EngineWorker(engine, address)
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.running = False
        thread.join(5)


@pytest.fixture
def engine_and_client(tmp_path):
    address = f"ipc://{tmp_path}/engine.sock"
    engine = ScriptedEngine()
    with served(engine, address):
        yield engine, EngineClient(address)


def generate(client: EngineClient, req: GenerateRequest):
    """The events of one generation, relayed to a queue; leaving early closes (aborts) it."""
    sink = gevent.queue.Queue()
    client.open(req, sink, 7)
    try:
        while True:
            tag, event = sink.get()
            assert tag == 7
            yield event
            if isinstance(event, (Finished, Failed)):
                return
    finally:
        client.close(req.request_id)


# A health call that tests what the engine answers, not how fast, waits this long: a loaded machine can take
# longer than the product's 1.5 s to schedule the engine threads.
SLOW_MACHINE = 30.0


def request(prompt: str, tokens: int) -> GenerateRequest:
    return GenerateRequest(request_id=uuid.uuid4().hex, sampling=SamplingParams(),
                           stopping=StoppingParams(max_new_tokens=tokens), prompt=prompt)


def test_generate_yields_admitted_tokens_then_finished(engine_and_client):
    _, client = engine_and_client
    events = list(generate(client, request("hi", 3)))
    assert [type(event) for event in events] == [Admitted, TokenDelta, TokenDelta, Finished]
    assert [event.token.text for event in events[1:4]] == ["t1", "t2", "t3"]


def test_concurrent_generations_each_get_their_own_events(engine_and_client):
    _, client = engine_and_client
    jobs = [gevent.spawn(lambda n=n: list(generate(client, request("hi", n)))) for n in (2, 5, 9)]
    gevent.joinall(jobs, timeout=10)
    assert [len(job.value) for job in jobs] == [3, 6, 10]  # Admitted, tokens (the last in Finished)


def test_failure_ends_the_stream(engine_and_client):
    _, client = engine_and_client
    events = list(generate(client, request("fail", 3)))
    assert len(events) == 1 and events[0].kind == ErrorKind.VALIDATION


def test_closing_the_iterator_aborts_in_the_engine(engine_and_client):
    engine, client = engine_and_client
    req = request("hold", 1000)  # admitted, and no token until released: surely still running when closed
    stream = generate(client, req)
    assert isinstance(next(stream), Admitted)
    stream.close()
    with gevent.Timeout(5):
        while req.request_id not in engine.aborted:
            gevent.sleep(0.01)
    assert req.request_id not in engine.running and req.request_id not in engine.held


def test_calls_info_health_tokenize(engine_and_client):
    _, client = engine_and_client
    assert client.info() == INFO
    health = client.health(timeout=SLOW_MACHINE)
    assert health is not None and health.healthy
    result = client.tokenize(TokenizeRequest(call_id="c1", text="abc"))
    assert result.tokens[0].stop == 3


def test_adapter_calls_through_the_client_and_the_worker(engine_and_client):
    _, client = engine_and_client
    result = client.register_adapter(AdapterSpec(name="sql", source="/d/sql"))  # answered a turn later
    assert (result.status, result.message) == (AdapterStatus.OK, "Adapter sql registered")
    assert client.unregister_adapter("b").status is AdapterStatus.NOT_FOUND


def test_health_is_none_when_no_engine_answers(tmp_path):
    client = EngineClient(f"ipc://{tmp_path}/nobody.sock")
    assert client.health(timeout=0.2) is None


class StuckEngine(ScriptedEngine):
    """A ScriptedEngine whose steps block until `unstick` is set: a long prefill on a slow device."""

    def __init__(self) -> None:
        super().__init__()
        self.in_step = threading.Event()
        self.unstick = threading.Event()

    def step(self):
        self.in_step.set()
        self.unstick.wait(30)
        return super().step()


@pytest.fixture
def stuck_engine_and_client(tmp_path):
    """A StuckEngine served by a worker thread, a client, and an idle health call already answered."""
    address = f"ipc://{tmp_path}/stuck.sock"
    engine = StuckEngine()
    with served(engine, address):
        client = EngineClient(address)
        try:
            assert client.health(timeout=SLOW_MACHINE).healthy, "an idle engine answers itself"
            yield engine, client
        finally:
            engine.unstick.set()


def test_health_answers_while_the_engine_is_inside_a_step(stuck_engine_and_client):
    engine, client = stuck_engine_and_client
    stream = gevent.spawn(lambda: list(generate(client, request("hi", 3))))
    while not engine.in_step.is_set():
        gevent.sleep(0.01)
    for _ in range(3):
        health = client.health()  # answered from the engine's last answer: it waits HEALTH_ANSWER_WAIT, not the step
        assert health is not None and health.healthy
    assert not engine.unstick.is_set() and not stream.ready(), "the step was still running"
    engine.unstick.set()
    stream.join(20)
    assert len(stream.value) == 4  # Admitted, 3 tokens (the last in Finished)


def test_a_silent_engine_is_unhealthy_after_the_grace(stuck_engine_and_client, monkeypatch):
    import serving.client as client_module

    engine, client = stuck_engine_and_client
    monkeypatch.setattr(client_module, "BUSY_GRACE", 0.0)
    stream = gevent.spawn(lambda: list(generate(client, request("hi", 1))))
    while not engine.in_step.is_set():
        gevent.sleep(0.01)
    assert client.health(timeout=0.8) is None, "no answer and nothing heard for longer than the grace"
    engine.unstick.set()
    stream.join(20)
    assert len(stream.value) == 2  # Admitted, Finished with its token


class CountingEngine(ScriptedEngine):
    """A ScriptedEngine that remembers every request it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def add_request(self, request: GenerateRequest, prompt: Any = None):
        self.seen.append(request.request_id)
        return super().add_request(request)


@pytest.fixture
def two_replicas(tmp_path):
    """Two engine workers (replicas) and one client that spreads over both."""
    engines = [CountingEngine(), CountingEngine()]
    addresses = [f"ipc://{tmp_path}/engine.sock", f"ipc://{tmp_path}/engine.sock.1"]
    with ExitStack() as stack:
        for engine, address in zip(engines, addresses):
            stack.enter_context(served(engine, address))
        yield engines, EngineClient(addresses)


def test_generations_spread_over_the_replicas(two_replicas):
    engines, client = two_replicas
    jobs = [gevent.spawn(lambda n=n: list(generate(client, request("hold", 50 + n)))) for n in range(4)]
    with gevent.Timeout(5):
        while sum(len(engine.seen) for engine in engines) < 4:
            gevent.sleep(0.01)
    assert [len(engine.seen) for engine in engines] == [2, 2], "all four in flight at once: two each"
    for engine in engines:
        engine.release.set()
    gevent.joinall(jobs, timeout=20)
    assert [len(job.value) for job in jobs] == [51, 52, 53, 54]


def test_requests_sharing_a_long_prefix_go_to_one_replica_until_it_is_busier(two_replicas):
    engines, client = two_replicas
    prefix = "hold " + "You are a helpful assistant. " * 3  # longer than PREFIX_ROUTE_CHARS
    jobs = [gevent.spawn(lambda n=n: list(generate(client, request(f"{prefix}question {n}", 5)))) for n in range(3)]
    with gevent.Timeout(5):
        while sum(len(engine.seen) for engine in engines) < 3:
            gevent.sleep(0.01)
    assert sorted(len(engine.seen) for engine in engines) == [0, 3]  # in flight 0, 1, 2: within the slack
    late = gevent.spawn(lambda: list(generate(client, request(f"{prefix}question 9", 5))))
    with gevent.Timeout(5):
        while sum(len(engine.seen) for engine in engines) < 4:
            gevent.sleep(0.01)
    assert sorted(len(engine.seen) for engine in engines) == [1, 3]  # 3 beyond 0 exceeds the slack: by load
    for engine in engines:
        engine.release.set()
    gevent.joinall([*jobs, late], timeout=20)


def test_health_and_info_count_every_replica(two_replicas):
    engines, client = two_replicas
    stream = generate(client, request("hold", 1000))
    next(stream)
    health = client.health(timeout=SLOW_MACHINE)
    assert health is not None and health.healthy and health.running == 1
    assert client.info().max_concurrent_requests == 2 * INFO.max_concurrent_requests
    assert client.info().max_batch_total_tokens == 2 * INFO.max_batch_total_tokens
    stream.close()
    owner = next(engine for engine in engines if engine.seen)
    with gevent.Timeout(5):
        while not owner.aborted:
            gevent.sleep(0.01)
    assert owner.aborted == owner.seen


def test_health_is_none_when_one_replica_is_gone(tmp_path):
    engine = ScriptedEngine()
    address = f"ipc://{tmp_path}/engine.sock"
    with served(engine, address):
        assert EngineClient([address]).health(timeout=2).healthy
        assert EngineClient([address, f"{address}.1"]).health(timeout=0.3) is None


def test_adapter_calls_are_answered_to_their_caller_and_the_engine_is_closed(tmp_path):
    import zmq

    address = f"ipc://{tmp_path}/engine.sock"
    engine = ScriptedEngine()
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    try:
        with served(engine, address):
            socket.connect(address)
            socket.send(encode(RegisterAdapterRequest("r1", AdapterSpec("a", "/adapters/a"))))
            socket.send(encode(UnregisterAdapterRequest("u1", "b")))
            results = {}
            while len(results) < 2:
                assert socket.poll(SLOW_MACHINE * 1000), results
                results.update((event.call_id, event) for event in decode_event_batch(socket.recv()).events)
            assert results["r1"].status is AdapterStatus.OK and results["u1"].status is AdapterStatus.NOT_FOUND
    finally:
        socket.close(0)
        context.term()
    assert engine.closed
