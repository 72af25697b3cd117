"""Cache merge and row selection keep every row's logits as if it ran alone."""

from __future__ import annotations

import pytest
import torch

from serving.engine.batch import Batch
from serving.engine.model_runner import ModelRunner
from serving.engine.sequence import Sequence
from serving.engine.stopping import StopCriteria
from serving.messages import SamplingParams


@pytest.fixture
def runner(loaded) -> ModelRunner:
    return ModelRunner(loaded.model, pad_id=0)


def prefilled(runner: ModelRunner, prompts: list[list[int]]) -> tuple[Batch, torch.Tensor]:
    stop = StopCriteria(max_new_tokens=10, eos_ids=frozenset())
    batch = Batch.new([Sequence.create(str(i), p, SamplingParams(), stop) for i, p in enumerate(prompts)],
                      runner.device)
    logits = runner.prefill(batch, budget=1000)
    batch.next_ids = logits.argmax(-1)
    return batch, logits


PROMPTS = [[10, 11, 12, 13, 14, 15, 16, 17], [20, 21], [30, 31, 32, 33, 34]]


def test_merge_then_select_matches_each_row_alone(runner):
    with torch.inference_mode():
        alone = []
        for prompt in PROMPTS:
            batch, _ = prefilled(runner, [prompt])
            alone.append(runner.decode(batch)[0])
        merged, _ = prefilled(runner, PROMPTS[:1])
        late, _ = prefilled(runner, PROMPTS[1:])
        merged.merge(late)
        assert (len(merged), merged.width) == (3, 8)
        assert merged.lengths.tolist() == [8, 5, 2]  # longest first
        assert [s.request_id for s in merged.sequences] == ["0", "1", "0"]
        assert [s.prompt_ids for s in merged.sequences] == [PROMPTS[0], PROMPTS[2], PROMPTS[1]]
        logits = runner.decode(merged)
        for row, original in enumerate([0, 2, 1]):
            assert torch.allclose(logits[row], alone[original], atol=1e-4)
        merged.select([2, 1])
        assert merged.width == 6 and merged.lengths.tolist() == [3, 6]
        assert merged.cache_mask().tolist() == [[False] * 3 + [True] * 3, [True] * 6]


def test_chunked_prefill_equals_one_forward(runner):
    with torch.inference_mode():
        _, whole = prefilled(runner, PROMPTS[:1])
        stop = StopCriteria(max_new_tokens=10, eos_ids=frozenset())
        batch = Batch.new([Sequence.create("c", PROMPTS[0], SamplingParams(), stop)], runner.device)
        assert runner.prefill(batch, budget=3) is None
        assert runner.prefill(batch, budget=3) is None
        chunked = runner.prefill(batch, budget=3)
        assert chunked is not None and batch.width == 8
        assert torch.allclose(chunked, whole, atol=1e-4)


def test_selecting_no_rows_empties_the_batch(runner):
    with torch.inference_mode():
        batch, _ = prefilled(runner, PROMPTS)
        batch.select([])
        assert len(batch) == 0 and batch.width == 0
        batch.merge(prefilled(runner, PROMPTS[1:2])[0])
        assert len(batch) == 1 and batch.width == 2


def test_a_padded_prefill_of_mixed_lengths_matches_each_row_alone(runner):
    prompts = [[10 + i for i in range(40)], [20, 21], [30 + i for i in range(38)], [40, 41, 42]]
    with torch.inference_mode():
        alone = {tuple(p): prefilled(runner, [p])[1][0] for p in prompts}
        batch, logits = prefilled(runner, prompts)
        assert [len(s.prompt_ids) for s in batch.sequences] == [40, 2, 38, 3]  # one forward: rows keep their order
        assert batch.lengths.tolist() == [40, 2, 38, 3] and batch.width == 40
        for row, sequence in enumerate(batch.sequences):
            assert torch.allclose(logits[row], alone[tuple(sequence.prompt_ids)], atol=1e-4)
        decoded = runner.decode(batch)
        for row, sequence in enumerate(batch.sequences):
            single, _ = prefilled(runner, [sequence.prompt_ids])
            single.next_ids = batch.next_ids[row:row + 1]
            assert torch.allclose(decoded[row], runner.decode(single)[0], atol=1e-4)
