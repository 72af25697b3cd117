"""`StepPacer`: the prompt tokens a step with decodes may carry, from measured step costs."""

from __future__ import annotations

from serving.engine.pacer import StepPacer


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
