"""The engine's request lifecycle: validation, stops, aborts, failures, tokenize and info."""

from __future__ import annotations

import msgspec
import pytest

from engine_helpers import PROMPTS, drain, engine_config, finished, generate_alone, request, token_ids
from serving.engine.engine import LLMEngine
from serving.engine.loader import load_model
from serving.messages import (
    Admitted,
    ChatMessage,
    ChatPrompt,
    ErrorKind,
    Failed,
    FinishReason,
    TokenDelta,
    TokenizeRequest,
)

CHAT = ChatPrompt(messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "What is a model?")))
EOS = 2


def test_abort_drops_a_running_row_and_a_waiting_request(make_engine):
    engine = make_engine(max_batch_size=1)
    engine.add_request(request("running", PROMPTS[1], 50, ignore_eos=True))
    engine.add_request(request("waiting", PROMPTS[2], 50, ignore_eos=True))
    engine.step()
    assert engine.stats() == (1, 1)
    engine.abort("running")
    engine.abort("waiting")
    engine.abort("unknown")
    assert engine.step() == []
    assert engine.stats() == (0, 0)
    assert not engine.has_work()
    assert engine.add_request(request("next", PROMPTS[1], 3))[0].request_id == "next"
    assert len(token_ids(drain(engine)["next"])) == 3


def test_abort_during_a_chunked_prefill(make_engine):
    engine = make_engine(max_batch_prefill_tokens=3)
    engine.add_request(request("long", PROMPTS[6], 5))
    assert engine.step() == []
    engine.abort("long")
    assert engine.step() == []
    assert engine.stats() == (0, 0) and not engine.has_work()


def test_a_step_that_fails_once_is_retried_and_every_request_completes(make_engine):
    engine = make_engine()
    expected = {name: token_ids(generate_alone(engine, request("ref", PROMPTS[i], 12, ignore_eos=True)))
                for name, i in (("a", 1), ("b", 3), ("c", 4))}
    reference = finished(generate_alone(engine, request("ref", PROMPTS[1], 12, ignore_eos=True,
                                                        prefill_logprobs=True)))
    engine.add_request(request("a", PROMPTS[1], 12, ignore_eos=True, prefill_logprobs=True))
    engine.add_request(request("b", PROMPTS[3], 12, ignore_eos=True))
    events = {name: [] for name in "abc"}
    for _ in range(3):
        for event in engine.step():
            events[event.request_id].append(event)
    decode = engine.runner.decode

    def broken(batch):
        engine.runner.decode = decode
        raise RuntimeError("CUDA out of memory")

    engine.runner.decode = broken
    engine.add_request(request("c", PROMPTS[4], 12, ignore_eos=True))
    for name, got in drain(engine).items():
        events[name].extend(got)
    assert engine.check_health()
    for name in "abc":
        assert not any(isinstance(e, Failed) for e in events[name])
        assert token_ids(events[name]) == expected[name]
        finished(events[name])
    assert [t.id for t in finished(events["a"]).prefill] == [t.id for t in reference.prefill]
    assert [t.logprob for t in finished(events["a"]).prefill] == pytest.approx(
        [t.logprob for t in reference.prefill], abs=1e-4)
    assert engine.stats() == (0, 0) and not engine.has_work()


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_a_request_that_makes_every_step_fail_fails_alone(make_engine, phase):
    engine = make_engine()
    expected = {name: token_ids(generate_alone(engine, request("ref", PROMPTS[i], 10, ignore_eos=True)))
                for name, i in (("a", 1), ("b", 3), ("c", 4))}
    original = getattr(engine.runner, phase)

    def faulty(batch, *args):
        if any(s.request_id == "bad" for s in batch.sequences):
            raise RuntimeError("boom")
        return original(batch, *args)

    setattr(engine.runner, phase, faulty)
    for name, i in (("a", 1), ("bad", 2), ("b", 3), ("c", 4)):
        engine.add_request(request(name, PROMPTS[i], 10, ignore_eos=True))
    events = drain(engine)
    assert events["bad"][-1] == Failed("bad", ErrorKind.GENERATION, "Request failed during generation: boom")
    for name in "abc":
        assert token_ids(events[name]) == expected[name]
        finished(events[name])
    assert engine.stats() == (0, 0) and not engine.has_work()
    assert engine.check_health()


def test_overloaded_beyond_max_concurrent_requests(make_engine):
    engine = make_engine(max_concurrent_requests=2)
    assert isinstance(engine.add_request(request("a", "hi"))[0], Admitted)
    assert isinstance(engine.add_request(request("b", "hi"))[0], Admitted)
    [failed] = engine.add_request(request("c", "hi"))
    assert failed == Failed("c", ErrorKind.OVERLOADED, "Model is overloaded")
    drain(engine)
    assert isinstance(engine.add_request(request("d", "hi"))[0], Admitted)


def test_chat_is_rendered_with_the_template(make_engine, loaded):
    engine = make_engine()
    [admitted] = engine.add_request(request("chat", chat=CHAT, max_new_tokens=3))
    rendered = loaded.tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in CHAT.messages], tokenize=False, add_generation_prompt=True)
    assert admitted.input_length == len(loaded.tokenizer.encode(rendered, add_special_tokens=False))
    assert finished(drain(engine)["chat"]).generated_tokens == 3


def test_chat_without_a_template_is_a_template_error(no_template_dir):
    config = engine_config(no_template_dir)
    engine = LLMEngine(load_model(config), config)
    [failed] = engine.add_request(request("chat", chat=CHAT))
    assert failed == Failed("chat", ErrorKind.TEMPLATE, "Template error: template not found")
    result = engine.tokenize(TokenizeRequest("t", chat=CHAT))
    assert result.error == Failed("t", ErrorKind.TEMPLATE, "Template error: template not found")
    assert not engine.info().has_chat_template


def test_truncate_keeps_the_last_tokens(make_engine, loaded):
    engine = make_engine()
    ids = loaded.tokenizer.encode(PROMPTS[6])
    tail = loaded.tokenizer.decode(ids[-4:])
    assert loaded.tokenizer.encode(tail) == ids[-4:]
    [admitted] = engine.add_request(request("t", PROMPTS[6], 6, truncate=4))
    assert admitted.input_length == 4
    truncated = token_ids(drain(engine)["t"])
    assert truncated == token_ids(generate_alone(engine, request("tail", tail, 6)))


def test_stop_sequence_ends_the_generation_and_stays_in_the_text(make_engine):
    engine = make_engine()
    full = finished(generate_alone(engine, request("full", PROMPTS[5], 12, ignore_eos=True))).generated_text
    stop = full[len(full) // 2:len(full) // 2 + 2]
    done = finished(generate_alone(engine, request("stop", PROMPTS[5], 12, ignore_eos=True, stop=("zzz", stop))))
    assert done.finish_reason is FinishReason.STOP_SEQUENCE
    assert stop in done.generated_text
    assert full.startswith(done.generated_text)
    assert done.generated_tokens < 12


def test_a_stop_string_ending_inside_a_token_cuts_that_token_text(make_engine):
    engine = make_engine()
    events = generate_alone(engine, request("full", PROMPTS[5], 12, ignore_eos=True))
    deltas = [e for e in events if isinstance(e, TokenDelta)]
    texts = [d.token.text for d in deltas]
    # A stop string that starts in one token's text and ends inside the next one, before its end.
    k = next(k for k in range(1, len(texts)) if len(texts[k]) >= 2 and texts[k - 1]
             and texts[k - 1][-1] + texts[k][0] not in "".join(texts[:k]))
    stop = texts[k - 1][-1] + texts[k][0]
    cut_events = generate_alone(engine, request("cut", PROMPTS[5], 12, ignore_eos=True, stop=(stop,)))
    cut_deltas = [e for e in cut_events if isinstance(e, TokenDelta)]
    done = finished(cut_events)
    assert done.finish_reason is FinishReason.STOP_SEQUENCE
    assert done.generated_text == "".join(texts[:k]) + texts[k][0]
    assert done.generated_text.endswith(stop) and done.generated_tokens == k + 1
    last = done.token  # the last token comes with Finished
    assert (last.id, last.logprob, last.text) == (deltas[k].token.id, deltas[k].token.logprob, texts[k][0])
    assert "".join(d.token.text for d in cut_deltas) + last.text == done.generated_text


def test_a_prompt_of_token_ids_and_its_echo(make_engine, loaded):
    engine = make_engine()
    ids = loaded.tokenizer.encode(PROMPTS[6])
    text = request("text", PROMPTS[6], 6)
    given = msgspec.structs.replace(request("ids", None, 6), prompt_ids=tuple(ids), echo=True)
    admitted = engine.add_request(given) + engine.add_request(text)
    assert [event.prompt_text for event in admitted] == [loaded.tokenizer.decode(ids, skip_special_tokens=True),
                                                          None]
    events = drain(engine)
    from_text, from_ids = finished(events[text.request_id]), finished(events[given.request_id])
    assert from_ids.generated_text == from_text.generated_text and from_ids.input_length == len(ids)
    unknown = msgspec.structs.replace(request("bad", None, 6), prompt_ids=(1, len(loaded.tokenizer)))
    [failed] = engine.add_request(unknown)
    assert isinstance(failed, Failed) and failed.kind is ErrorKind.VALIDATION
    assert failed.message == (f"Input validation error: token ids must be >= 0 and < {len(loaded.tokenizer)}. "
                              f"Given: {len(loaded.tokenizer)}")


def test_context_full_finishes_with_length(make_engine):
    engine = make_engine(max_total_tokens=24, max_input_tokens=16)
    [admitted] = engine.add_request(request("fill", PROMPTS[2], None, ignore_eos=True))
    done = finished(drain(engine)["fill"])
    assert done.finish_reason is FinishReason.LENGTH
    assert done.generated_tokens == 24 - admitted.input_length


def test_eos_finishes_with_eos_token_and_its_text_is_kept_in_the_stream(make_engine):
    engine = make_engine()
    events = generate_alone(engine, request("eos", PROMPTS[1], 10, logit_bias={EOS: 100.0}))
    assert not [e for e in events if isinstance(e, TokenDelta)]
    done = finished(events)  # the EOS token rides on the `Finished`
    assert done.token.id == EOS and done.token.special and done.token.text == "</s>"
    assert (done.finish_reason, done.generated_tokens, done.generated_text) == (FinishReason.EOS_TOKEN, 1, "")


def test_min_new_tokens_and_ignore_eos(make_engine):
    engine = make_engine()
    done = finished(generate_alone(engine, request("min", PROMPTS[1], 10, min_new_tokens=3, logit_bias={EOS: 100.0})))
    assert (done.finish_reason, done.generated_tokens) == (FinishReason.EOS_TOKEN, 4)
    events = generate_alone(engine, request("ign", PROMPTS[1], 4, ignore_eos=True, logit_bias={EOS: 100.0}))
    assert token_ids(events) == [EOS] * 4
    assert finished(events).finish_reason is FinishReason.LENGTH
    events = generate_alone(engine, request("both", PROMPTS[1], 4, ignore_eos=True, min_new_tokens=4,
                                            logit_bias={EOS: 100.0}))
    assert token_ids(events) == [EOS] * 4  # min_new_tokens keeps EOS away only where EOS would end the request


def test_last_allowed_token_being_eos_is_length(make_engine):
    engine = make_engine()
    done = finished(generate_alone(engine, request("one", PROMPTS[1], 1, logit_bias={EOS: 100.0})))
    assert (done.finish_reason, done.generated_tokens) == (FinishReason.LENGTH, 1)


LONG = "context_length_exceeded"


@pytest.mark.parametrize(("overrides", "req", "message", "code"), [
    ({}, request("r", ""), "Input validation error: `inputs` cannot be empty", None),
    ({"max_total_tokens": 14, "max_input_tokens": 8}, request("r", PROMPTS[2], 2),
     "Input validation error: `inputs` must have less than 8 tokens. Given: 11", LONG),
    ({"max_total_tokens": 14, "max_input_tokens": 8}, request("r", PROMPTS[2], 5),
     "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 14. Given: 11 `inputs` tokens and 5 "
     "`max_new_tokens`", LONG),
    ({"max_total_tokens": 1030}, request("r", PROMPTS[2], 5000),
     "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 1030. Given: 11 `inputs` tokens and "
     "1024 `max_new_tokens`", LONG),
    ({"max_total_tokens": 14, "max_input_tokens": 8}, request("r", "hi", 5, truncate=9),
     "Input validation error: `truncate` must be strictly positive and less than 8. Given: 9", None),
])
def test_validation_failures_come_back_as_events(make_engine, overrides, req, message, code, loaded):
    assert len(loaded.tokenizer.encode(PROMPTS[2])) == 11
    engine = make_engine(**overrides)
    assert engine.add_request(req) == [Failed("r", ErrorKind.VALIDATION, message, code)]
    assert not engine.has_work()


def test_tokenize_text_and_chat(make_engine, loaded):
    engine = make_engine()
    text = "café 日本"
    result = engine.tokenize(TokenizeRequest("t", text=text))
    assert result.error is None and result.templated_text is None
    assert [t.id for t in result.tokens] == loaded.tokenizer.encode(text)
    data = text.encode()
    assert all(data[t.start:t.stop].decode() == t.text for t in result.tokens)
    assert result.tokens[-1].stop == len(data)
    chat = engine.tokenize(TokenizeRequest("c", chat=CHAT))
    assert chat.templated_text is not None and chat.templated_text.startswith("<s><|system|>\nBe brief.")
    assert chat.tokens[0].text == "<s>" and (chat.tokens[0].start, chat.tokens[0].stop) == (0, 3)


def test_info_reports_the_resolved_limits(make_engine):
    info = make_engine(max_batch_total_tokens=5000, max_concurrent_requests=7).info()
    assert (info.max_total_tokens, info.max_input_tokens) == (512, 511)
    assert (info.max_batch_total_tokens, info.max_concurrent_requests) == (5000, 7)
    assert (info.dtype, info.device, info.device_map) == ("float32", "cpu", {"": "cpu"})
    assert info.has_chat_template and info.num_parameters > 0


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_a_row_with_nan_logits_fails_alone_and_the_others_go_on(make_engine, phase):
    engine = make_engine()
    expected = token_ids(generate_alone(engine, request("ref", PROMPTS[3], 8, ignore_eos=True)))
    original = getattr(engine.runner, phase)

    def poisoned(batch, *args):
        logits = original(batch, *args)
        if logits is not None:
            for row, sequence in enumerate(batch.sequences):
                if sequence.request_id == "bad":
                    logits[row] = float("nan")
        return logits

    setattr(engine.runner, phase, poisoned)
    engine.add_request(request("bad", PROMPTS[1], 8, ignore_eos=True))
    engine.add_request(request("good", PROMPTS[3], 8, ignore_eos=True))
    events = drain(engine)
    assert events["bad"][-1] == Failed("bad", ErrorKind.GENERATION,
                                       "Request failed during generation: NaN in the logits")
    assert token_ids(events["good"]) == expected
    finished(events["good"])
    assert engine.stats() == (0, 0) and not engine.has_work()
