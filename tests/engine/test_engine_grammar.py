"""Grammar-constrained decoding in the engine: random weights, so only the mask can make the output valid."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import jsonschema
import llguidance.hf
import msgspec.structs
import pytest
import torch

from engine_helpers import PROMPTS, drain, finished, generate_alone, request, token_ids
from serving.constraints import json_schema_grammar, thinking_grammar
from serving.engine import cpu_kernels, grammar
from serving.engine.grammar import GrammarMasks
from serving.engine.grammar_process import compile_template
from serving.engine.validation import Prompt
from serving.messages import Admitted, ErrorKind, Failed, FinishReason, Grammar, GrammarKind, Thinking, TokenDelta

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "ok"],
    "additionalProperties": False,
}
IPV4 = r"((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)"


def _text(engine, events) -> str:
    return engine.detokenizer.final_text(token_ids(events))


def test_json_schema_output_validates_and_ends_with_eos(make_engine):
    engine = make_engine()
    for seed in range(4):
        events = generate_alone(engine, request("r", PROMPTS[1], 120, do_sample=True, seed=seed,
                                                grammar=json_schema_grammar(SCHEMA)))
        done = finished(events)
        assert done.finish_reason is FinishReason.EOS_TOKEN
        jsonschema.validate(json.loads(done.generated_text), SCHEMA)
        assert ", " in done.generated_text or done.generated_text.count(":") == 4


def test_regex_and_unconstrained_rows_share_a_batch(make_engine):
    engine = make_engine()
    regex = Grammar(kind=GrammarKind.REGEX, value=IPV4)
    alone = token_ids(generate_alone(make_engine(), request("free", PROMPTS[2], 10)))
    engine.add_request(request("free", PROMPTS[2], 10))
    for i in range(3):
        engine.add_request(request(f"ip{i}", PROMPTS[i], 40, do_sample=True, seed=i, grammar=regex))
    engine.add_request(request("json", PROMPTS[4], 120, do_sample=True, seed=9, temperature=0.7,
                               grammar=json_schema_grammar(SCHEMA)))
    events = drain(engine)
    assert token_ids(events["free"]) == alone  # unconstrained rows are untouched by their neighbours' masks
    for i in range(3):
        assert re.fullmatch(IPV4, finished(events[f"ip{i}"]).generated_text)
    jsonschema.validate(json.loads(finished(events["json"]).generated_text), SCHEMA)


def test_max_new_tokens_still_cuts_a_constrained_text(make_engine):
    events = generate_alone(make_engine(), request("r", PROMPTS[1], 3, grammar=json_schema_grammar(SCHEMA)))
    done = finished(events)
    assert done.finish_reason is FinishReason.LENGTH and done.generated_tokens == 3
    assert '{"name": "'.startswith(done.generated_text)


def test_grammar_with_min_tokens_or_ignore_eos_is_refused(make_engine):
    engine = make_engine()
    for options in ({"min_new_tokens": 2}, {"ignore_eos": True}):
        [event] = engine.add_request(request("r", PROMPTS[1], 10, grammar=json_schema_grammar(SCHEMA), **options))
        assert isinstance(event, Failed) and event.kind is ErrorKind.VALIDATION
        assert "min_tokens" in event.message
    assert not engine.has_work()


def test_grammar_the_tokenizer_cannot_compile_fails_with_the_compilers_message(make_engine):
    engine = make_engine()
    bad = Grammar(kind=GrammarKind.LARK, value="start: <no_such_special_token>")
    [admitted] = engine.add_request(request("r", PROMPTS[1], 10, grammar=bad))
    assert isinstance(admitted, Admitted)
    [failed] = drain(engine)["r"]
    assert isinstance(failed, Failed) and failed.kind is ErrorKind.VALIDATION
    assert failed.message.startswith("Input validation error: grammar is not valid: ")
    assert engine.stats() == (0, 0)


def test_compiled_grammar_is_shared_and_abort_while_compiling_is_clean(make_engine):
    engine = make_engine()
    grammar = json_schema_grammar(SCHEMA)
    engine.add_request(request("a", PROMPTS[1], 10, grammar=grammar))
    engine.add_request(request("b", PROMPTS[2], 10, grammar=grammar))
    assert engine._compiling[0].constraint.template is engine._compiling[1].constraint.template
    engine.abort("a")
    events = drain(engine)
    assert "a" not in events and finished(events["b"])


def test_a_dead_grammar_process_fails_only_its_sequences_and_is_replaced(make_engine):
    engine = make_engine()
    regex = Grammar(kind=GrammarKind.REGEX, value="[0-9]{30}")
    alone = token_ids(generate_alone(make_engine(), request("free", PROMPTS[2], 12)))
    engine.add_request(request("free", PROMPTS[2], 12))
    engine.add_request(request("digits", PROMPTS[1], 30, grammar=regex))
    before: list = []
    while not any(isinstance(event, TokenDelta) and event.request_id == "digits" for event in before):
        before += engine.step()
    process = engine._grammars.process
    time.sleep(0.2)  # the next mask is filled and answered: the process dies between two steps' hand-offs
    os.kill(process._process.pid, signal.SIGKILL)
    process._process.wait()
    events = drain(engine)
    *tokens, failed = events["digits"]  # a mask filled before the kill may still serve a step
    assert all(isinstance(event, TokenDelta) for event in tokens)
    assert isinstance(failed, Failed) and failed.kind is ErrorKind.GENERATION
    assert "the grammar process stopped" in failed.message
    free = [event for event in before if getattr(event, "request_id", None) == "free"] + events["free"]
    assert token_ids(free) == alone  # its neighbour goes on, unchanged
    assert isinstance(process.compile(regex).exception(timeout=10), grammar.GrammarProcessError)
    done = finished(generate_alone(engine, request("again", PROMPTS[1], 40, grammar=regex)))
    assert re.fullmatch("[0-9]{30}", done.generated_text) and engine._grammars.process is not process


def test_a_tokenizer_the_grammar_process_cannot_take_refuses_grammars_and_serves_the_rest(make_engine, monkeypatch,
                                                                                          caplog):
    def slow(tokenizer):
        raise ValueError("Only fast tokenizers are supported")

    monkeypatch.setattr(grammar, "_tokenizer_json", slow)
    engine = make_engine()
    engine.start_grammars()  # at start-up: one line, no exception
    assert "grammars are not available with this model: Only fast tokenizers are supported" in caplog.text
    [failed] = engine.add_request(request("r", PROMPTS[1], 10, grammar=json_schema_grammar(SCHEMA)))
    assert isinstance(failed, Failed) and failed.kind is ErrorKind.VALIDATION
    assert failed.message == ("Input validation error: grammars are not available with this model: "
                              "Only fast tokenizers are supported")
    assert not engine.has_work() and engine.stats() == (0, 0)
    assert finished(generate_alone(engine, request("free", PROMPTS[2], 5))).generated_tokens == 5


def test_close_ends_the_grammar_process(make_engine):
    engine = make_engine()
    generate_alone(engine, request("r", PROMPTS[1], 5, grammar=json_schema_grammar(SCHEMA)))
    process = engine._grammars.process._process
    assert process.poll() is None
    engine.close()
    assert process.poll() == 0


def test_masks_of_more_rows_than_first_mapped_grow_the_shared_rows(make_engine):
    engine = make_engine()
    cache = engine._grammar_cache()
    template = cache.submit(Grammar(kind=GrammarKind.REGEX, value="[0-9]+")).result()
    rows = grammar.FIRST_ROWS + 3
    masks = GrammarMasks(torch.arange(rows), [cache.process.matcher(template) for _ in range(rows)], cache.process)
    scores = torch.zeros(rows, cache.process.vocab_size)
    masks.apply_(scores)
    digits = scores[0].isfinite()
    assert digits.any() and not digits.all()
    assert all(torch.equal(scores[row].isfinite(), digits) for row in range(rows))


@pytest.fixture(params=["kernel", "numpy", "torch"])
def mask_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ways of applying a mask: the `refuse_tokens` kernel, numpy where it did not build, and the torch fill
    that other devices take (run here on the CPU)."""
    if request.param == "kernel":
        assert cpu_kernels.load() is None
    else:
        monkeypatch.setattr(grammar.cpu_kernels, "loaded", lambda: False)
    if request.param == "torch":
        monkeypatch.setattr(GrammarMasks, "_apply_rows", GrammarMasks._apply_torch)
    return request.param


@pytest.mark.parametrize("vocab, words", [(8192, 256), (8232, 256), (8000, 256), (70, 3)])
def test_refuse_tokens_kernel_sets_exactly_the_unset_bits_to_minus_infinity(vocab: int, words: int):
    """Against the bits unpacked by torch: masks of every density (a few allowed, all but a few, random), rows in
    any order, logits wider and narrower than the mask."""
    assert cpu_kernels.load() is None
    generator = torch.Generator().manual_seed(vocab)
    allowed = torch.stack([torch.rand(words * 32, generator=generator) < density
                           for density in (0.0005, 0.5, 0.9995, 0.0, 1.0)])
    bits = (allowed.view(len(allowed), words, 32).long() << torch.arange(32)).sum(-1)
    bitmask = torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32)
    rows = torch.tensor([6, 0, 3, 1, 4])
    scores = torch.randn(7, vocab, generator=generator)
    expected = scores.clone()
    for mask_row, row in enumerate(rows.tolist()):
        refused = ~allowed[mask_row, :vocab]
        expected[row, :len(refused)] = expected[row, :len(refused)].masked_fill(refused, float("-inf"))
        expected[row, words * 32:] = float("-inf")
    masked = scores.clone()
    torch.ops.serving.refuse_tokens(masked, bitmask, rows)
    assert torch.equal(masked, expected)


def test_mask_touches_only_constrained_rows(make_engine, mask_path: str):
    engine = make_engine()
    cache = engine._grammar_cache()
    template = cache.submit(Grammar(kind=GrammarKind.REGEX, value="[0-9]+")).result()
    masks = GrammarMasks(torch.tensor([1]), [cache.process.matcher(template)], cache.process)
    vocab = cache.process.vocab_size
    scores = torch.zeros(3, vocab)
    masked = scores.clone()
    masks.apply_(masked)
    assert torch.equal(masked[0], scores[0]) and torch.equal(masked[2], scores[2])
    allowed = masked[1].isfinite().nonzero().flatten().tolist()
    assert allowed and all(engine.detokenizer.token_texts([t])[0].isdigit() for t in allowed)


def test_mask_refuses_logits_beyond_the_grammar_vocabulary_in_place(make_engine, mask_path: str):
    engine = make_engine()
    cache = engine._grammar_cache()
    template = cache.submit(Grammar(kind=GrammarKind.REGEX, value="[0-9]+")).result()
    masks = GrammarMasks(torch.tensor([0, 2]), [cache.process.matcher(template) for _ in range(2)], cache.process)
    vocab = cache.process.vocab_size
    scores = torch.randn(3, vocab + 40)
    masked = scores.clone()
    masks.apply_(masked)
    assert torch.equal(masked[1], scores[1])
    for row in (0, 2):
        assert masked[row, vocab:].eq(float("-inf")).all()
        allowed = masked[row].isfinite().nonzero().flatten()
        assert len(allowed) and torch.equal(masked[row, allowed], scores[row, allowed])
        assert masked[row].isfinite().sum() < vocab  # the grammar refused most of them


def test_mask_of_a_batch_constrained_in_every_row_equals_the_rows_masked_alone(make_engine, mask_path: str):
    engine = make_engine()
    cache = engine._grammar_cache()
    template = cache.submit(Grammar(kind=GrammarKind.REGEX, value="[0-9]+")).result()
    vocab = cache.process.vocab_size
    scores = torch.randn(2, vocab + 8)
    every = scores.clone()
    GrammarMasks(torch.tensor([0, 1]), [cache.process.matcher(template) for _ in range(2)], cache.process).apply_(every)
    for row in (0, 1):
        alone = scores.clone()
        GrammarMasks(torch.tensor([row]), [cache.process.matcher(template)], cache.process).apply_(alone)
        assert torch.equal(every[row], alone[row])


def _accepts(engine, grammar: Grammar, text: str) -> bool:
    """Whether `grammar`, compiled for the engine's tokenizer, takes the tokens of `text` and is then complete."""
    tokenizer = llguidance.hf.from_tokenizer(engine.loaded.tokenizer, eos_token=sorted(engine.eos_ids))
    matcher = compile_template(tokenizer, grammar)
    ids = engine.loaded.tokenizer.encode(text, add_special_tokens=False)
    return all(matcher.consume_token(token) for token in ids) and matcher.is_accepting()


def test_the_thinking_section_before_an_answer_follows_the_prompt(make_engine):
    engine = make_engine()
    answer = json_schema_grammar({"type": "integer", "minimum": 0, "maximum": 99})
    opened, unopened, closed = (thinking_grammar(answer, {}, thinking)
                                for thinking in (Thinking.OPEN, Thinking.UNOPENED, Thinking.CLOSED))
    assert _accepts(engine, opened, 'not {"json"} at all</think>\n42')  # free text until the section ends
    assert not _accepts(engine, opened, "42")
    assert _accepts(engine, unopened, "<think>hmm</think>\n\n42") and _accepts(engine, unopened, "42")
    assert not _accepts(engine, unopened, "hmm</think>42")
    assert _accepts(engine, closed, "42") and not _accepts(engine, closed, "<think>hmm</think>42")


def test_a_prompt_that_closed_the_section_gets_the_answer_grammar_alone(make_engine):
    engine = make_engine()
    grammar = msgspec.structs.replace(json_schema_grammar(SCHEMA), after_thinking=True)
    ids = engine.loaded.tokenizer.encode(PROMPTS[1])
    [admitted] = engine.add_request(request("r", PROMPTS[1], 120, do_sample=True, seed=1, grammar=grammar),
                                    prompt=Prompt(ids, Thinking.CLOSED))
    assert isinstance(admitted, Admitted) and admitted.thinking is Thinking.CLOSED
    done = finished(drain(engine)["r"])
    assert done.finish_reason is FinishReason.EOS_TOKEN
    jsonschema.validate(json.loads(done.generated_text), SCHEMA)
