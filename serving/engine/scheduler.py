"""FIFO admission of waiting sequences into the running batch, within the token and size budgets.

Between decode steps the head of the queue joins while (a) the batch stays within MAX_BATCH_SIZE, (b) the
reservations (input_length + capped max_new_tokens) of running and admitted sequences stay within
MAX_BATCH_TOTAL_TOKENS, and (c) the padded prefill of the admitted group (rows x longest prompt) stays within
MAX_BATCH_PREFILL_TOKENS. Admission stops at the first sequence that does not fit (no overtaking). An idle engine
always admits the head, however large, so no valid request waits forever: a prompt over the prefill budget is then
admitted alone and prefilled in chunks. The engine prefills the admitted sequences in `length_groups` of similar
prompt lengths, since padding is wasted work.
"""

from __future__ import annotations

from collections import deque
from typing import Sequence as Seq

from serving.engine.limits import Limits
from serving.engine.sequence import Sequence

PAD_TOLERANCE = 1.25


def length_groups(lengths: list[int], tolerance: float = PAD_TOLERANCE) -> list[list[int]]:
    """Row indices by increasing length, cut into groups whose padded tokens (rows x longest) stay within
    `tolerance` times their real tokens."""
    groups: list[list[int]] = []
    real = 0
    for row in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and lengths[row] * (len(groups[-1]) + 1) <= tolerance * (real + lengths[row]):
            groups[-1].append(row)
            real += lengths[row]
        else:
            groups.append([row])
            real = lengths[row]
    return groups


class Scheduler:
    """The waiting queue and the admission rule."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.waiting: deque[Sequence] = deque()

    def __len__(self) -> int:
        return len(self.waiting)

    def add(self, sequence: Sequence) -> None:
        """Queue a validated sequence."""
        self.waiting.append(sequence)

    def requeue(self, sequences: list[Sequence]) -> None:
        """Put sequences back at the head of the queue, in order (their step failed; they are retried)."""
        self.waiting.extendleft(reversed(sequences))

    def remove(self, sequence: Sequence) -> None:
        """Take a sequence out of the queue (it was aborted before it ran)."""
        self.waiting.remove(sequence)

    def admit(self, running: Seq[Sequence], cap: int | None = None) -> list[Sequence]:
        """Pop the sequences that join the batch now, in arrival order; `cap` lowers MAX_BATCH_SIZE."""
        limits = self.limits
        caps = [c for c in (limits.max_batch_size, cap) if c is not None]
        max_rows = min(caps) if caps else None
        admitted: list[Sequence] = []
        reserved = sum(s.reserved_tokens for s in running)
        longest = 0
        while self.waiting:
            head = self.waiting[0]
            rows = len(running) + len(admitted)
            if max_rows is not None and rows >= max_rows:
                break
            if rows and reserved + head.reserved_tokens > limits.max_batch_total_tokens:
                break
            width = max(longest, head.input_length)
            if admitted and width * (len(admitted) + 1) > limits.max_batch_prefill_tokens:
                break
            admitted.append(self.waiting.popleft())
            reserved += head.reserved_tokens
            longest = width
            if width > limits.max_batch_prefill_tokens:
                break
        return admitted
