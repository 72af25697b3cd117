"""Prompt logprobs (TGI's `decoder_input_details`): computed in the prefill forward, only for the rows that ask."""

from __future__ import annotations

import math

import pytest
import torch

from engine_helpers import PROMPTS, drain, finished, generate_alone, request, token_ids


def reference_logprobs(loaded, prompt: str) -> tuple[list[int], list[float]]:
    """The prompt's ids and the logprob of each token after the first, from one plain forward of the model."""
    ids = loaded.tokenizer.encode(prompt)
    with torch.inference_mode():
        logits = loaded.model(torch.tensor([ids])).logits[0].float()
    logprobs = logits.log_softmax(dim=-1)[:-1].gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
    return ids, logprobs.tolist()


def check_prefill(loaded, prompt: str, prefill) -> None:
    """`prefill` has one entry per prompt token, the first without a logprob, the rest as the model scores them."""
    ids, expected = reference_logprobs(loaded, prompt)
    assert [token.id for token in prefill] == ids
    assert prefill[0].logprob is None
    assert [token.logprob for token in prefill[1:]] == pytest.approx(expected, abs=1e-4)
    assert [token.text for token in prefill] == [loaded.tokenizer.decode([i]) for i in ids]
    assert all(token.logprob <= 0 and not math.isnan(token.logprob) for token in prefill[1:])


def test_prefill_logprobs_of_a_request_alone(make_engine, loaded):
    engine = make_engine()
    prompt = PROMPTS[3]
    done = finished(generate_alone(engine, request("r", prompt, 4, prefill_logprobs=True)))
    check_prefill(loaded, prompt, done.prefill)
    assert done.prefill[0].special == (done.prefill[0].id in loaded.tokenizer.all_special_ids)


def test_only_asking_rows_of_a_batch_get_prefill_and_tokens_do_not_change(make_engine, loaded):
    engine = make_engine()
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(request(f"r{i}", prompt, 6, prefill_logprobs=i % 2 == 0))
    events = drain(engine)
    plain = make_engine()
    for i, prompt in enumerate(PROMPTS):
        plain.add_request(request(f"r{i}", prompt, 6))
    plain_events = drain(plain)
    for i, prompt in enumerate(PROMPTS):
        done = finished(events[f"r{i}"])
        if i % 2 == 0:
            check_prefill(loaded, prompt, done.prefill)
        else:
            assert done.prefill == ()
        assert token_ids(events[f"r{i}"]) == token_ids(plain_events[f"r{i}"]), prompt


def test_chunked_prefill_gives_the_same_logprobs(make_engine, loaded):
    engine = make_engine(max_batch_prefill_tokens=5)
    prompt = PROMPTS[6]
    assert len(loaded.tokenizer.encode(prompt)) > 10
    done = finished(generate_alone(engine, request("r", prompt, 3, prefill_logprobs=True)))
    check_prefill(loaded, prompt, done.prefill)


def test_truncated_prompt_reports_the_kept_tokens(make_engine, loaded):
    engine = make_engine()
    prompt = PROMPTS[6]
    done = finished(generate_alone(engine, request("r", prompt, 3, truncate=4, prefill_logprobs=True)))
    assert [token.id for token in done.prefill] == loaded.tokenizer.encode(prompt)[-4:]
    assert done.prefill[0].logprob is None and len(done.prefill) == done.input_length == 4
