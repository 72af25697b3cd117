"""The engine's input checks give TGI's exact messages, in TGI's order; chat rendering and token offsets."""

from __future__ import annotations

import pytest

from serving.engine.limits import Limits
from serving.engine.validation import InputValidator, RequestError
from serving.messages import ChatMessage, ChatPrompt, ErrorKind, GenerateRequest, SamplingParams, StoppingParams
from serving.testing.tiny_model import TinyModelSpec, build_tokenizer

PROMPT = "the model was learning"  # 11 tokens with the tiny tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TinyModelSpec())


def validator(tokenizer, max_input=8, max_total=14) -> InputValidator:
    limits = Limits(max_input_tokens=max_input, max_total_tokens=max_total, max_batch_prefill_tokens=100,
                    max_batch_total_tokens=1000, max_batch_size=None, max_concurrent_requests=10)
    return InputValidator(tokenizer, limits)


def request(prompt=PROMPT, max_new_tokens=None, truncate=None, chat=None) -> GenerateRequest:
    return GenerateRequest("r", SamplingParams(), StoppingParams(max_new_tokens=max_new_tokens), prompt=prompt,
                           chat=chat, truncate=truncate)


def refusal(check, req) -> tuple[ErrorKind, str]:
    with pytest.raises(RequestError) as caught:
        check.prompt(req).ids
    return caught.value.kind, caught.value.message


def test_tiny_prompt_length(tokenizer):
    assert len(tokenizer.encode(PROMPT)) == 11


@pytest.mark.parametrize(("limits", "req", "message"), [
    ((8, 14), request(prompt=""), "`inputs` cannot be empty"),
    ((8, 14), request(prompt="", truncate=0), "`inputs` cannot be empty"),
    ((8, 14), request(truncate=0), "`truncate` must be strictly positive and less than 8. Given: 0"),
    ((8, 14), request(truncate=9), "`truncate` must be strictly positive and less than 8. Given: 9"),
    ((8, 14), request(max_new_tokens=4), "`inputs` tokens + `max_new_tokens` must be <= 14. Given: 11 `inputs` "
                                         "tokens and 4 `max_new_tokens`"),
    ((8, 14), request(max_new_tokens=3), "`inputs` must have less than 8 tokens. Given: 11"),
    ((8, 14), request(), "`inputs` must have less than 8 tokens. Given: 11"),
    ((8, 10), request(), "`inputs` tokens + `max_new_tokens` must be <= 10. Given: 11 `inputs` tokens and 0 "
                         "`max_new_tokens`"),
    ((20, 1030), request(max_new_tokens=2000), "`inputs` tokens + `max_new_tokens` must be <= 1030. Given: 11 "
                                               "`inputs` tokens and 1024 `max_new_tokens`"),
])
def test_messages_and_order(tokenizer, limits, req, message):
    assert refusal(validator(tokenizer, *limits), req) == (ErrorKind.VALIDATION, "Input validation error: " + message)


@pytest.mark.parametrize(("req", "code"), [
    (request(prompt=""), None), (request(max_new_tokens=4), "context_length_exceeded"),
    (request(), "context_length_exceeded"),
])
def test_length_refusals_carry_openais_code(tokenizer, req, code):
    with pytest.raises(RequestError) as caught:
        validator(tokenizer).prompt(req).ids
    assert caught.value.code == code


def test_valid_prompts_and_left_truncation(tokenizer):
    ids = tokenizer.encode(PROMPT)
    assert validator(tokenizer, 20, 40).prompt(request(max_new_tokens=5)).ids == ids
    assert validator(tokenizer).prompt(request(truncate=8)).ids == ids[-8:]
    assert validator(tokenizer, 20, 1040).prompt(request(max_new_tokens=5000)).ids == ids  # only 1024 is checked
    assert validator(tokenizer, 20, 40).prompt(request(max_new_tokens=None)).ids == ids


CHAT = ChatPrompt((ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello")))


def test_chat_rendering(tokenizer):
    check = validator(tokenizer, 100, 200)
    assert check.render_chat(CHAT) == "<s><|user|>\nHi</s>\n<|assistant|>\nHello</s>\n<|assistant|>\n"
    continued = check.render_chat(ChatPrompt(CHAT.messages, continue_final_message=True))
    assert continued == "<s><|user|>\nHi</s>\n<|assistant|>\nHello"
    ids = check.prompt(request(prompt=None, chat=CHAT)).ids
    assert ids == tokenizer.encode(check.render_chat(CHAT), add_special_tokens=False)


def test_developer_role_is_system_for_a_template_that_lacks_it(tokenizer):
    check = validator(tokenizer, 100, 200)
    developer = ChatPrompt((ChatMessage("developer", "Be brief."), ChatMessage("user", "Hi")))
    system = ChatPrompt((ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")))
    assert check.render_chat(developer) == check.render_chat(system)
    original, tokenizer.chat_template = tokenizer.chat_template, (
        "{% for m in messages %}{{ m['role'] }}{% endfor %}{# knows developer #}")
    try:
        assert validator(tokenizer, 100, 200).render_chat(developer) == "developeruser"
    finally:
        tokenizer.chat_template = original


def test_template_errors(tokenizer):
    check = validator(build_tokenizer(TinyModelSpec(chat_template=False)), 100, 200)
    assert refusal(check, request(prompt=None, chat=CHAT)) == (ErrorKind.TEMPLATE, "Template error: template not found")
    original, tokenizer.chat_template = tokenizer.chat_template, "{{ raise_exception('only user and assistant') }}"
    try:
        message = refusal(validator(tokenizer, 100, 200), request(prompt=None, chat=CHAT))
    finally:
        tokenizer.chat_template = original
    assert message == (ErrorKind.TEMPLATE, "Template error: only user and assistant")


def test_token_spans_are_byte_offsets(tokenizer):
    text = "café 🙂 <|user|> x"
    spans = validator(tokenizer).token_spans(text, add_special_tokens=True)
    data = text.encode()
    assert [s.id for s in spans] == tokenizer.encode(text)
    for span in spans:
        assert span.text == data[span.start:span.stop].decode()
    emoji = [s for s in spans if s.text == "🙂"]
    assert len(emoji) > 1 and all((s.start, s.stop) == (6, 10) for s in emoji)
    assert any(s.text == "<|user|>" for s in spans)
