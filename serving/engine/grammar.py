"""Grammar-constrained decoding: a small backend interface, its llguidance implementation, and the compile cache.

A request's `Grammar` is compiled once per distinct grammar into a template matcher (`GrammarCache`, an LRU of
futures, compiled in one worker thread so that a large grammar never stalls the running batch: the sequence waits
outside the queue meanwhile); each sequence gets its own copy. Every step `GrammarMasks` fills a bitmask for the
constrained rows only (one int32 word per 32 tokens, bit set = allowed, llguidance's layout) and applies it to the
logits in place (on CPU with the `refuse_tokens` kernel of `cpu_kernels.cpp`, else numpy or a torch fill);
after the step's tokens are emitted each constrained row's matcher consumes its token, and the next step's mask
is filled while the engine goes on (see `GrammarMasks`). The tokenizer is built with every EOS id of the engine,
so the mask allows EOS exactly when the grammar is complete and nothing but EOS once it cannot go on.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Collection, Protocol

import numpy as np
import torch
from torch import Tensor

from serving.constraints import clean, llguidance_grammar
from serving.engine import cpu_kernels
from serving.messages import Grammar

logger = logging.getLogger(__name__)

CACHE_SIZE = 256
NEG_INF = float("-inf")
MASK_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-mask")  # every matcher's only user


class GrammarError(Exception):
    """A grammar that cannot be compiled for this tokenizer; the message is the compiler's."""


class Matcher(Protocol):
    """One sequence's position in its grammar."""

    def consume_token(self, token: int) -> bool:
        """Advance by a sampled token; False when the grammar refuses it."""
        ...

    def is_stopped(self) -> bool:
        """Whether nothing but EOS can follow (or the matcher failed)."""
        ...


class GrammarBackend(Protocol):
    """What the engine needs of a grammar library."""

    vocab_size: int

    def compile(self, grammar: Grammar) -> Any:
        """A template matcher for `grammar` (raises `GrammarError`); may run in a worker thread."""
        ...

    def matcher(self, template: Any) -> Matcher:
        """A fresh matcher of a compiled template, for one sequence."""
        ...

    def fill(self, matchers: list[Matcher], bitmask: Tensor) -> None:
        """Write each matcher's allowed tokens into the rows of `bitmask` [len(matchers), words] (int32)."""
        ...


class LLGuidanceBackend:
    """llguidance (`LLMatcher`): compiles in about a millisecond at any vocabulary size and imports no torch."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Collection[int]) -> None:
        import llguidance.hf

        self.vocab_size = vocab_size
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=sorted(eos_ids))

    def compile(self, grammar: Grammar) -> Any:
        """Build and check the template matcher."""
        from llguidance import LLMatcher

        try:
            text = llguidance_grammar(grammar)
        except ValueError as exc:
            raise GrammarError(str(exc)) from None
        error = LLMatcher.validate_grammar(text, self._tokenizer)
        if error:
            raise GrammarError(clean(error))
        template = LLMatcher(self._tokenizer, text, log_level=0)
        if template.is_error():
            raise GrammarError(clean(template.get_error()))
        return template

    def matcher(self, template: Any) -> Matcher:
        """A copy of the template (about a microsecond)."""
        return template.deep_copy()

    def fill(self, matchers: list[Matcher], bitmask: Tensor) -> None:
        """One mask row per matcher, computed by llguidance without the GIL. (llguidance's `LLExecutor` would
        take them in one call, but its rayon thread spins between steps: the forward beside it ran 0.5-3.5 ms a
        step slower on the 2-core development machine.)"""
        words = bitmask.shape[1]
        for row, matcher in enumerate(matchers):
            view = bitmask[row]
            matcher.unsafe_compute_mask_ptr(view.data_ptr(), words * 4)  # type: ignore[attr-defined]


class GrammarCache:
    """Compiled templates by grammar, least recently used evicted; each compiles once, in a worker thread."""

    def __init__(self, backend: GrammarBackend, size: int = CACHE_SIZE) -> None:
        self.backend = backend
        self._size = size
        self._futures: OrderedDict[Grammar, Future] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar")

    def submit(self, grammar: Grammar) -> Future:
        """The future template of `grammar` (shared by every request with the same grammar)."""
        future = self._futures.get(grammar)
        if future is not None:
            self._futures.move_to_end(grammar)
            return future
        future = self._pool.submit(self.backend.compile, grammar)
        self._futures[grammar] = future
        while len(self._futures) > self._size:
            self._futures.popitem(last=False)
        return future


@dataclass
class Constraint:
    """A sequence's grammar: its template while it compiles, then its own matcher."""

    template: Future
    backend: GrammarBackend
    matcher: Matcher | None = None

    def start(self) -> None:
        """Take a matcher of the compiled template (raises `GrammarError` when it did not compile)."""
        if self.matcher is None:
            self.matcher = self.backend.matcher(self.template.result())


@dataclass
class GrammarMasks:
    """The constrained rows of one batch, their matchers and the bitmask reused every step.

    Matchers are only ever touched by one thread (`MASK_THREAD`), in submission order: once the step's tokens are
    emitted, `consume` hands it the chosen tokens and the next step's fill, which then run while the engine runs
    the next forward (not during the emit: `consume_token` holds the GIL, which the detokenizing Python then
    waited for, +0.1 ms a step at 16 rows); `apply_` waits for that fill. A batch rebuilt in between submits its
    own fill, which runs after the pending work, so no matcher is ever used by two threads or out of order.
    """

    rows: Tensor
    matchers: list[Matcher]
    backend: GrammarBackend
    bitmask: Tensor = field(init=False)
    _filled: Future | None = field(default=None, init=False)  # the next step's fill, done or under way
    _batch_refused: Tensor | None = field(default=None, init=False)  # [B, V], reused: unconstrained rows all false
    _row_list: list[int] = field(init=False)  # `rows` as ints, read every step

    def __post_init__(self) -> None:
        self._row_list = self.rows.tolist()
        self.bitmask = torch.zeros(len(self.matchers), (self.backend.vocab_size + 31) // 32, dtype=torch.int32)

    @classmethod
    def build(cls, constraints: list[Constraint | None]) -> GrammarMasks | None:
        """The masks of a batch whose rows have these constraints (None when no row has one)."""
        active = [(row, c) for row, c in enumerate(constraints) if c is not None and c.matcher is not None]
        if not active:
            return None
        return cls(torch.tensor([row for row, _ in active], dtype=torch.long),
                   [c.matcher for _, c in active], active[0][1].backend)  # type: ignore[misc]

    def apply_(self, scores: Tensor) -> None:
        """Set to -inf, in place, every token of `scores` [B, V] that the grammar of its row does not allow (the
        other rows untouched). In place: a copy of the logits cost 0.09 ms a step at 16 rows x 8k and an 8 MB
        write at 128k, paid by every row of the batch."""
        filled = self._filled or MASK_THREAD.submit(self.backend.fill, self.matchers, self.bitmask)
        self._filled = None
        filled.result()
        if (scores.device.type == "cpu" and scores.dtype == torch.float32 and scores.is_contiguous()
                and cpu_kernels.loaded()):
            torch.ops.serving.refuse_tokens(scores, self.bitmask, self.rows)
            return
        # [R, words * 32] bools, true = refused: the words inverted, then unpacked to 0/1 bytes
        refused = np.unpackbits(np.invert(self.bitmask.numpy()).view(np.uint8), axis=1,
                                bitorder="little").view(np.bool_)
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
        """Advance each constrained row's matcher by its chosen token, then fill the next step's mask, both in
        the mask thread (`apply_` waits for them)."""
        chosen = ids.tolist()
        self._filled = MASK_THREAD.submit(self._advance, [chosen[row] for row in self._row_list])

    def settle(self) -> None:
        """Wait for the work under way in the mask thread (before the matchers are read from another thread)."""
        if self._filled is not None:
            self._filled.result()

    def _advance(self, tokens: list[int]) -> None:
        """In the mask thread: consume each row's token, then fill the bitmask for the next step."""
        for token, matcher in zip(tokens, self.matchers):
            if not matcher.consume_token(token):
                logger.error("grammar refused sampled token %d: %s", token,
                             getattr(matcher, "get_error", lambda: "")())
        self.backend.fill(self.matchers, self.bitmask)
