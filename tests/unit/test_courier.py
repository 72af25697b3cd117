"""The engine's courier thread over a real ZeroMQ socket, with no step loop running and a scripted tokenizer."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest
import zmq

from serving.engine.courier import SHUTDOWN_MESSAGE, Courier
from serving.messages import (
    AbortRequest,
    ErrorKind,
    Failed,
    GenerateRequest,
    InfoRequest,
    SamplingParams,
    StoppingParams,
    TokenDelta,
    TokenInfo,
    TokenizeRequest,
    TokenizeResult,
    decode_event_batch,
    encode,
)

WAIT = 5.0


@dataclass
class Job:
    key: str
    message: Any
    owner: bytes


@dataclass
class ScriptedTokenizer:
    """The `TokenizerProcess` surface: a job finishes when the test says so (`finish`), with `result`."""

    max_jobs: int = 8
    jobs: dict[str, Job] = field(default_factory=dict)
    done: list[tuple[Job, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.wakeup_fd, self._wake = os.pipe()
        os.set_blocking(self.wakeup_fd, False)

    def __len__(self) -> int:
        return len(self.jobs)

    def submit(self, key: str, message: Any, owner: bytes) -> None:
        self.jobs[key] = Job(key, message, owner)

    def finish(self, key: str, result: Any) -> None:
        self.done.append((self.jobs.pop(key), result))
        os.write(self._wake, b"\0")

    def cancel(self, key: str) -> None:
        self.jobs.pop(key, None)

    def drop_all(self) -> list[Job]:
        jobs, self.jobs = list(self.jobs.values()), {}
        return jobs

    def finished(self) -> list[tuple[Job, Any]]:
        try:
            os.read(self.wakeup_fd, 4096)
        except BlockingIOError:
            pass
        done, self.done = self.done, []
        return done


def request(request_id: str) -> GenerateRequest:
    return GenerateRequest(request_id=request_id, sampling=SamplingParams(),
                           stopping=StoppingParams(max_new_tokens=2), prompt="hi")


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.term()


@pytest.fixture
def address(tmp_path) -> str:
    return f"ipc://{tmp_path}/engine.sock"


@pytest.fixture
def http_worker(context, address) -> Iterator[zmq.Socket]:
    """An HTTP worker's DEALER socket (connected before the courier binds: ZeroMQ reconnects)."""
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.IDENTITY, f"w-{uuid.uuid4().hex[:8]}".encode())
    socket.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    socket.connect(address)
    yield socket
    socket.close()


@contextmanager
def running(context: zmq.Context, address: str, tokenizer: Any = None) -> Iterator[Courier]:
    """A started courier, closed on exit (closing twice is harmless)."""
    courier = Courier(context, address, tokenizer)
    courier.start()
    try:
        yield courier
    finally:
        courier.close()


def events(socket: zmq.Socket) -> tuple:
    """The events of the next batch the HTTP worker receives."""
    return decode_event_batch(socket.recv()).events


def test_a_message_reaches_the_inbox_with_no_loop_turning(context, address, http_worker):
    with running(context, address) as courier:
        http_worker.send(encode(request("a")))
        delivery = courier.inbox.get(timeout=WAIT)
        assert delivery.message.request_id == "a" and delivery.prompt is None
        assert delivery.owner == http_worker.getsockopt(zmq.IDENTITY)


def test_posted_batches_reach_their_worker_and_close_sends_them_first(context, address, http_worker):
    with running(context, address) as courier:
        http_worker.send(encode(InfoRequest(call_id="c")))  # so that the ROUTER knows the worker's identity
        owner = courier.inbox.get(timeout=WAIT).owner
        token = TokenInfo(id=1, text="x", logprob=-1.0)
        courier.post(owner, [TokenDelta("a", token)])
        courier.post(owner, [TokenDelta("a", token), TokenDelta("b", token)])
        courier.close()
    assert [e.request_id for e in events(http_worker)] == ["a"]
    assert [e.request_id for e in events(http_worker)] == ["a", "b"]


def test_requests_are_tokenized_beside_the_loop_and_delivered_with_their_prompt(context, address, http_worker):
    tokenizer = ScriptedTokenizer()
    with running(context, address, tokenizer) as courier:
        http_worker.send(encode(request("a")))
        http_worker.send(encode(request("bad")))
        http_worker.send(encode(TokenizeRequest(call_id="t", text="hi", add_special_tokens=True)))
        _until(lambda: len(tokenizer) == 3)
        tokenizer.finish("a", "checked prompt")
        assert courier.inbox.get(timeout=WAIT).prompt == "checked prompt"
        tokenizer.finish("bad", Failed("bad", ErrorKind.VALIDATION, "Input validation error: no"))
        (failed,) = events(http_worker)  # answered by the courier itself
        assert failed.kind is ErrorKind.VALIDATION
        tokenizer.finish("t", TokenizeResult(call_id="t"))
        (result,) = events(http_worker)
        assert isinstance(result, TokenizeResult) and result.call_id == "t"
        assert courier.inbox.empty()


def test_a_full_tokenizer_refuses_new_requests_as_overloaded(context, address, http_worker):
    tokenizer = ScriptedTokenizer(max_jobs=1)
    with running(context, address, tokenizer) as courier:
        http_worker.send(encode(request("a")))
        http_worker.send(encode(request("b")))
        (failed,) = events(http_worker)
        assert (failed.request_id, failed.kind) == ("b", ErrorKind.OVERLOADED)
        assert courier.pending() == 1


def test_an_abort_cancels_the_tokenizer_job_and_reaches_the_engine(context, address, http_worker):
    tokenizer = ScriptedTokenizer()
    with running(context, address, tokenizer) as courier:
        http_worker.send(encode(request("a")))
        _until(lambda: len(tokenizer) == 1)
        http_worker.send(encode(AbortRequest(request_id="a")))
        assert isinstance(courier.inbox.get(timeout=WAIT).message, AbortRequest)
        assert len(tokenizer) == 0


def test_sealing_refuses_the_requests_being_tokenized_and_every_new_one(context, address, http_worker):
    tokenizer = ScriptedTokenizer()
    with running(context, address, tokenizer) as courier:
        http_worker.send(encode(request("a")))
        _until(lambda: len(tokenizer) == 1)
        courier.seal()
        http_worker.send(encode(request("b")))
        refused = [events(http_worker)[0], events(http_worker)[0]]
        assert [(f.request_id, f.kind, f.message) for f in refused] == [
            ("a", ErrorKind.UNAVAILABLE, SHUTDOWN_MESSAGE), ("b", ErrorKind.UNAVAILABLE, SHUTDOWN_MESSAGE)]
        assert courier.inbox.empty()


def _until(condition, timeout: float = WAIT) -> None:
    """Wait for `condition` (the courier's thread acts on its own time)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_engine_loop_ends_when_the_courier_thread_dies(address, http_worker):
    import threading

    from serving.engine.worker import EngineWorker

    class IdleEngine:
        def has_work(self) -> bool:
            return False

        def adapter_results(self) -> list:
            return []

        def stats(self) -> tuple[int, int]:
            return 0, 0

        def close(self) -> None:
            pass

    worker = EngineWorker(IdleEngine(), address)  # type: ignore[arg-type]

    def broken(owner: bytes, message: Any) -> None:
        raise RuntimeError("a courier bug")

    worker.courier._handle = broken  # type: ignore[method-assign]
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            worker.serve()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    http_worker.send(encode(request("a")))
    thread.join(WAIT)
    assert not thread.is_alive()
    assert [str(f) for f in failures] == ["the engine's courier thread died"]
