"""`StepPacer`: the prompt tokens a step with decodes may carry, from measured step costs."""

from __future__ import annotations

from serving.engine.pacer import RECENT_STEPS, StepPacer


def test_no_bound_until_both_costs_are_measured():
    pacer = StepPacer()
    assert pacer.prompt_tokens() is None
    pacer.record(decodes=8, prompt_tokens=0, seconds=0.004)
    assert pacer.prompt_tokens() is None
    pacer.record(decodes=0, prompt_tokens=10, seconds=0.5)  # too few tokens to measure a per-token cost
    assert pacer.prompt_tokens() is None


def test_a_step_may_carry_about_a_decode_step_of_prompt_tokens():
    pacer = StepPacer()
    pacer.record(decodes=8, prompt_tokens=0, seconds=0.004)
    pacer.record(decodes=0, prompt_tokens=1000, seconds=0.2)  # 0.2 ms a token
    assert pacer.prompt_tokens() == 20
    pacer.record(decodes=8, prompt_tokens=100, seconds=0.004 + 0.01)  # 0.1 ms a token beyond the decode
    assert 20 < pacer.prompt_tokens() < 40


def test_after_recent_long_steps_a_step_may_take_as_long_as_they_did():
    pacer = StepPacer()
    for _ in range(8):
        pacer.record(decodes=8, prompt_tokens=0, seconds=0.004)
    for _ in range(3):  # full-budget steps, 0.2 ms a prompt token
        pacer.record(decodes=8, prompt_tokens=1000, seconds=0.004 + 0.2)
    assert pacer.prompt_tokens() == 1000  # the streams just went through 0.204 s steps: 0.2 s of prompt tokens
    for _ in range(RECENT_STEPS):
        pacer.record(decodes=8, prompt_tokens=0, seconds=0.004)
    assert pacer.prompt_tokens() == 20  # out of the window: a decode step's worth again


def test_steps_the_pacer_bounded_do_not_raise_its_bound():
    pacer = StepPacer()
    for _ in range(10):
        pacer.record(decodes=8, prompt_tokens=0, seconds=0.004)
    pacer.record(decodes=8, prompt_tokens=1000, seconds=0.004 + 0.2, bounded=True)
    assert pacer.prompt_tokens() == 20
    pacer.record(decodes=0, prompt_tokens=2000, seconds=0.4)  # no stream waited on it
    assert pacer.prompt_tokens() == 20
