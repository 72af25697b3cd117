"""The engine's output against transformers' `generate`, alone and batched, greedy and seeded."""

from __future__ import annotations

import pytest
import torch

from serving.engine import cpu_kernels
from serving.messages import Admitted, Finished, FinishReason, TokenDelta
from engine_helpers import PROMPTS, drain, finished, generate_alone, request, token_ids

MAX_NEW = 12


@pytest.fixture(scope="module")
def references(loaded) -> dict[str, list[int]]:
    """Greedy continuations by `model.generate`, which stops at EOS like the engine does."""
    tokenizer, model = loaded.tokenizer, loaded.model
    result = {}
    with torch.inference_mode():
        for prompt in PROMPTS:
            ids = torch.tensor([tokenizer.encode(prompt)])
            out = model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False)
            result[prompt] = out[0, ids.shape[1]:].tolist()
    return result


def test_greedy_alone_matches_generate(make_engine, references):
    engine = make_engine()
    for prompt in PROMPTS:
        events = generate_alone(engine, request("r", prompt, MAX_NEW))
        assert token_ids(events) == references[prompt], prompt
        done = finished(events)
        assert done.generated_tokens == len(references[prompt])
        assert done.seed is None


@pytest.mark.parametrize("kernel", [True, False], ids=["decode-kernel", "gathered"])
def test_batch_of_different_lengths_matches_each_alone(make_engine, references, kernel):
    """With the CPU decode kernel (the default) and with CPU_DECODE_KERNEL=false (blocks gathered for SDPA)."""
    engine = make_engine(decode_kernel=kernel)
    attention = engine.runner.cache.attention
    assert attention.in_place is kernel and attention.prefill_in_place is (kernel and cpu_kernels.fast_prefill())
    for i, prompt in enumerate(PROMPTS):
        assert engine.add_request(request(f"r{i}", prompt, MAX_NEW))[0].request_id == f"r{i}"
    events = drain(engine)
    for i, prompt in enumerate(PROMPTS):
        assert token_ids(events[f"r{i}"]) == references[prompt], prompt
    assert engine.stats() == (0, 0)


def test_late_request_joins_while_an_earlier_one_decodes(make_engine):
    engine = make_engine()
    engine.add_request(request("early", PROMPTS[3], 30, ignore_eos=True))
    for _ in range(3):
        engine.step()
    engine.add_request(request("late", PROMPTS[2], 5, ignore_eos=True))
    step_events = engine.step()
    assert sorted((e.request_id, type(e)) for e in step_events) == [("early", TokenDelta), ("late", TokenDelta)]
    assert engine.stats() == (2, 0)
    rest = drain(engine)
    assert finished(rest["late"]).finish_reason is FinishReason.LENGTH
    assert len(token_ids(rest["early"])) == 30 - 4
    late = [e.token.id for e in step_events if e.request_id == "late"] + token_ids(rest["late"])
    assert late == token_ids(generate_alone(make_engine(), request("x", PROMPTS[2], 5, ignore_eos=True)))


SAMPLED = dict(do_sample=True, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.3, seed=1234)


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(make_engine):
    engine = make_engine()
    alone = generate_alone(engine, request("s", PROMPTS[4], 16, ignore_eos=True, **SAMPLED))
    engine.add_request(request("g", PROMPTS[0], 20, ignore_eos=True))
    engine.add_request(request("other", PROMPTS[6], 20, ignore_eos=True, do_sample=True, seed=5, typical_p=0.8))
    engine.step()
    engine.step()
    engine.add_request(request("s", PROMPTS[4], 16, ignore_eos=True, **SAMPLED))
    batched = drain(engine)
    assert token_ids(batched["s"]) == token_ids(alone)
    assert finished(batched["s"]).seed == 1234
    assert token_ids(batched["other"]) != token_ids(alone)


def test_seed_is_reported_only_when_sampling(make_engine):
    engine = make_engine()
    greedy = engine.add_request(request("g", "hi"))[0]
    sampled = engine.add_request(request("s", "hi", temperature=0.7))[0]
    assert isinstance(greedy, Admitted) and greedy.seed is None
    assert isinstance(sampled, Admitted) and isinstance(sampled.seed, int)
    events = drain(engine)
    assert finished(events["s"]).seed == sampled.seed
    assert finished(events["g"]).seed is None


def test_chunked_prefill_of_a_long_prompt_matches_generate(make_engine, references):
    engine = make_engine(max_batch_prefill_tokens=4)
    engine.add_request(request("short", PROMPTS[1], MAX_NEW))
    engine.add_request(request("long", PROMPTS[6], MAX_NEW))
    events = drain(engine)
    assert token_ids(events["short"]) == references[PROMPTS[1]]
    assert token_ids(events["long"]) == references[PROMPTS[6]]


def test_top_n_tokens_come_from_the_same_distribution(make_engine):
    engine = make_engine()
    events = generate_alone(engine, request("t", PROMPTS[2], 4, ignore_eos=True, top_n_tokens=3))
    deltas = [e for e in events if isinstance(e, (TokenDelta, Finished))]
    assert len(deltas) == 4
    for delta in deltas:
        assert len(delta.top_tokens) == 3
        logprobs = [t.logprob for t in delta.top_tokens]
        assert logprobs == sorted(logprobs, reverse=True)
        assert delta.top_tokens[0].id == delta.token.id
        assert delta.top_tokens[0].logprob == pytest.approx(delta.token.logprob)
        assert all(lp <= 0 for lp in logprobs)


def test_a_step_mixes_the_decode_of_running_rows_with_new_prefills(make_engine):
    engine = make_engine()
    engine.add_request(request("early", PROMPTS[3], 10, ignore_eos=True))
    assert [e.request_id for e in engine.step()] == ["early"]
    long_prompt = " ".join(["word"] * 120)
    engine.add_request(request("long", long_prompt, 10, ignore_eos=True))
    engine.add_request(request("short", PROMPTS[1], 10, ignore_eos=True))
    assert sorted(e.request_id for e in engine.step()) == ["early", "long", "short"]  # one forward
    assert engine.stats() == (3, 0)


def test_a_long_prompt_is_prefilled_in_chunks_while_the_others_decode(make_engine):
    engine = make_engine(max_batch_prefill_tokens=40)
    engine.add_request(request("early", PROMPTS[3], 12, ignore_eos=True))
    engine.step()
    long_prompt = " ".join(["word"] * 120)
    engine.add_request(request("long", long_prompt, 4, ignore_eos=True))
    steps = [engine.step()]
    while not any(e.request_id == "long" for e in steps[-1]):
        steps.append(engine.step())
    assert len(steps) >= 3  # the prompt took several steps
    assert all(any(e.request_id == "early" for e in events) for events in steps)  # the decode never paused
    events = drain(engine)
    alone = generate_alone(make_engine(), request("x", long_prompt, 4, ignore_eos=True))
    assert [e.token.id for events in steps for e in events if e.request_id == "long"] + \
        token_ids(events["long"]) == token_ids(alone)


def test_groups_prefilled_in_one_step_decode_as_if_alone(make_engine):
    engine = make_engine()
    prompts = {"long": " ".join(["word"] * 120), "short": PROMPTS[0], "mid": PROMPTS[6]}
    for request_id, prompt in prompts.items():
        engine.add_request(request(request_id, prompt, 6, ignore_eos=True))
    events = drain(engine)
    for request_id, prompt in prompts.items():
        alone = generate_alone(make_engine(), request("x", prompt, 6, ignore_eos=True))
        assert token_ids(events[request_id]) == token_ids(alone), request_id
