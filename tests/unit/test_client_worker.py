"""The engine client and the engine worker loop over a real ZeroMQ socket, with a scripted engine (no torch)."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

import gevent
import pytest

from serving.client import EngineClient
from serving.engine.worker import EngineWorker
from serving.messages import (
    Admitted,
    ErrorKind,
    Failed,
    Finished,
    FinishReason,
    GenerateRequest,
    HealthResult,
    ModelInfo,
    SamplingParams,
    StoppingParams,
    TokenDelta,
    TokenInfo,
    TokenizeRequest,
    TokenizeResult,
    TokenSpan,
)

INFO = ModelInfo(model_id="scripted", model_sha=None, model_pipeline_tag=None, max_input_tokens=7,
                 max_total_tokens=8, max_batch_total_tokens=64, max_concurrent_requests=4, dtype="float32",
                 device="cpu", device_map={"": "cpu"}, has_chat_template=False, num_parameters=0)


@dataclass
class ScriptedEngine:
    """Emits one token per step per request, `max_new_tokens` of them; fails prompts that say 'fail'."""

    running: dict[str, list] = field(default_factory=dict)
    aborted: list[str] = field(default_factory=list)

    def add_request(self, request: GenerateRequest):
        if request.prompt == "fail":
            return [Failed(request.request_id, ErrorKind.VALIDATION, "Input validation error: no")]
        self.running[request.request_id] = [request.stopping.max_new_tokens, 0]
        return [Admitted(request.request_id, input_length=1, seed=None)]

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        self.running.pop(request_id, None)

    def has_work(self) -> bool:
        return bool(self.running)

    def step(self):
        events = []
        for request_id, state in list(self.running.items()):
            state[1] += 1
            events.append(TokenDelta(request_id, TokenInfo(id=state[1], text=f"t{state[1]}", logprob=-1.0)))
            if state[1] == state[0]:
                del self.running[request_id]
                events.append(Finished(request_id, FinishReason.LENGTH, state[1], "done", 1, None, 0.0, 0.0))
        return events

    def tokenize(self, request: TokenizeRequest) -> TokenizeResult:
        return TokenizeResult(call_id=request.call_id, tokens=(TokenSpan(id=1, text=request.text, start=0,
                                                                         stop=len(request.text)),))

    def info(self) -> ModelInfo:
        return INFO

    def health(self, call_id: str) -> HealthResult:
        return HealthResult(call_id=call_id, healthy=True, running=len(self.running), waiting=0)

    def stats(self) -> tuple[int, int]:
        return len(self.running), 0

    def batch_tokens(self) -> int:
        return 0

    def fail_all(self, kind: ErrorKind, message: str) -> list:
        failed = [Failed(request_id, kind, message) for request_id in self.running]
        self.running.clear()
        return failed


@pytest.fixture
def engine_and_client(tmp_path):
    address = f"ipc://{tmp_path}/engine.sock"
    engine = ScriptedEngine()
    worker = EngineWorker(engine, address)
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    yield engine, EngineClient(address)
    worker.running = False
    thread.join(5)


def request(prompt: str, tokens: int) -> GenerateRequest:
    return GenerateRequest(request_id=uuid.uuid4().hex, sampling=SamplingParams(),
                           stopping=StoppingParams(max_new_tokens=tokens), prompt=prompt)


def test_generate_yields_admitted_tokens_then_finished(engine_and_client):
    _, client = engine_and_client
    events = list(client.generate(request("hi", 3)))
    assert [type(event) for event in events] == [Admitted, TokenDelta, TokenDelta, TokenDelta, Finished]
    assert [event.token.text for event in events[1:4]] == ["t1", "t2", "t3"]


def test_concurrent_generations_each_get_their_own_events(engine_and_client):
    _, client = engine_and_client
    jobs = [gevent.spawn(lambda n=n: list(client.generate(request("hi", n)))) for n in (2, 5, 9)]
    gevent.joinall(jobs, timeout=10)
    assert [len(job.value) for job in jobs] == [4, 7, 11]


def test_failure_ends_the_stream(engine_and_client):
    _, client = engine_and_client
    events = list(client.generate(request("fail", 3)))
    assert len(events) == 1 and events[0].kind == ErrorKind.VALIDATION


def test_closing_the_iterator_aborts_in_the_engine(engine_and_client):
    engine, client = engine_and_client
    req = request("hi", 1000)
    stream = client.generate(req)
    next(stream)
    next(stream)
    stream.close()
    with gevent.Timeout(5):
        while req.request_id not in engine.aborted:
            gevent.sleep(0.01)
    assert req.request_id not in engine.running


def test_calls_info_health_tokenize(engine_and_client):
    _, client = engine_and_client
    assert client.info() == INFO
    health = client.health()
    assert health is not None and health.healthy
    result = client.tokenize(TokenizeRequest(call_id="c1", text="abc"))
    assert result.tokens[0].stop == 3


def test_health_is_none_when_no_engine_answers(tmp_path):
    client = EngineClient(f"ipc://{tmp_path}/nobody.sock")
    assert client.health(timeout=0.2) is None


class SlowEngine(ScriptedEngine):
    """A ScriptedEngine whose every step takes `step_seconds`: a long prefill on a slow device."""

    step_seconds: float = 1.0

    def step(self):
        import time

        time.sleep(self.step_seconds)
        return super().step()


def test_health_answers_fast_while_the_engine_is_busy(tmp_path):
    import time

    address = f"ipc://{tmp_path}/slow.sock"
    engine = SlowEngine()
    worker = EngineWorker(engine, address)
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    client = EngineClient(address)
    try:
        assert client.health().healthy, "an idle engine answers itself"
        stream = gevent.spawn(lambda: list(client.generate(request("hi", 3))))
        gevent.sleep(0.2)  # the engine is inside its first slow step now
        for _ in range(3):
            started = time.monotonic()
            health = client.health()
            assert health is not None and health.healthy
            assert time.monotonic() - started < 1.0, "well under SageMaker's 2 s"
            gevent.sleep(0.3)
        stream.join(20)
        assert len(stream.value) == 5
    finally:
        worker.running = False
        thread.join(5)


def test_a_silent_engine_is_unhealthy_after_the_grace(tmp_path, monkeypatch):
    import serving.client as client_module

    address = f"ipc://{tmp_path}/slow.sock"
    engine = SlowEngine()
    engine.step_seconds = 2.0
    worker = EngineWorker(engine, address)
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    client = EngineClient(address)
    monkeypatch.setattr(client_module, "BUSY_GRACE", 0.1)
    try:
        assert client.health().healthy
        stream = gevent.spawn(lambda: list(client.generate(request("hi", 1))))
        gevent.sleep(0.3)
        assert client.health(timeout=0.8) is None, "no answer and nothing heard for longer than the grace"
        stream.join(20)
    finally:
        worker.running = False
        thread.join(5)


class CountingEngine(ScriptedEngine):
    """A ScriptedEngine that remembers every request it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def add_request(self, request: GenerateRequest):
        self.seen.append(request.request_id)
        return super().add_request(request)


@pytest.fixture
def two_replicas(tmp_path):
    """Two engine workers (replicas) and one client that spreads over both."""
    engines, workers, threads = [CountingEngine(), CountingEngine()], [], []
    addresses = [f"ipc://{tmp_path}/engine.sock", f"ipc://{tmp_path}/engine.sock.1"]
    for engine, address in zip(engines, addresses):
        workers.append(EngineWorker(engine, address))
        threads.append(threading.Thread(target=workers[-1].serve, daemon=True))
        threads[-1].start()
    yield engines, EngineClient(addresses)
    for worker, thread in zip(workers, threads):
        worker.running = False
        thread.join(5)


def test_generations_spread_over_the_replicas(two_replicas):
    engines, client = two_replicas
    jobs = [gevent.spawn(lambda n=n: list(client.generate(request("hi", 50 + n)))) for n in range(4)]
    gevent.joinall(jobs, timeout=20)
    assert [len(job.value) for job in jobs] == [52, 53, 54, 55]
    assert [len(engine.seen) for engine in engines] == [2, 2]


def test_health_and_info_count_every_replica(two_replicas):
    engines, client = two_replicas
    stream = client.generate(request("hi", 1000))
    next(stream)
    health = client.health()
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
    worker = EngineWorker(engine, address)
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    try:
        assert EngineClient([address]).health(timeout=2).healthy
        assert EngineClient([address, f"{address}.1"]).health(timeout=0.3) is None
    finally:
        worker.running = False
        thread.join(5)
