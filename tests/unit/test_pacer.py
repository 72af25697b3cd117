"""`StepPacer`: the prompt tokens a step with decodes may carry, from measured step costs."""

from __future__ import annotations

from serving.engine.pacer import CEILING, RECENT_STEPS, StepPacer


def decoding(pacer: StepPacer, steps: int = 1, rows: int = 8, seconds: float = 0.004) -> StepPacer:
    """`pacer` after `steps` decode-only steps of `rows` rows taking `seconds` each."""
    for _ in range(steps):
        pacer.record(decodes=rows, prompt_tokens=0, seconds=seconds)
    return pacer


def test_no_bound_until_both_costs_are_measured():
    pacer = StepPacer()
    assert pacer.prompt_tokens(8, 1) is None
    decoding(pacer)
    assert pacer.prompt_tokens(8, 1) is None
    pacer.record(decodes=0, prompt_tokens=10, seconds=0.5)  # too few tokens to measure a per-token cost
    assert pacer.prompt_tokens(8, 1) is None


def test_a_step_may_carry_about_a_decode_step_of_prompt_tokens():
    pacer = decoding(StepPacer())
    pacer.record(decodes=0, prompt_tokens=1000, seconds=0.2)  # 0.2 ms a token
    assert pacer.prompt_tokens(8, 1) == 20
    pacer.record(decodes=8, prompt_tokens=100, seconds=0.004 + 0.01)  # 0.1 ms a token beyond the decode
    assert 20 < pacer.prompt_tokens(8, 1) < 40


def test_a_queue_may_carry_the_square_of_its_length_up_to_the_ceiling():
    pacer = decoding(StepPacer())
    pacer.record(decodes=0, prompt_tokens=1000, seconds=0.2)
    assert pacer.prompt_tokens(8, 2) == 80  # four decode steps' worth
    assert pacer.prompt_tokens(8, 3) == 180
    assert pacer.prompt_tokens(8, 20) == int(CEILING * 20)  # ten decode steps' worth at most


def test_the_decode_part_grows_with_the_step_s_rows():
    pacer = decoding(StepPacer(), rows=8, seconds=0.004)  # 0.5 ms a row
    pacer.record(decodes=0, prompt_tokens=1000, seconds=0.2)
    assert pacer.prompt_tokens(32, 20) == int(CEILING * 80)  # 32 rows: a 16 ms decode part
    assert pacer.prompt_tokens(2, 20) == int(CEILING * 20)  # fewer rows than measured: a decode step at least


def test_a_long_queue_with_no_decode_only_steps_keeps_its_bound():
    """A queue that never empties leaves the last decode-only step (few rows) stale; the ceiling follows the rows."""
    pacer = decoding(StepPacer(), rows=2, seconds=0.002)  # 1 ms a row, 2 ms a decode-only step
    pacer.record(decodes=0, prompt_tokens=1000, seconds=0.2)
    for _ in range(50):  # 40 rows decode beside 400 prompt tokens: 40 ms of rows, 80 ms of prompt
        pacer.record(decodes=40, prompt_tokens=400, seconds=0.04 + 0.08, bounded=True)
    # the prompt cost is measured against the low estimate of the rows' part (2 ms): 0.295 ms a token
    assert abs(pacer.token_seconds - 0.118 / 400) < 1e-7
    # the ceiling takes the high one (40 rows of 1 ms): 0.4 s of prompt, not the 20 ms of the stale step
    assert pacer.prompt_tokens(40, 20) == int(CEILING * 0.04 / pacer.token_seconds) > 1000


def test_a_row_s_share_from_few_rows_does_not_loosen_the_pace_of_many():
    """A decode-only step of one row is mostly fixed costs: sixteen rows do not cost sixteen of it."""
    pacer = decoding(StepPacer(), rows=1, seconds=0.007)
    pacer.record(decodes=0, prompt_tokens=1000, seconds=0.1)  # 0.1 ms a token
    assert pacer.prompt_tokens(16, 1) == 70  # one decode step's worth (7 ms), not sixteen
    pacer.record(decodes=16, prompt_tokens=100, seconds=0.012 + 0.01)
    assert pacer.token_seconds > 0.0001  # the step's 12 ms of rows are not all taken off: no cheaper prompt tokens


def test_after_recent_long_steps_a_step_may_take_as_long_as_they_did_within_the_ceiling():
    pacer = decoding(StepPacer(), steps=8)
    for _ in range(3):  # 0.02 s steps, 0.2 ms a prompt token
        pacer.record(decodes=8, prompt_tokens=80, seconds=0.004 + 0.016)
    assert pacer.prompt_tokens(8, 1) == 80  # the streams just went through 0.02 s steps: 0.016 s of prompt tokens
    for _ in range(3):  # full-budget steps
        pacer.record(decodes=8, prompt_tokens=1000, seconds=0.004 + 0.2)
    assert pacer.prompt_tokens(8, 1) == int(CEILING * 20)  # not 1,000: ten decode steps' worth at most
    decoding(pacer, steps=RECENT_STEPS)
    assert pacer.prompt_tokens(8, 1) == 20  # out of the window: a decode step's worth again


def test_steps_the_pacer_bounded_do_not_raise_its_bound():
    pacer = decoding(StepPacer(), steps=10)
    pacer.record(decodes=8, prompt_tokens=1000, seconds=0.004 + 0.2, bounded=True)
    assert pacer.prompt_tokens(8, 1) == 20
    pacer.record(decodes=0, prompt_tokens=2000, seconds=0.4)  # no stream waited on it
    assert pacer.prompt_tokens(8, 1) == 20


def test_keys_before_a_chunk_are_charged_apart_from_its_tokens():
    """A continuing chunk's cost beyond its tokens is learnt per key of context, and planned for."""
    pacer = decoding(StepPacer(), steps=4, rows=8, seconds=0.008)
    pacer.record(decodes=0, prompt_tokens=1000, seconds=0.1)  # 0.1 ms a token, from the start of a prompt
    assert pacer.prompt_tokens(8, 1, context=1000) == 80  # no per-key cost learnt yet: 8 ms of tokens
    for _ in range(30):  # 16 tokens 1,000 keys in: 1.6 ms of tokens and 5 ms of context beside the 8 ms rows
        pacer.record(decodes=8, prompt_tokens=16, seconds=0.008 + 0.0016 + 0.005, bounded=True, context=1000)
    assert abs(pacer.context_seconds - 5e-6) < 1e-8
    assert abs(pacer.token_seconds - 1e-4) < 1e-12  # the slow chunks did not make tokens look dearer
    assert pacer.prompt_tokens(8, 1, context=1000) in (29, 30)  # 8 ms less 5 ms of context: 3 ms of tokens
    assert pacer.prompt_tokens(8, 1, context=2000) == 0  # the scheduler still gives it a block
    assert pacer.prompt_tokens(8, 1) == 80  # a prompt from its start reads no context


def test_a_short_context_teaches_the_per_token_cost_net_of_the_context():
    pacer = decoding(StepPacer(), steps=4, rows=8, seconds=0.008)
    pacer.record(decodes=0, prompt_tokens=1000, seconds=0.1)
    pacer.context_seconds = 5e-6
    pacer.record(decodes=8, prompt_tokens=100, seconds=0.008 + 0.01 + 0.001, context=200)  # 200 keys: 1 ms
    assert abs(pacer.token_seconds - 1e-4) < 1e-12
    assert pacer.context_seconds == 5e-6  # too few keys to measure them


def test_steps_whose_keys_grow_with_their_tokens_are_still_fitted():
    """Every chunk after the same cached prefix: tokens and keys grow together, and their costs sum to the steps'."""
    pacer = decoding(StepPacer(), steps=4, rows=8, seconds=0.008)
    pacer.record(decodes=0, prompt_tokens=1000, seconds=0.2)  # 0.2 ms a token, from a prompt's start
    for chunks in (10, 4, 7, 10, 4, 7) * 10:  # 30 tokens after 1,100 cached keys each: 0.1 ms a token, 1 us a key
        pacer.record(decodes=8, prompt_tokens=30 * chunks, seconds=0.008 + chunks * (0.003 + 0.0011),
                     context=1100 * chunks)
    for chunks in (4, 10):
        predicted = 30 * chunks * pacer.token_seconds + 1100 * chunks * pacer.context_seconds
        assert abs(predicted - chunks * 0.0041) < 0.05 * chunks * 0.0041
