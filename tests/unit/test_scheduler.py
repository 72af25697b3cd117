"""Steps planned by the scheduler: decode rows and prefill chunks under one budget, admission, preemption,
and identical prefixes computed once."""

from __future__ import annotations

from serving.engine.batch import Chunk
from serving.engine.block_manager import BlockManager
from serving.engine.limits import Limits
from serving.engine.scheduler import Scheduler
from serving.engine.sequence import Sequence, SequenceStatus
from serving.engine.stopping import StopCriteria
from serving.messages import SamplingParams


def limits(prefill=100, size=None) -> Limits:
    return Limits(max_input_tokens=500, max_total_tokens=1000, max_batch_prefill_tokens=prefill,
                  max_batch_total_tokens=1000, max_batch_size=size, max_concurrent_requests=128)


def seq(name: str, input_length: int, first: int | None = None) -> Sequence:
    """A sequence whose prompt is its own (no shared prefix) unless `first` is given."""
    stop = StopCriteria(max_new_tokens=100, eos_ids=frozenset())
    first = 1000 * sum(map(ord, name)) if first is None else first
    return Sequence.create(name, [first + i for i in range(input_length)], SamplingParams(), stop)


def scheduler(budget: Limits, *sequences: Sequence, blocks: int = 100, block_size: int = 4) -> Scheduler:
    result = Scheduler(budget, BlockManager(num_blocks=blocks, block_size=block_size))
    for s in sequences:
        result.add(s)
    return result


def plan(chunks: list[Chunk]) -> list[tuple[str, int, int]]:
    return [(c.sequence.request_id, c.start, c.count) for c in chunks]


def run(queue: Scheduler, chunks: list[Chunk]) -> None:
    """The forward ran; every sampling chunk's sequence takes a token."""
    queue.computed(chunks)
    for chunk in chunks:
        if chunk.samples:
            chunk.sequence.token_ids.append(1)


def test_prompts_are_admitted_in_order_within_the_token_budget_and_chunked():
    queue = scheduler(limits(prefill=50), seq("a", 20), seq("b", 40), seq("c", 5))
    first = queue.schedule()
    assert plan(first) == [("a", 0, 20), ("b", 0, 30)]  # the budget cuts b's prompt; c waits its turn
    run(queue, first)
    second = queue.schedule()
    assert plan(second) == [("a", 20, 1), ("b", 30, 10), ("c", 0, 5)]  # a decodes alongside b's last chunk
    assert [s.request_id for s in queue.running] == ["a", "b", "c"] and not queue.waiting


def test_the_batch_size_and_the_cap_bound_the_running_sequences():
    queue = scheduler(limits(size=2), seq("a", 3), seq("b", 3), seq("c", 3))
    assert [c.sequence.request_id for c in queue.schedule()] == ["a", "b"]
    queue = scheduler(limits(), seq("a", 3), seq("b", 3))
    assert [c.sequence.request_id for c in queue.schedule(cap=1)] == ["a"]


def test_decodes_always_run_and_a_prompt_still_progresses_when_they_fill_the_budget():
    queue = scheduler(limits(prefill=3), seq("a", 1), seq("b", 1), seq("c", 1), seq("long", 30))
    first = queue.schedule()
    run(queue, first)
    assert plan(first) == [("a", 0, 1), ("b", 0, 1), ("c", 0, 1)]
    second = queue.schedule()
    assert plan(second) == [("a", 1, 1), ("b", 1, 1), ("c", 1, 1), ("long", 0, 3)]  # min(budget, block size)


def test_admission_keeps_a_free_block_per_running_sequence():
    queue = scheduler(limits(), seq("a", 12), seq("b", 8), blocks=6, block_size=4)  # five usable blocks
    assert plan(queue.schedule()) == [("a", 0, 12)]  # b needs 2 blocks + 1 headroom for a: only 2 are free
    assert [s.request_id for s in queue.waiting] == ["b"]


def test_the_newest_sequence_is_preempted_when_blocks_run_out_and_recomputed_later():
    queue = scheduler(limits(), seq("old", 4), blocks=5, block_size=4)  # four usable blocks
    run(queue, queue.schedule())
    queue.add(seq("new", 3))
    for _ in range(3):
        run(queue, queue.schedule())  # old grows into a second block, new into two
    assert queue.blocks.free_blocks == 0
    run(queue, queue.schedule())
    old, new = queue.running
    assert (len(old.token_ids), len(new.token_ids)) == (9, 7)
    chunks = queue.schedule()  # old's ninth token needs a third block: new is preempted
    assert plan(chunks) == [("old", 8, 1)]
    assert queue.preemptions == 1 and [s.request_id for s in queue.waiting] == ["new"]
    assert new.status is SequenceStatus.WAITING and new.computed == 0 and new.block_table == []
    assert len(new.token_ids) == 7  # what it generated stays: prompt and tokens are recomputed
    queue.finish(old)
    assert plan(queue.schedule()) == [("new", 4, 3)]  # its first block was still cached


def test_identical_prompts_arriving_together_compute_their_prefix_once():
    prompts = [seq(name, 10, first=7) for name in "abc"]  # two full blocks of 4, then 2 tokens
    queue = scheduler(limits(), *prompts)
    first = queue.schedule()
    assert plan(first) == [("a", 0, 10)]  # b and c share its blocks and wait for them
    run(queue, first)
    second = queue.schedule()
    assert plan(second) == [("a", 10, 1), ("b", 8, 2), ("c", 8, 2)]  # they skip the computed prefix


def test_aborted_sequences_leave_and_free_their_blocks():
    queue = scheduler(limits(), seq("a", 6), seq("b", 6))
    run(queue, queue.schedule())
    used = queue.blocks.used_blocks
    queue.running[0].status = SequenceStatus.ABORTED
    assert [c.sequence.request_id for c in queue.schedule()] == ["b"]
    assert queue.blocks.used_blocks < used


def test_requeue_running_puts_everything_back_in_arrival_order():
    queue = scheduler(limits(), seq("a", 3), seq("b", 3))
    run(queue, queue.schedule())
    requeued = queue.requeue_running()
    assert [s.request_id for s in requeued] == ["a", "b"] == [s.request_id for s in queue.waiting]
    assert queue.running == [] and queue.blocks.used_blocks == 0


def test_64_sequences_of_1000_tokens_hold_at_most_their_tokens_plus_a_block_each():
    budget = Limits(max_input_tokens=2000, max_total_tokens=2048, max_batch_prefill_tokens=4096,
                    max_batch_total_tokens=100_000, max_batch_size=None, max_concurrent_requests=128)
    queue = Scheduler(budget, BlockManager(num_blocks=100_000 // 16 + 1, block_size=16))
    for i in range(64):
        queue.add(seq(f"s{i}", 1000 + i))
    for _ in range(40):
        run(queue, queue.schedule())
    assert len(queue.running) == 64 and all(s.generated > 0 for s in queue.running)
    tokens = sum(len(s.token_ids) for s in queue.running)
    assert queue.blocks.used_blocks * 16 <= tokens + 64 * 16


def test_while_sequences_decode_the_pacer_bounds_prompt_tokens_by_the_prompts_in_line():
    asked: list[tuple[int, int, int]] = []

    def pacing(tokens: int):
        def paced(decodes: int, prompts: int, context: int) -> int:
            asked.append((decodes, prompts, context))
            return tokens
        return paced

    queue = scheduler(limits(prefill=1000), seq("a", 2))
    run(queue, queue.schedule(paced=pacing(40)))
    assert asked == []  # nothing decoded yet: only the budget bounds the step
    queue.add(seq("long", 300))
    chunks = queue.schedule(paced=pacing(40))
    assert asked == [(1, 1, 0)]  # one decoding row, one prompt in line, from its start
    assert plan(chunks) == [("a", 2, 1), ("long", 0, 40)]
    assert queue.paced
    run(queue, chunks)
    assert plan(queue.schedule(paced=pacing(1000))) == [("a", 3, 1), ("long", 40, 260)]
    assert asked[-1] == (1, 1, 40)  # the long prompt, still prefilling, 40 tokens in
    assert not queue.paced  # the budget bound it, not the pacer
    queue = scheduler(limits(prefill=1000), seq("a", 2), blocks=400)
    run(queue, queue.schedule())
    for name in ("long", "b", "c"):
        queue.add(seq(name, 300))
    # 351 tokens, cut to whole blocks of 4: 348
    assert plan(queue.schedule(paced=pacing(351))) == [("a", 2, 1), ("long", 0, 300), ("b", 0, 48)]
    assert asked[-1] == (1, 3, 0)
    assert queue.paced
    run(queue, queue.schedule())  # every prompt computed: "a", "long", "b" and "c" decode
    queue.finish(queue.running[1])  # "long" done: its full blocks stay cached
    queue.add(seq("again", 300, first=1000 * sum(map(ord, "long"))))
    queue.schedule(paced=pacing(40))
    assert asked[-1] == (3, 1, 296)  # the queue's head reads its cached prefix: all its blocks but the last token's
