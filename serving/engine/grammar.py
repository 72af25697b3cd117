"""Grammar-constrained decoding: the grammar process seen from the engine, the compile cache and the step's masks.

Every constrained sequence's llguidance matcher lives in the grammar process (`grammar_process`), which this
module starts and talks to (`GrammarProcess`): a request's `Grammar` is compiled there once per distinct grammar
into a template (`GrammarCache`, an LRU of futures; in a thread of that process, so a large grammar never stalls
the running batch: the sequence waits outside the queue meanwhile), and each sequence gets its own copy, known
here by a handle (`Matcher`). Every step `GrammarMasks` reads a bitmask for the constrained rows only (one int32
word per 32 tokens, bit set = allowed, llguidance's layout, in a file both processes map) and applies it to the
logits in place (on CPU with the `refuse_tokens` kernel of `cpu_kernels.cpp`, else numpy or a torch fill); after
the step's tokens are emitted the rows' tokens go to the grammar process, whose matchers consume them and fill
the next step's mask while the engine runs the next forward. The tokenizer is sent with every EOS id of the
engine, so the mask allows EOS exactly when the grammar is complete and nothing but EOS once it cannot go on.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import Future
from copy import copy
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.reduction import sendfds
from pathlib import Path
from typing import Any, Collection

import numpy as np
import torch
from torch import Tensor

import serving
from serving.engine import cpu_kernels
from serving.engine.grammar_process import GrammarError, decode, encode, encode_step
from serving.messages import Grammar

logger = logging.getLogger(__name__)

__all__ = ["Constraint", "GrammarCache", "GrammarError", "GrammarMasks", "GrammarProcess", "GrammarProcessError"]

CACHE_SIZE = 256
NEG_INF = float("-inf")
FIRST_ROWS = 64  # mask rows mapped at first; doubled whenever a batch has more constrained rows
STOP_TIMEOUT = 5.0
STOPPED = "the grammar process stopped"


class GrammarProcessError(RuntimeError):
    """The grammar process stopped: a server fault, which fails the constrained sequences it held."""


class Matcher:
    """A sequence's matcher, by its handle in the grammar process; let go there once this is collected."""

    __slots__ = ("handle", "__weakref__")

    def __init__(self, handle: int) -> None:
        self.handle = handle


class Template:
    """A compiled grammar, by its id in the grammar process; let go there once no future or sequence holds it."""

    __slots__ = ("template_id", "__weakref__")

    def __init__(self, template_id: int) -> None:
        self.template_id = template_id


class GrammarProcess:
    """The grammar process, seen from the engine thread (its only user, apart from the thread that reads compile
    outcomes): compiles, matchers, and each step's advance and fill."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Collection[int]) -> None:
        self.vocab_size = vocab_size
        self.words = (vocab_size + 31) // 32
        self._requests, theirs = Pipe(duplex=True)  # a socket: the bitmask's descriptor goes along it
        self._steps, step_answers = Pipe(duplex=False)
        self._compiled, compile_answers = Pipe(duplex=False)
        fds = [theirs.fileno(), step_answers.fileno(), compile_answers.fileno()]
        root = str(Path(serving.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "serving.engine.grammar_process", str(os.getpid()), *map(str, fds)],
            pass_fds=fds, env=env)
        for end in (theirs, step_answers, compile_answers):
            end.close()
        self._requests.send_bytes(encode(("tokenizer", _tokenizer_json(tokenizer), vocab_size, sorted(eos_ids))))
        self._ids = 0  # of handles, templates and steps alike
        self._new: tuple[list[int], list[int]] = [], []  # handles, their templates
        self._dropped: list[int] = []  # appended to by finalizers
        self._forgotten: list[int] = []  # appended to by finalizers
        self._compiles: dict[int, Future] = {}
        self._compiles_lock = threading.Lock()
        self._dead = False
        self._rows = 0
        self._bitmask = torch.zeros(0, self.words, dtype=torch.int32)
        threading.Thread(target=self._read_compiles, name="grammar-compiled", daemon=True).start()

    @property
    def alive(self) -> bool:
        """Whether the process still answers."""
        return not self._dead and self._process.poll() is None

    def compile(self, grammar: Grammar) -> Future:
        """The future `Template` of `grammar` (its exception a `GrammarError` with the compiler's message)."""
        future: Future = Future()
        template_id = self._next_id()
        with self._compiles_lock:  # against the reader's last sweep: no future is left that nothing will resolve
            if self._dead:
                future.set_exception(GrammarProcessError(STOPPED))
                return future
            self._compiles[template_id] = future
        try:
            self._send(encode(("compile", template_id, grammar)))
        except GrammarProcessError as exc:
            if self._compiles.pop(template_id, None) is not None:
                future.set_exception(exc)
        return future

    def matcher(self, template: Template) -> Matcher:
        """A new matcher of a compiled template, for one sequence (made there with the next step)."""
        matcher = Matcher(self._next_id())
        self._new[0].append(matcher.handle)
        self._new[1].append(template.template_id)
        weakref.finalize(matcher, self._dropped.append, matcher.handle)
        return matcher

    def step(self, consumed: tuple[list[int], list[int]], filled: list[int]) -> int:
        """Send a step's work: advance matchers (`consumed`: their handles, and each one's token), then fill a
        mask row for each handle of `filled`, in order. Returns the step's number, for `wait`."""
        if len(filled) > self._rows:
            self._map(max(FIRST_ROWS, 2 * self._rows, len(filled)))
        number = self._next_id()
        new, self._new = self._new, ([], [])
        dropped, self._dropped[:] = self._dropped[:], []
        forgotten, self._forgotten[:] = self._forgotten[:], []
        self._send(encode_step(number, new, dropped, forgotten, consumed, filled))
        return number

    def wait(self, number: int) -> list[bool]:
        """Wait for step `number` (the answers of earlier ones are read and set aside); whether nothing but EOS can
        follow, for each filled row. Its mask is then in `bitmask`."""
        while True:
            try:
                answered, refused, stopped = decode(self._steps.recv_bytes())
            except (EOFError, OSError) as exc:
                self._dead = True
                raise GrammarProcessError(STOPPED) from exc
            for token, error in refused:
                logger.error("grammar refused sampled token %d: %s", token, error)
            if answered == number:
                return stopped

    def bitmask(self, rows: int) -> Tensor:
        """The first `rows` mask rows [rows, words] (int32), as the last step waited for filled them."""
        return self._bitmask[:rows]

    def close(self) -> None:
        """End the process (it stops when the socket closes)."""
        self._requests.close()
        try:
            self._process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _map(self, rows: int) -> None:
        """Map a new file of `rows` mask rows here and in the grammar process."""
        size = rows * self.words * 4
        with tempfile.TemporaryFile(dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None) as file:
            os.ftruncate(file.fileno(), size)
            buffer = mmap.mmap(file.fileno(), size)
            self._send(encode(("bitmask", rows)))
            with socket.socket(fileno=os.dup(self._requests.fileno())) as sock:
                sendfds(sock, [file.fileno()])
        self._bitmask = torch.frombuffer(buffer, dtype=torch.int32).view(rows, self.words)
        self._rows = rows

    def _send(self, message: bytes) -> None:
        """One encoded message to the process."""
        try:
            self._requests.send_bytes(message)
        except OSError as exc:
            self._dead = True
            raise GrammarProcessError(STOPPED) from exc

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _read_compiles(self) -> None:
        """In a thread: resolve each compile's future as its outcome arrives; fail them all if the process ends."""
        while True:
            try:
                template_id, error = decode(self._compiled.recv_bytes())
            except (EOFError, OSError):
                break
            future = self._compiles.pop(template_id)
            if error is None:
                template = Template(template_id)
                weakref.finalize(template, self._forgotten.append, template_id)
                future.set_result(template)
            else:
                future.set_exception(GrammarError(error))
        with self._compiles_lock:
            self._dead = True
            futures, self._compiles = list(self._compiles.values()), {}
        for future in futures:
            future.set_exception(GrammarProcessError(STOPPED))


def _tokenizer_json(tokenizer: Any) -> str:
    """A fast Hugging Face tokenizer as the JSON llguidance reads (added tokens included), without padding or
    truncation."""
    backend = copy(tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    return backend.to_str()


class GrammarCache:
    """Compiled templates by grammar, least recently used evicted; each compiles once, in the grammar process."""

    def __init__(self, process: GrammarProcess, size: int = CACHE_SIZE) -> None:
        self.process = process
        self._size = size
        self._futures: OrderedDict[Grammar, Future] = OrderedDict()

    def submit(self, grammar: Grammar) -> Future:
        """The future template of `grammar` (shared by every request with the same grammar)."""
        future = self._futures.get(grammar)
        if future is not None:
            self._futures.move_to_end(grammar)
            return future
        future = self.process.compile(grammar)
        self._futures[grammar] = future
        while len(self._futures) > self._size:
            self._futures.popitem(last=False)
        return future


@dataclass
class Constraint:
    """A sequence's grammar: its template while it compiles, then its own matcher."""

    template: Future
    process: GrammarProcess
    matcher: Matcher | None = None

    def start(self) -> None:
        """Take a matcher of the compiled template (raises `GrammarError` when it did not compile, and
        `GrammarProcessError` when the process stopped)."""
        if self.matcher is None:
            self.matcher = self.process.matcher(self.template.result())


@dataclass
class GrammarMasks:
    """The constrained rows of one batch, their matchers, and the step whose mask they wait for.

    Once the step's tokens are emitted, `consume` sends them to the grammar process with the next step's fill,
    which then runs there while the engine runs the next forward (not before the emit: the engine's own work comes
    first); `apply_` waits for that fill. A batch rebuilt in between asks for its own fill, which the process
    runs after the pending work, so every matcher advances in order and the mask is the latest batch's.
    """

    rows: Tensor
    matchers: list[Matcher]
    process: GrammarProcess
    stopped: list[bool] = field(default_factory=list)  # after `apply_` or `settle`: whether each row can only end
    _pending: int | None = field(default=None, init=False)  # the step whose fill was asked and not yet waited for
    _filled: bool = field(default=False, init=False)  # the mask rows hold this batch's next mask
    _batch_refused: Tensor | None = field(default=None, init=False)  # [B, V], reused: unconstrained rows all false
    _row_list: list[int] = field(init=False)  # `rows` as ints, read every step
    _handles: list[int] = field(init=False)  # the matchers' handles, sent every step

    def __post_init__(self) -> None:
        self._row_list = self.rows.tolist()
        self._handles = [matcher.handle for matcher in self.matchers]

    @classmethod
    def build(cls, constraints: list[Constraint | None]) -> GrammarMasks | None:
        """The masks of a batch whose rows have these constraints (None when no row has one)."""
        active = [(row, c) for row, c in enumerate(constraints) if c is not None and c.matcher is not None]
        if not active:
            return None
        return cls(torch.tensor([row for row, _ in active], dtype=torch.long),
                   [c.matcher for _, c in active], active[0][1].process)  # type: ignore[misc]

    def apply_(self, scores: Tensor) -> None:
        """Set to -inf, in place, every token of `scores` [B, V] that the grammar of its row does not allow (the
        other rows untouched). In place: a copy of the logits cost 0.09 ms a step at 16 rows x 8k and an 8 MB
        write at 128k, paid by every row of the batch."""
        if not self._filled:
            self.settle()
        self._filled = False
        bitmask = self.process.bitmask(len(self.matchers))
        if (scores.device.type == "cpu" and scores.dtype == torch.float32 and scores.is_contiguous()
                and cpu_kernels.loaded()):
            torch.ops.serving.refuse_tokens(scores, bitmask, self.rows)
            return
        # [R, words * 32] bools, true = refused: the words inverted, then unpacked to 0/1 bytes
        refused = np.unpackbits(np.invert(bitmask.numpy()).view(np.uint8), axis=1, bitorder="little").view(np.bool_)
        if scores.device.type == "cpu":
            self._apply_rows(scores, refused)
        else:
            self._apply_torch(scores, refused)

    def _apply_torch(self, scores: Tensor, refused: np.ndarray) -> None:
        """On other devices: one `masked_fill_` over the batch, from the unpacked bits moved to the device."""
        vocab = scores.shape[-1]
        refusing = torch.from_numpy(refused[:, :vocab]).to(scores.device)
        if refusing.shape[1] < vocab:  # logits wider than the grammar's vocabulary: those tokens are never allowed
            refusing = torch.nn.functional.pad(refusing, (0, vocab - refusing.shape[1]), value=True)
        if len(self.matchers) == scores.shape[0]:  # every row constrained (rows are then 0..B-1, in order)
            scores.masked_fill_(refusing, NEG_INF)
            return
        # Some rows constrained: one fill over the whole batch, the others' rows of the mask left false
        if self._batch_refused is None or self._batch_refused.shape != scores.shape:
            self._batch_refused = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        self._batch_refused[self.rows.to(scores.device)] = refusing
        scores.masked_fill_(self._batch_refused, NEG_INF)

    def _apply_rows(self, scores: Tensor, refused: np.ndarray) -> None:
        """On CPU without the `refuse_tokens` kernel (`cpu_kernels.cpp`): numpy writes -inf over each constrained
        row's refused tokens, and nothing else touches the other rows (at 16 rows x 8k, half constrained, 44-67 us
        against 104-121 us for a `where` over the batch; at 128k 0.6-1.2 ms against 1.6-2.0 ms: masks of a few
        allowed tokens or of all but a few, the two ways alternating, a copy included). The kernel takes 5-40 us
        at 8k."""
        view = scores.numpy()
        width = min(view.shape[1], refused.shape[1])
        for row, refused_row in zip(self._row_list, refused):
            np.copyto(view[row, :width], NEG_INF, where=refused_row[:width])
            view[row, width:] = NEG_INF  # logits wider than the grammar's vocabulary: never allowed

    def consume(self, ids: Tensor) -> None:
        """Send each constrained row's chosen token to its matcher, and ask for the next step's mask (which
        `apply_` waits for)."""
        chosen = ids.tolist()
        try:
            self._pending = self.process.step((self._handles, [chosen[row] for row in self._row_list]),
                                              self._handles)
        except GrammarProcessError:  # the step's tokens are out: the next `apply_` fails, before any is emitted
            self._pending = None

    def settle(self) -> None:
        """Wait for the mask asked for (asking for one first if none is under way), and take `stopped`."""
        if self._pending is None:
            self._pending = self.process.step(([], []), self._handles)
        self.stopped = self.process.wait(self._pending)
        self._pending = None
        self._filled = True
