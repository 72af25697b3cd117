"""FIFO admission within the batch size, total-token and prefill-token budgets."""

from __future__ import annotations

from serving.engine.limits import Limits
from serving.engine.scheduler import Scheduler, length_groups
from serving.engine.sequence import Sequence
from serving.engine.stopping import StopCriteria
from serving.messages import SamplingParams


def limits(prefill=100, total=1000, size=None) -> Limits:
    return Limits(max_input_tokens=500, max_total_tokens=1000, max_batch_prefill_tokens=prefill,
                  max_batch_total_tokens=total, max_batch_size=size, max_concurrent_requests=128)


def seq(name: str, input_length: int, max_new: int = 10) -> Sequence:
    stop = StopCriteria(max_new_tokens=max_new, eos_ids=frozenset())
    return Sequence.create(name, [7] * input_length, SamplingParams(), stop)


def scheduler(budget: Limits, *sequences: Sequence) -> Scheduler:
    result = Scheduler(budget)
    for s in sequences:
        result.add(s)
    return result


def names(sequences) -> list[str]:
    return [s.request_id for s in sequences]


def test_fifo_within_the_padded_prefill_budget():
    queue = scheduler(limits(prefill=100), seq("a", 20), seq("b", 30), seq("c", 30), seq("d", 5))
    assert names(queue.admit([])) == ["a", "b", "c"]  # 3 x 30 = 90 padded tokens; a fourth row makes 120
    assert names(queue.admit([])) == ["d"]
    assert len(queue) == 0


def test_batch_size_counts_running_rows():
    queue = scheduler(limits(size=3), seq("a", 5), seq("b", 5), seq("c", 5))
    assert names(queue.admit([seq("r", 5)])) == ["a", "b"]
    assert queue.admit([seq("r", 5)] * 3) == []


def test_total_tokens_count_reservations_and_no_overtaking():
    running = [seq("r", 100, max_new=100)]
    queue = scheduler(limits(total=400), seq("a", 50, max_new=50), seq("big", 50, max_new=500), seq("c", 1, 1))
    assert names(queue.admit(running)) == ["a"]  # 200 + 100 fits, then "big" does not and "c" must wait behind it
    assert queue.admit(running + [seq("a", 50, 50)]) == []
    assert names(queue.waiting) == ["big", "c"]


def test_an_idle_engine_admits_the_head_whatever_its_size():
    queue = scheduler(limits(prefill=10, total=20), seq("huge", 50, max_new=50), seq("next", 1))
    assert names(queue.admit([])) == ["huge"]  # alone: prefilled in chunks
    assert names(queue.admit([])) == ["next"]


def test_an_oversize_prompt_waits_for_its_own_prefill():
    queue = scheduler(limits(prefill=10), seq("a", 4), seq("long", 30), seq("b", 1))
    assert names(queue.admit([])) == ["a"]
    assert names(queue.admit([])) == ["long"]
    assert names(queue.admit([])) == ["b"]


def test_remove_takes_a_waiting_sequence_out():
    a, b = seq("a", 1), seq("b", 1)
    queue = scheduler(limits(), a, b)
    queue.remove(a)
    assert names(queue.admit([])) == ["b"]


def test_length_groups_bound_the_padding():
    assert length_groups([5]) == [[0]]
    assert length_groups([100, 4, 98, 5, 50]) == [[1, 3], [4], [2, 0]]
    for groups in (length_groups([3, 300, 40, 41, 42, 299, 7]),):
        assert sorted(row for group in groups for row in group) == list(range(7))
