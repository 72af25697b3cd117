"""The scheduler owns the waiting queue and the running sequences, and plans each step's chunks.

A step feeds one chunk per scheduled sequence, decode rows and prefill chunks in one forward, under one token
budget (MAX_BATCH_PREFILL_TOKENS, vLLM's rule: a decoding row counts one token):

1. Every running sequence that decodes gets its token, oldest first. When its next token needs a block and none
   is free, the newest running sequence is preempted (its blocks freed, back at the head of the queue, recomputed
   when it is admitted again; its stream only pauses); a sequence that is itself the newest preempts itself. The
   decode chunks then go longest context first.
2. Running sequences still prefilling get the next chunk of their prompt, within what the budget has left and,
   while sequences decode, what the `StepPacer` allows for the step's decoding rows and the prompts in line, in
   whole blocks (one long prompt arriving costs the streams at most about one more decode step per step; a longer
   queue carries more, up to the pacer's ceiling of about ten decode steps), and at least `min(budget, block_size)`
   tokens a step, so that a prompt progresses.
3. Waiting sequences are admitted, first come first served (no overtaking), while the budget lasts, the batch
   stays within MAX_BATCH_SIZE (and the retry cap), and the pool has blocks for the prompt beyond the cached
   prefix plus one free block per running sequence (headroom to decode before anyone is preempted). An idle
   engine always admits the head: the pool holds at least MAX_TOTAL_TOKENS, so one sequence always fits.

A prefill chunk first skips the leading blocks of its prompt that are cached and computed. It stops before a
shared block that another chunk of the same step is computing: a sequence whose prefix is being computed by
another waits a step and then skips it, so identical prefixes arriving together are computed once.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from serving.engine.batch import Chunk
from serving.engine.block_manager import BlockManager
from serving.engine.limits import Limits
from serving.engine.sequence import Sequence, SequenceStatus

# (decoding rows, prompts in line, keys before the next chunk's start) -> the step's prompt tokens, if bound
Pacing = Callable[[int, int, int], int | None]


class Scheduler:
    """The waiting queue, the running sequences and the plan of each step."""

    def __init__(self, limits: Limits, blocks: BlockManager) -> None:
        self.limits = limits
        self.blocks = blocks
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admitted, oldest first: prefilling or decoding
        self.preemptions = 0
        self.paced = False  # whether the pacer lowered the last planned step's prompt tokens

    def add(self, sequence: Sequence) -> None:
        """Queue a validated sequence."""
        self.waiting.append(sequence)

    def remove(self, sequence: Sequence) -> None:
        """Take a sequence out of the queue (it was aborted before it ran)."""
        self.waiting.remove(sequence)

    def finish(self, sequence: Sequence) -> None:
        """A running sequence ended (finished or failed): its blocks go back to the pool."""
        self.running.remove(sequence)
        self.blocks.free(sequence.block_table)

    def requeue_running(self) -> list[Sequence]:
        """Put every running sequence back at the head of the queue in arrival order, its blocks freed (its step
        failed; it is retried from scratch); the sequences requeued."""
        sequences = sorted(self.running, key=lambda s: s.arrival)
        for sequence in sequences:
            self._release(sequence)
        self.running = []
        self.waiting.extendleft(reversed(sequences))
        return sequences

    def schedule(self, cap: int | None = None, paced: Pacing | None = None) -> list[Chunk]:
        """The chunks of the next step (`cap` lowers MAX_BATCH_SIZE; `paced(decodes, prompts in line, context)`
        bounds the prompt tokens of a step that decodes, see `pacer`); their blocks are allocated."""
        for sequence in [s for s in self.running if s.status is not SequenceStatus.RUNNING]:
            self.finish(sequence)  # aborted since the last step
        budget = self.limits.max_batch_prefill_tokens
        # longest context first: the attention's row windows are then runs of consecutive step tokens (its
        # queries need no gather and its outputs no reordering; see `batch`)
        chunks = sorted(self._decodes(), key=lambda chunk: -chunk.start)
        room = budget - len(chunks)
        self.paced = False
        if chunks and paced is not None:
            prefilling = [s for s in self.running if s.uncomputed > 1]
            allowed = paced(len(chunks), len(self.waiting) + len(prefilling), self._next_context(prefilling))
            if allowed is not None:
                self.paced = allowed < room
                room = min(room, allowed)
                room -= room % self.blocks.block_size  # whole blocks: chunks end on block edges, and the forward
                # sees fewer distinct token counts (each new one costs oneDNN a primitive of its GEMMs, ~0.5 ms, here)
        room = max(room, min(budget, self.blocks.block_size))
        filling: set[int] = set()  # blocks that this step's prefill chunks compute
        for sequence in self.running:
            if room <= 0:
                break
            if sequence.uncomputed > 1:
                count = self._prefill_count(sequence, room, filling)
                if count:
                    chunks.append(Chunk(sequence, sequence.computed, count))
                    room -= count
        caps = [c for c in (self.limits.max_batch_size, cap) if c is not None]
        max_rows = min(caps) if caps else None
        while self.waiting and room > 0 and (max_rows is None or len(self.running) < max_rows):
            head = self.waiting[0]
            if not self.blocks.can_allocate(head.token_ids, len(self.running), head.uses_prefix_cache,
                                            head.cache_root):
                break
            self.waiting.popleft()
            head.block_table, _ = self.blocks.allocate(head.token_ids, head.uses_prefix_cache, head.cache_root)
            head.computed = 0
            head.mark_scheduled()
            self.running.append(head)
            count = self._prefill_count(head, room, filling)
            if count:
                chunks.append(Chunk(head, head.computed, count))
                room -= count
        return chunks

    def _next_context(self, prefilling: list[Sequence]) -> int:
        """The keys before the start of the next prompt chunk: where the first prefilling sequence stands, else
        the cached prefix of the queue's head."""
        if prefilling:
            return prefilling[0].computed
        if self.waiting and self.waiting[0].uses_prefix_cache:
            head = self.waiting[0]
            return self.blocks.cached_blocks(head.token_ids, head.cache_root) * self.blocks.block_size
        return 0

    def computed(self, chunks: list[Chunk]) -> None:
        """The step's forward ran: each chunk's tokens are in the cache."""
        for chunk in chunks:
            sequence = chunk.sequence
            sequence.computed = chunk.start + chunk.count
            self.blocks.mark_computed(sequence.block_table, sequence.token_ids, chunk.start, sequence.computed,
                                      sequence.cache_root)

    def _decodes(self) -> list[Chunk]:
        """A one-token chunk for every decoding sequence, preempting the newest ones while blocks are short."""
        chunks = []
        index = 0
        while index < len(self.running):
            sequence = self.running[index]
            if sequence.uncomputed == 1:
                while not self.blocks.can_grow(sequence.block_table, len(sequence.token_ids)):
                    victim = self.running[-1]
                    self._preempt(victim)
                    if victim is sequence:
                        return chunks
                self.blocks.grow(sequence.block_table, len(sequence.token_ids))
                chunks.append(Chunk(sequence, sequence.computed, 1))
            index += 1
        return chunks

    def _prefill_count(self, sequence: Sequence, room: int, filling: set[int]) -> int:
        """How many tokens of its prompt a prefilling sequence feeds now (0: it waits for a block another chunk
        computes); first skips the cached blocks that are computed."""
        size = self.blocks.block_size
        table = sequence.block_table
        if sequence.uses_prefix_cache:
            while sequence.computed % size == 0 and sequence.computed + size < len(sequence.token_ids) \
                    and self.blocks.is_ready(table[sequence.computed // size]):
                sequence.computed += size
        count = min(sequence.uncomputed, room)
        first = sequence.computed // size
        for index in range(first, (sequence.computed + count - 1) // size + 1):
            if table[index] in filling:
                count = index * size - sequence.computed
                break
        if count > 0:
            filling.update(table[first:(sequence.computed + count - 1) // size + 1])
        return max(count, 0)

    def _preempt(self, sequence: Sequence) -> None:
        """Free a running sequence's blocks and put it back at the head of the queue, to be recomputed."""
        self.running.remove(sequence)
        self._release(sequence)
        self.waiting.appendleft(sequence)
        self.preemptions += 1

    def _release(self, sequence: Sequence) -> None:
        """Free a sequence's blocks; it waits again and recomputes its tokens when admitted."""
        self.blocks.free(sequence.block_table)
        sequence.computed = 0
        sequence.status = SequenceStatus.WAITING
