"""Tokenization and chat templating in a process of their own, beside the engine's step loop.

A big prompt (megabytes of chat content) costs seconds of tokenizer and Jinja work, and Python work in a thread
of the engine process would hold the GIL against the loop, whose every torch call gives it up and takes it back.
So the worker hands each new request's validation (`InputValidator.prompt`) and each tokenize call to one
spawned process holding a copy of the tokenizer; the loop goes on stepping, and a pipe wakes it when a result is
ready. Results are taken in the order the work was submitted. A tokenizer process that dies fails the work it
held and is replaced.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable

from serving.engine.limits import Limits
from serving.engine.validation import InputValidator, Prompt, RequestError
from serving.lifeline import die_with_parent
from serving.messages import ErrorKind, Failed, GenerateRequest, TokenizeRequest, TokenizeResult

logger = logging.getLogger(__name__)

START_TIMEOUT = 300.0
_validator: InputValidator | None = None  # in the tokenizer process


def _start(tokenizer: Any, limits: Limits, engine_pid: int) -> None:
    """The tokenizer process's initializer: it dies with the engine, runs one tokenizer thread (the engine keeps
    its cores) and leaves signals to the engine, which ends this process when it stops."""
    die_with_parent(engine_pid)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    global _validator
    _validator = InputValidator(tokenizer, limits)


def _ready() -> bool:
    """Answers once the process has started."""
    return _validator is not None


def _prompt(request: GenerateRequest) -> Prompt | Failed:
    """A generate request's checked prompt, or its `Failed` with TGI's message."""
    assert _validator is not None
    try:
        return _validator.prompt(request)
    except RequestError as error:
        return Failed(request.request_id, error.kind, error.message, error.code)


def _tokenize(request: TokenizeRequest) -> TokenizeResult:
    """A tokenize call's answer."""
    assert _validator is not None
    return _validator.tokenize(request)


@dataclass
class Job:
    """Work handed to the tokenizer process, with what the worker needs to finish it."""

    key: str
    message: GenerateRequest | TokenizeRequest
    owner: bytes
    future: Future


class TokenizerProcess:
    """The engine worker's tokenizer process and the jobs it holds."""

    def __init__(self, tokenizer: Any, limits: Limits) -> None:
        self._initargs = (tokenizer, limits, os.getpid())
        self.max_jobs = limits.max_concurrent_requests  # generate requests it holds before new ones are refused
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self._jobs: dict[str, Job] = {}
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        """Spawn the process (never fork the engine, whose threads and sockets the child must not inherit) and
        wait until it has loaded its tokenizer."""
        executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_start, initargs=self._initargs)
        executor.submit(_ready).result(timeout=START_TIMEOUT)
        return executor

    @property
    def wakeup_fd(self) -> int:
        """A file descriptor that turns readable when a job is done."""
        return self._wake_read

    def __len__(self) -> int:
        """Jobs not yet taken back."""
        return len(self._jobs)

    def submit(self, key: str, message: GenerateRequest | TokenizeRequest, owner: bytes) -> None:
        """Start validating a generate request or tokenizing a tokenize call."""
        work: Callable[[Any], Any] = _prompt if isinstance(message, GenerateRequest) else _tokenize
        try:
            future = self._executor.submit(work, message)
        except BrokenProcessPool:
            self._replace()
            future = self._executor.submit(work, message)
        future.add_done_callback(self._wake)
        self._jobs[key] = Job(key, message, owner, future)

    def _wake(self, future: Future) -> None:
        """Done callback (in the executor's thread): make the wakeup descriptor readable."""
        try:
            os.write(self._wake_write, b"\0")
        except OSError:
            pass  # the pipe is full (so readable already) or closed (stopping)

    def _replace(self) -> None:
        """A new process for one that died."""
        logger.error("the tokenizer process died; starting another")
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()

    def cancel(self, key: str) -> None:
        """Forget a job whose request was aborted (work already running finishes unseen)."""
        job = self._jobs.pop(key, None)
        if job is not None:
            job.future.cancel()

    def drop_all(self) -> list[Job]:
        """Forget every job (the engine is stopping): the jobs, whose work is cancelled or finishes unseen."""
        jobs = list(self._jobs.values())
        for job in jobs:
            self.cancel(job.key)
        return jobs

    def finished(self) -> list[tuple[Job, Any]]:
        """The jobs done so far, in submission order up to the first still running, with their results (a
        `Failed` for a generate request whose tokenizer process died)."""
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        done: list[tuple[Job, Any]] = []
        broken = False
        for key, job in list(self._jobs.items()):
            if not job.future.done():
                break
            del self._jobs[key]
            try:
                done.append((job, job.future.result()))
            except Exception as exc:
                broken = broken or isinstance(exc, BrokenProcessPool)
                logger.error("tokenizing %s failed: %s", key, exc)
                done.append((job, _failure(job.message, f"Request failed during tokenization: {exc}")))
        if broken:
            self._replace()
        return done

    def close(self) -> None:
        """End the process."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        os.close(self._wake_read)
        os.close(self._wake_write)


def _failure(message: GenerateRequest | TokenizeRequest, text: str) -> Failed | TokenizeResult:
    """The answer for work that could not be done."""
    if isinstance(message, GenerateRequest):
        return Failed(message.request_id, ErrorKind.GENERATION, text)
    return TokenizeResult(message.call_id, error=Failed(message.call_id, ErrorKind.GENERATION, text))
