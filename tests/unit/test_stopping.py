"""Finish precedence (length, EOS, stop sequence) and the stop criteria built from a request."""

from __future__ import annotations

from types import SimpleNamespace

from serving.engine.stopping import StopCriteria, eos_token_ids
from serving.messages import FinishReason, StoppingParams

EOS = frozenset({2})


def criteria(max_new_tokens=5, **kwargs) -> StopCriteria:
    return StopCriteria(max_new_tokens=max_new_tokens, eos_ids=EOS, **kwargs)


def test_length_when_max_new_tokens_reached():
    stop = criteria(3)
    assert stop.check(10, 1, "a") is None
    assert stop.check(10, 2, "b") is None
    assert stop.check(10, 3, "c") is FinishReason.LENGTH


def test_last_allowed_token_being_eos_is_length():
    assert criteria(3).check(2, 3, "</s>") is FinishReason.LENGTH


def test_eos_before_length():
    assert criteria(3).check(2, 1, "</s>") is FinishReason.EOS_TOKEN


def test_eos_does_not_stop_until_more_than_min_new_tokens():
    stop = criteria(10, min_new_tokens=2)
    assert stop.check(2, 1, "") is None
    assert stop.check(2, 2, "") is None
    assert stop.check(2, 3, "") is FinishReason.EOS_TOKEN


def test_ignore_eos_and_the_context_cap():
    params = StoppingParams(max_new_tokens=50, ignore_eos=True)
    stop = StopCriteria.build(params, input_length=10, max_total_tokens=20, eos_ids=EOS)
    assert stop.max_new_tokens == 10 and stop.eos_ids == frozenset()
    assert stop.check(2, 1, "") is None
    assert StopCriteria.build(StoppingParams(), 10, 20, EOS).max_new_tokens == 10
    assert StopCriteria.build(StoppingParams(max_new_tokens=4), 10, 20, EOS).max_new_tokens == 4


def test_stop_sequence_split_across_tokens():
    stop = criteria(100, stop=("world",))
    assert stop.check(10, 1, "hello wo") is None
    assert stop.check(11, 2, "") is None
    assert stop.check(12, 3, "rl") is None
    assert stop.check(13, 4, "d!") is FinishReason.STOP_SEQUENCE


def test_stop_sequence_inside_a_token_and_after_eos_and_length():
    assert criteria(100, stop=("lo",)).check(10, 1, "hello") is FinishReason.STOP_SEQUENCE
    assert criteria(100, stop=("</s>",)).check(2, 1, "</s>") is FinishReason.EOS_TOKEN
    assert criteria(1, stop=("x",)).check(10, 1, "x") is FinishReason.LENGTH


def test_old_text_does_not_match_again_and_empty_stops_are_ignored():
    stop = StopCriteria.build(StoppingParams(stop=("", "abc")), 1, 100, EOS)
    assert stop.stop == ("abc",)
    for i, piece in enumerate("xyzabxyz", start=1):
        assert stop.check(10, i, piece) is None


def test_eos_ids_from_tokenizer_and_generation_config():
    tokenizer = SimpleNamespace(eos_token_id=2)
    assert eos_token_ids(tokenizer, SimpleNamespace(eos_token_id=[7, 8])) == {2, 7, 8}
    assert eos_token_ids(tokenizer, SimpleNamespace(eos_token_id=2)) == {2}
    assert eos_token_ids(SimpleNamespace(eos_token_id=None), None) == frozenset()


def test_a_stop_string_completed_inside_a_token_cuts_the_rest_of_that_token():
    stop = criteria(100, stop=("e ",))
    assert stop.check(10, 1, " Ne") is None
    assert stop.check(11, 2, " deprecated") is FinishReason.STOP_SEQUENCE
    assert stop.cut(" deprecated") == " "
    assert stop.cut(" Ne deprecated") == " Ne "


def test_the_first_stop_string_to_end_decides_the_cut():
    stop = criteria(100, stop=("cde", "bc", "c"))
    assert stop.check(10, 1, "abcdef") is FinishReason.STOP_SEQUENCE
    assert stop.cut("abcdef") == "abc"


def test_nothing_is_cut_without_a_stop_string():
    stop = criteria(2, stop=("zz",))
    assert stop.check(10, 1, "ab") is None
    assert stop.check(10, 2, "cd") is FinishReason.LENGTH
    assert stop.cut("abcd") == "abcd"
