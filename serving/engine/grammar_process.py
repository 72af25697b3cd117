"""The grammar process: every constrained sequence's llguidance matcher, in a process of its own (torch-free).

In a thread of the engine process the matchers' work took the GIL some twenty times a step (every llguidance
call gives it up and takes it back), and each time the engine thread's next torch call handed the GIL over and
waited to get it back: unconstrained rows beside constrained ones paid 0.15 ms a step of 7 (`prepare` alone
+0.11 ms, its small torch calls 1.3-3x slower), as much as the work itself. Here the engine pays one message out
and one back a step; the fill runs on the other core while the engine runs its forward.

`python -m serving.engine.grammar_process ENGINE_PID REQUESTS STEPS COMPILED` is started by
`grammar.GrammarProcess` (without a `preexec_fn`, so by vfork: a fork of the engine, which maps the model and the
KV pool, can fail for memory) with the engine's pid and three descriptors: REQUESTS (a socket: messages and the
bitmask's file descriptor in), STEPS (the answer of every step out) and COMPILED (the outcome of every compile out).
A step and its answer travel as int64s (`encode_step`, `encode_answer`), the rest pickled: a step's message cost
74 us with `Connection.send` after a forward had cooled the caches (its pickler alone 68 us), against 22 us to
pickle plainly and 26 us to write. Messages in, in order:

- `("tokenizer", json, vocab_size, eos_ids)`: first, the Hugging Face tokenizer as JSON;
- `("bitmask", rows)`, followed by the descriptor of a file of `rows` mask rows to map (replacing any before);
- `("compile", template_id, grammar)`: compiled in a thread of this process, answered on COMPILED with
  `(template_id, error)`, the compiler's message or None;
- `("step", number, new, dropped, forgotten, consumed, filled)`: first `new` matchers `(handle, template_id)`
  are made, `dropped` handles and `forgotten` templates (no longer referenced by the engine) let go, then each
  `(handle, token)` of `consumed` advances, then each handle of `filled` writes its allowed tokens into the mask
  row of its place in the list; answered on STEPS with `(number, refused, stopped)`: the `(token, error)` of
  every consumed token its matcher refused, and for each filled row whether nothing but EOS can follow.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import pickle
import signal
import socket
import sys
import threading
from array import array
from multiprocessing.connection import Connection
from multiprocessing.reduction import recvfds
from typing import Any

from llguidance import LLMatcher, LLTokenizer

from serving.constraints import clean, llguidance_grammar
from serving.lifeline import die_with_parent
from serving.messages import Grammar

logger = logging.getLogger(__name__)


STEP, PICKLED = b"S", b"P"  # the first byte of every message: int64s follow, or a pickle
Answer = tuple[int, list[tuple[int, str]], list[bool]]  # a step's number, refused (token, error)s, stopped rows


class GrammarError(Exception):
    """A grammar that cannot be compiled for this tokenizer; the message is the compiler's."""


def encode(message: tuple) -> bytes:
    """Any message but a step's, or an answer with refused tokens."""
    return PICKLED + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def encode_step(number: int, new: tuple[list[int], list[int]], dropped: list[int], forgotten: list[int],
                consumed: tuple[list[int], list[int]], filled: list[int]) -> bytes:
    """A step: its number, the lengths of its lists, then the lists (`new` as handles then templates, `consumed`
    as handles then tokens)."""
    ints = array("q", (number, len(new[0]), len(dropped), len(forgotten), len(consumed[0]), len(filled)))
    for part in (*new, dropped, forgotten, *consumed, filled):
        ints.extend(part)
    return STEP + ints.tobytes()


def decode_step(data: bytes) -> tuple[int, list[tuple[int, int]], list[int], list[int], list[tuple[int, int]],
                                      list[int]]:
    """`encode_step`'s lists back, the pairs zipped."""
    ints = memoryview(data)[1:].cast("q").tolist()
    number, new, dropped, forgotten, consumed, filled = ints[:6]
    at = 6
    parts = []
    for length in (new, new, dropped, forgotten, consumed, consumed, filled):
        parts.append(ints[at:at + length])
        at += length
    return (number, list(zip(parts[0], parts[1])), parts[2], parts[3], list(zip(parts[4], parts[5])), parts[6])


def encode_answer(answer: Answer) -> bytes:
    """A step's answer: int64s (its number, then each row's stopped flag) when no token was refused."""
    number, refused, stopped = answer
    return encode(answer) if refused else STEP + array("q", [number, *stopped]).tobytes()


def decode(data: bytes) -> Any:
    """A message or an answer back."""
    if data[:1] == PICKLED:
        return pickle.loads(memoryview(data)[1:])
    ints = memoryview(data)[1:].cast("q").tolist()
    return ints[0], [], [bool(flag) for flag in ints[1:]]


def compile_template(tokenizer: LLTokenizer, grammar: Grammar) -> LLMatcher:
    """Build and check the template matcher of `grammar` (about a millisecond at any vocabulary size)."""
    try:
        text = llguidance_grammar(grammar)
    except ValueError as exc:
        raise GrammarError(str(exc)) from None
    error = LLMatcher.validate_grammar(text, tokenizer)
    if error:
        raise GrammarError(clean(error))
    template = LLMatcher(tokenizer, text, log_level=0)
    if template.is_error():
        raise GrammarError(clean(template.get_error()))
    return template


def compile_outcome(tokenizer: LLTokenizer, grammar: Grammar) -> tuple[LLMatcher | None, str | None]:
    """The template of `grammar`, or the message of why it cannot be compiled. Whatever the compiler raises is
    such a message: an exception that escaped would end the compile thread, and every later grammar would wait for
    it forever."""
    try:
        return compile_template(tokenizer, grammar), None
    except GrammarError as exc:
        return None, str(exc)
    except Exception as exc:  # the compiler's own failure on this grammar
        logger.exception("the grammar compiler failed")
        return None, clean(f"the compiler failed: {exc}")


class Matchers:
    """This process's state: the tokenizer, the compiled templates, each sequence's matcher and the mask rows."""

    def __init__(self, requests: Connection, steps: Connection, compiled: Connection) -> None:
        self.requests, self.steps, self.compiled = requests, steps, compiled
        self.tokenizer: LLTokenizer | None = None
        self.words = 0  # int32 words of one mask row
        self.templates: dict[int, LLMatcher] = {}  # written by the compile thread
        self.matchers: dict[int, LLMatcher] = {}
        self.rows: mmap.mmap | None = None
        self.address = 0  # of the first mask row
        self.compiles: list[tuple[int, Grammar]] = []
        self.wanted = threading.Condition()

    def serve(self) -> None:
        """Answer messages until the engine closes the socket."""
        threading.Thread(target=self._compile_loop, name="grammar-compile", daemon=True).start()
        while True:
            try:
                data = self.requests.recv_bytes()
            except EOFError:
                return
            if data[:1] == STEP:
                self.steps.send_bytes(encode_answer(self._step(*decode_step(data))))
                continue
            message = decode(data)
            kind = message[0]
            if kind == "compile":
                with self.wanted:
                    self.compiles.append(message[1:])
                    self.wanted.notify()
            elif kind == "bitmask":
                self._map(message[1])
            elif kind == "tokenizer":
                _, text, vocab_size, eos_ids = message
                self.tokenizer = LLTokenizer(text, n_vocab=vocab_size, eos_token=eos_ids)
                self.words = (vocab_size + 31) // 32
                with self.wanted:
                    self.wanted.notify()

    def _map(self, rows: int) -> None:
        """Map the mask rows whose file descriptor follows on the socket."""
        with socket.socket(fileno=os.dup(self.requests.fileno())) as sock:
            (fd,) = recvfds(sock, 1)
        try:
            self.rows = mmap.mmap(fd, rows * self.words * 4)
        finally:
            os.close(fd)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.rows))

    def _step(self, number: int, new: list[tuple[int, int]], dropped: list[int], forgotten: list[int],
              consumed: list[tuple[int, int]], filled: list[int]) -> Answer:
        """One step's matcher work, and its answer."""
        for handle, template in new:
            self.matchers[handle] = self.templates[template].deep_copy()
        for handle in dropped:
            del self.matchers[handle]
        for template in forgotten:
            del self.templates[template]
        refused = []
        for handle, token in consumed:
            matcher = self.matchers[handle]
            if not matcher.consume_token(token):
                refused.append((token, matcher.get_error()))
        size = self.words * 4
        stopped = []
        for row, handle in enumerate(filled):
            matcher = self.matchers[handle]
            matcher.unsafe_compute_mask_ptr(self.address + row * size, size)
            stopped.append(matcher.is_stopped())
        return number, refused, stopped

    def _compile_loop(self) -> None:
        """In a thread: compile the grammars asked for, in order, so that a large one never holds up a step."""
        while True:
            with self.wanted:
                self.wanted.wait_for(lambda: self.compiles and self.tokenizer is not None)
                template_id, grammar = self.compiles.pop(0)
            assert self.tokenizer is not None
            template, error = compile_outcome(self.tokenizer, grammar)
            if template is not None:
                self.templates[template_id] = template
            self.compiled.send_bytes(encode((template_id, error)))


def main(argv: list[str]) -> int:
    """The process: it dies with the engine and leaves signals to it, which ends it by closing the socket."""
    die_with_parent(int(argv[0]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING)
    requests, steps, compiled = (Connection(int(fd), readable=i == 0, writable=i > 0)
                                 for i, fd in enumerate(argv[1:]))
    Matchers(requests, steps, compiled).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
