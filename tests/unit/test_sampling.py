"""Vectorised sampling against transformers' logits processors and against itself row by row."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from serving.engine.sampling import (
    SamplingState,
    apply_repetition_penalty,
    sample,
    token_counts,
    top_k_filter,
    top_p_filter,
    typical_p_filter,
)
from serving.engine.sequence import Sequence
from serving.engine.stopping import StopCriteria
from serving.messages import SamplingParams

torch.set_num_threads(1)
VOCAB = 50
EOS = (2,)


def make_sequence(prompt=(5, 6, 7), output=(), min_new_tokens=0, **params) -> Sequence:
    """A running sequence with the given history and sampling parameters."""
    sequence = Sequence.create("r", list(prompt), SamplingParams(**params),
                               StopCriteria(max_new_tokens=100, eos_ids=frozenset(EOS), min_new_tokens=min_new_tokens))
    sequence.token_ids.extend(output)
    return sequence


def logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_batch_is_argmax_with_logprobs():
    scores = logits(4)
    state = SamplingState.build([make_sequence() for _ in range(4)], VOCAB, EOS)
    assert state.sample_rows is None and state.seen is None and state.temperature is None
    out = sample(scores, state)
    assert torch.equal(out.ids, scores.argmax(-1))
    expected = scores.log_softmax(-1).gather(1, out.ids[:, None]).squeeze(1)
    assert torch.allclose(out.logprobs, expected, atol=1e-6)
    assert out.top_ids is None


def test_logprobs_are_computed_only_when_some_row_reads_them():
    scores = logits(2)
    quiet = SamplingState.build([make_sequence(logprobs=False) for _ in range(2)], VOCAB, EOS)
    out = sample(scores, quiet)
    assert torch.equal(out.ids, scores.argmax(-1)) and out.logprobs is None
    mixed = SamplingState.build([make_sequence(logprobs=False), make_sequence()], VOCAB, EOS)
    assert torch.allclose(sample(scores, mixed).logprobs, scores.log_softmax(-1).max(-1).values, atol=1e-6)
    asked_top = SamplingState.build([make_sequence(logprobs=False, top_n_tokens=2)], VOCAB, EOS)
    assert sample(scores[:1], asked_top).logprobs is not None


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_matches_transformers(k):
    scores = logits(3)
    ours = top_k_filter(scores, torch.tensor([k, k, k]))
    assert torch.equal(ours, TopKLogitsWarper(k)(None, scores.clone()))


def test_top_k_per_row_with_zero_meaning_off():
    scores = logits(2)
    ours = top_k_filter(scores, torch.tensor([0, 2]))
    assert torch.equal(ours[0], scores[0])
    assert torch.isfinite(ours[1]).sum() == 2


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_top_p_matches_transformers(p):
    scores = logits(3)
    ours = top_p_filter(scores, torch.full((3,), p))
    assert torch.equal(torch.isfinite(ours), torch.isfinite(TopPLogitsWarper(p)(None, scores.clone())))


@pytest.mark.parametrize("p", [0.2, 0.5, 0.95])
def test_typical_p_matches_transformers(p):
    scores = logits(3)
    ours = typical_p_filter(scores, torch.full((3,), p))
    assert torch.equal(torch.isfinite(ours), torch.isfinite(TypicalLogitsWarper(p)(None, scores.clone())))


def test_neutral_warper_values_keep_every_token():
    scores = logits(2)
    assert torch.equal(top_p_filter(scores, torch.tensor([1.0, 1.0])), scores)
    assert torch.equal(typical_p_filter(scores, torch.tensor([1.0, 1.0])), scores)


def test_repetition_penalty_matches_transformers():
    scores = logits(2)
    history = torch.tensor([[1, 4, 4, 9], [0, 3, 7, 7]])
    seen = token_counts(history.tolist(), VOCAB) > 0
    ours = apply_repetition_penalty(scores, torch.tensor([[1.5], [1.5]]), seen)
    assert torch.allclose(ours, RepetitionPenaltyLogitsProcessor(1.5)(history, scores.clone()))


def test_penalties_and_bias_follow_their_rules():
    sequence = make_sequence(prompt=(1, 2), output=(3, 3, 4), frequency_penalty=0.5, presence_penalty=0.25,
                             logit_bias={7: 2.0, 999: 5.0})
    scores = logits(1)
    state = SamplingState.build([sequence], VOCAB, EOS)
    out = sample(scores, state)
    expected = scores.clone()
    expected[0, 3] -= 2 * 0.5 + 0.25
    expected[0, 4] -= 0.5 + 0.25
    expected[0, 7] += 2.0
    assert out.ids.item() == expected.argmax().item()
    assert out.logprobs.item() == pytest.approx(expected.log_softmax(-1).max().item(), abs=1e-5)


def test_record_updates_the_penalty_statistics():
    sequence = make_sequence(output=(), repetition_penalty=2.0, frequency_penalty=1.0)
    state = SamplingState.build([sequence], VOCAB, EOS)
    state.record(torch.tensor([11]))
    assert state.seen[0, 11] and state.counts[0, 11] == 1
    assert state.seen[0, 5] and state.counts[0, 5] == 0


def test_logit_bias_can_force_a_token():
    state = SamplingState.build([make_sequence(logit_bias={13: 100.0})], VOCAB, EOS)
    assert sample(logits(1), state).ids.item() == 13


def test_eos_is_suppressed_before_min_new_tokens():
    state = SamplingState.build([make_sequence(min_new_tokens=2, logit_bias={2: 100.0})], VOCAB, EOS)
    scores = logits(1)
    assert sample(scores, state).ids.item() != 2
    state.record(torch.tensor([0]))
    assert sample(scores, state).ids.item() != 2
    state.record(torch.tensor([0]))
    assert sample(scores, state).ids.item() == 2


def test_eos_is_not_suppressed_where_it_ends_nothing():
    """With `ignore_eos` (no EOS ids in the row's stop criteria) EOS is a token like any other, as in vLLM."""
    sequence = make_sequence(min_new_tokens=5, logit_bias={2: 100.0})
    sequence.stop.eos_ids = frozenset()
    state = SamplingState.build([sequence], VOCAB, EOS)
    assert state.min_new_tokens is None
    assert sample(logits(1), state).ids.item() == 2


def test_same_seed_same_draws_and_other_seeds_differ():
    scores = logits(1).repeat(1, 1)

    def draws(seed: int) -> list[int]:
        state = SamplingState.build([make_sequence(do_sample=True, seed=seed)], VOCAB, EOS)
        return [sample(scores, state).ids.item() for _ in range(30)]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_sampling_follows_the_distribution():
    scores = torch.tensor([[0.0, 1.0, 2.0, -30.0]])
    state = SamplingState.build([make_sequence(do_sample=True, seed=0)], 4, EOS)
    counts = torch.bincount(torch.cat([sample(scores, state).ids for _ in range(3000)]), minlength=4)
    assert counts[3] == 0
    assert torch.allclose(counts[:3] / 3000, scores[0, :3].softmax(-1), atol=0.03)


def test_temperature_scales_the_reported_logprobs():
    scores = logits(1)
    state = SamplingState.build([make_sequence(temperature=0.5, seed=1, top_n_tokens=3)], VOCAB, EOS)
    out = sample(scores, state)
    expected = (scores / 0.5).log_softmax(-1)
    assert out.logprobs.item() == pytest.approx(expected[0, out.ids.item()].item(), abs=1e-5)
    assert torch.allclose(out.top_logprobs[0], expected[0].topk(3).values, atol=1e-5)


ROWS = [
    dict(),
    dict(do_sample=True, seed=1),
    dict(temperature=0.7, top_k=5, seed=2),
    dict(top_p=0.8, repetition_penalty=1.3, seed=3),
    dict(typical_p=0.5, frequency_penalty=0.4, seed=4, top_n_tokens=2),
    dict(repetition_penalty=1.2, presence_penalty=-0.5, logit_bias={3: 1.5}),
    dict(do_sample=True, top_k=3, top_p=0.5, typical_p=0.9, temperature=1.3, seed=5, top_n_tokens=4),
]


def test_vectorised_batch_equals_each_row_alone():
    scores = logits(len(ROWS), seed=7)
    histories = [[(i * 7 + j) % VOCAB for j in range(6)] for i in range(len(ROWS))]

    def build(params, history):
        return make_sequence(prompt=history[:3], output=history[3:], **params)

    for _ in range(3):
        batch_state = SamplingState.build([build(p, h) for p, h in zip(ROWS, histories)], VOCAB, EOS)
        batched = sample(scores, batch_state)
        for row, (params, history) in enumerate(zip(ROWS, histories)):
            alone = sample(scores[row:row + 1], SamplingState.build([build(params, history)], VOCAB, EOS))
            assert alone.ids.item() == batched.ids[row].item(), params
            assert alone.logprobs.item() == pytest.approx(batched.logprobs[row].item(), abs=1e-5)
            n = params.get("top_n_tokens", 0)
            if n:
                assert alone.top_ids[0, :n].tolist() == batched.top_ids[row, :n].tolist()
        scores = scores.roll(1, dims=1)


def test_temperature_zero_is_greedy():
    sequence = make_sequence(temperature=0.0)
    assert sequence.generator is None and sequence.seed is None
    state = SamplingState.build([sequence], VOCAB, EOS)
    scores = logits(1)
    assert sample(scores, state).ids.item() == scores.argmax().item()


def test_log_normalizer_matches_logsumexp_with_masked_and_distant_scores():
    from serving.engine.sampling import log_normalizer

    scores = torch.randn(4, 1000) * 3
    scores[1, 10:] = float("-inf")
    scores[2, ::2] = -500.0
    scores[3] = float("-inf")
    assert torch.allclose(log_normalizer(scores)[:3], scores[:3].logsumexp(dim=-1), atol=1e-5)
    assert log_normalizer(scores)[3] == float("-inf")
