"""The paged KV cache through the engine: prefix caching, identical prefixes computed once, preemption and
recompute, all with the outputs of transformers' `generate`."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import drain, finished, generate_alone, request, token_ids

SYSTEM = "You are a helpful assistant who answers in short sentences about data and servers. "
QUESTIONS = ["What is a token?", "Why batch requests?", "Hello world", "the model was learning"]
LONG_PREFIX = " ".join(["word", "token", "server", "data"] * 125)  # 1,000 tokens


def reference(loaded, prompt: str, max_new: int) -> list[int]:
    """Greedy continuation by `generate`, without EOS."""
    ids = torch.tensor([loaded.tokenizer.encode(prompt)])
    with torch.inference_mode():
        out = loaded.model.generate(ids, max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def counting(engine) -> list[int]:
    """The tokens of every forward the engine runs from now on."""
    counts: list[int] = []
    run = engine.runner.run

    def counted(batch):
        counts.append(batch.tokens)
        return run(batch)

    engine.runner.run = counted
    return counts


def test_batches_sharing_a_system_prompt_match_generate_and_hit_the_cache(make_engine, loaded):
    engine = make_engine()
    prompts = [SYSTEM + question for question in QUESTIONS]
    first = generate_alone(engine, request("first", prompts[0], 8, ignore_eos=True))
    assert token_ids(first) == reference(loaded, prompts[0], 8)
    for i, prompt in enumerate(prompts):
        engine.add_request(request(f"r{i}", prompt, 8, ignore_eos=True))
    events = drain(engine)
    for i, prompt in enumerate(prompts):
        assert token_ids(events[f"r{i}"]) == reference(loaded, prompt, 8), prompt
    health = engine.health("h")
    assert health.prefix_hit_tokens > 0 and health.prefix_hit_tokens < health.prefix_queried_tokens
    assert health.blocks_used == 0 and health.blocks_free == engine.info().num_blocks


@pytest.mark.parametrize("caching", [True, False], ids=["cache-on", "cache-off"])
def test_a_second_request_with_a_long_shared_prefix_computes_only_its_suffix(make_engine, loaded, caching):
    engine = make_engine(max_total_tokens=1200, prefix_caching=caching)
    prefix_length = len(loaded.tokenizer.encode(LONG_PREFIX))
    assert 950 < prefix_length < 1100
    counts = counting(engine)
    one = generate_alone(engine, request("one", LONG_PREFIX + " " + QUESTIONS[0], 4, ignore_eos=True))
    computed_first = sum(counts)
    counts.clear()
    two = generate_alone(engine, request("two", LONG_PREFIX + " " + QUESTIONS[1], 4, ignore_eos=True))
    prompt_two = len(loaded.tokenizer.encode(LONG_PREFIX + " " + QUESTIONS[1]))
    if caching:
        assert sum(counts) - 3 < prompt_two - prefix_length + 16  # the suffix, from the last shared block on
    else:
        assert sum(counts) == prompt_two + 3
    assert computed_first > prefix_length
    assert token_ids(one) == reference(loaded, LONG_PREFIX + " " + QUESTIONS[0], 4)
    assert token_ids(two) == reference(loaded, LONG_PREFIX + " " + QUESTIONS[1], 4)


def test_sixteen_requests_arriving_together_compute_the_prefix_once(make_engine, loaded):
    engine = make_engine(max_total_tokens=1200, max_batch_prefill_tokens=4096)
    counts = counting(engine)
    prompts = [f"{LONG_PREFIX} {QUESTIONS[i % 4]} {i}" for i in range(16)]
    for i, prompt in enumerate(prompts):
        engine.add_request(request(f"r{i}", prompt, 3, ignore_eos=True))
    events = drain(engine)
    prefix_length = len(loaded.tokenizer.encode(LONG_PREFIX))
    suffixes = sum(len(loaded.tokenizer.encode(p)) for p in prompts) - 16 * prefix_length
    assert sum(counts) < prefix_length + suffixes + 16 * 16 + 16 * 3  # one prefix; suffixes from their block
    for i in (0, 5, 15):
        assert token_ids(events[f"r{i}"]) == reference(loaded, prompts[i], 3)


def test_outputs_and_prompt_logprobs_are_the_same_with_the_cache_hit_and_missed(make_engine):
    prompt = SYSTEM + QUESTIONS[1]
    cold = make_engine(prefix_caching=False)
    expected = finished(generate_alone(cold, request("x", prompt, 6, prefill_logprobs=True)))
    warm = make_engine()
    generate_alone(warm, request("warm", SYSTEM + QUESTIONS[2], 2))
    hit = generate_alone(warm, request("hit", prompt, 6, prefill_logprobs=True))
    plain = generate_alone(warm, request("plain", prompt, 6))
    assert token_ids(hit) == token_ids(plain)
    assert warm.health("h").prefix_hit_tokens > 0
    got = finished(hit)
    assert [t.id for t in got.prefill] == [t.id for t in expected.prefill]
    assert [t.logprob for t in got.prefill] == pytest.approx([t.logprob for t in expected.prefill], abs=1e-4)
    assert got.generated_text == expected.generated_text


def test_preempted_sequences_are_recomputed_and_match_generate(make_engine, loaded):
    engine = make_engine(max_batch_total_tokens=96, max_total_tokens=64)  # six blocks of 16 (and the null one)
    prompts = [f"{question} {i}" for i, question in enumerate(QUESTIONS * 2)]
    for i, prompt in enumerate(prompts):
        engine.add_request(request(f"r{i}", prompt, 40, ignore_eos=True))
    events = drain(engine)
    assert engine.scheduler.preemptions > 0
    for i, prompt in enumerate(prompts):
        assert token_ids(events[f"r{i}"]) == reference(loaded, prompt, 40), prompt
    assert engine.health("h").blocks_used == 0


def test_seeded_sampling_is_the_same_with_a_shared_prefix_in_a_batch(make_engine):
    sampled = dict(do_sample=True, temperature=0.9, top_p=0.95, seed=42)
    alone = generate_alone(make_engine(prefix_caching=False), request("s", SYSTEM + QUESTIONS[0], 10,
                                                                      ignore_eos=True, **sampled))
    engine = make_engine()
    for i, question in enumerate(QUESTIONS):
        engine.add_request(request(f"r{i}", SYSTEM + question, 10, ignore_eos=True, **sampled))
    assert token_ids(drain(engine)["r0"]) == token_ids(alone)
