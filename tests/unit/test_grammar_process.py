"""The grammar process's wire format: steps and answers as int64s, everything else pickled (no torch)."""

from __future__ import annotations

from serving.engine.grammar_process import compile_outcome, decode, decode_step, encode, encode_answer, encode_step
from serving.messages import Grammar, GrammarKind


def test_a_step_comes_back_as_it_was_sent():
    data = encode_step(7, ([11, 12], [3, 4]), [5], [2, 9], ([11, 12, 13], [100, 2**40, 0]), [13, 11, 12])
    assert decode_step(data) == (7, [(11, 3), (12, 4)], [5], [2, 9], [(11, 100), (12, 2**40), (13, 0)],
                                 [13, 11, 12])
    assert decode_step(encode_step(1, ([], []), [], [], ([], []), [])) == (1, [], [], [], [], [])


def test_answers_with_and_without_refused_tokens_come_back_as_they_were_sent():
    assert decode(encode_answer((128, [], [True, False, True]))) == (128, [], [True, False, True])
    assert decode(encode_answer((3, [(17, "token refused")], [False]))) == (3, [(17, "token refused")], [False])


def test_other_messages_are_pickled():
    grammar = Grammar(kind=GrammarKind.REGEX, value="[0-9]+")
    assert decode(encode(("compile", 4, grammar))) == ("compile", 4, grammar)


def test_a_compiler_failure_is_a_message_not_an_exception():
    """Whatever the compiler raises comes back as the grammar's error (here it is given no tokenizer at all), so the
    compile thread goes on."""
    template, error = compile_outcome(None, Grammar(kind=GrammarKind.REGEX, value="[0-9]+"))  # type: ignore[arg-type]
    assert template is None and error and error.startswith("the compiler failed: ")
