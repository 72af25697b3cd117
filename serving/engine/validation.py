"""Tokenizer-side request handling: chat rendering, tokenization with byte offsets, and TGI's input checks.

The checks run in TGI's order and give its exact messages: empty input, `truncate`, tokenization, the token
budget (`input_length + min(max_new_tokens or room left, 1024) <= max_total_tokens`, "Given" reporting that
capped chunk), then the input length. Failures are raised as `RequestError`, which the engine turns into `Failed`.
A chat is rendered with the model's own template and tokenized without special tokens (the template adds them).

Tokenizing stops once the input limit is passed: a text so long that it must hold more tokens than the limit
(more characters than the limit times the longest token of the vocabulary) is tokenized only as far as that
bound, and its message says "at least" that many tokens. `/tokenize` answers at most MAX_INPUT_TOKENS tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import msgspec.structs

from serving import tool_formats
from serving.constraints import GRAMMAR_WITH_MIN_TOKENS
from serving.engine.limits import Limits
from serving.messages import (
    CONTEXT_LENGTH_EXCEEDED,
    ChatPrompt,
    ErrorKind,
    Failed,
    GenerateRequest,
    TokenizeRequest,
    Thinking,
    TokenizeResult,
    TokenSpan,
)

VALIDATION_PREFIX = "Input validation error: "
BUDGET_CHUNK = 1024


class RequestError(Exception):
    """A request the engine refuses, with the error kind and the full user-facing message."""

    def __init__(self, kind: ErrorKind, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code


def invalid(message: str, code: str | None = None) -> RequestError:
    """A validation failure with TGI's prefix."""
    return RequestError(ErrorKind.VALIDATION, VALIDATION_PREFIX + message, code)


def template_text(tokenizer: Any) -> str | None:
    """The chat template that renders conversations (of several named ones, the tool-use one)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return template.get("tool_use") or template.get("default")
    return template


def added_tokens(tokenizer: Any) -> dict[str, int]:
    """The tokenizer's added tokens (special tokens, tool markers) by text: a grammar names them by id, since a
    grammar library reads every added token as special, never as its text."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {token.content: token_id for token_id, token in sorted(added.items())}


def check_grammar(request: GenerateRequest) -> None:
    """A grammar allows EOS exactly when its text is complete, so it cannot go with `min_new_tokens` or `ignore_eos`,
    which forbid that EOS."""
    stopping = request.stopping
    if request.sampling.grammar is not None and (stopping.ignore_eos or stopping.min_new_tokens > 0):
        raise invalid(GRAMMAR_WITH_MIN_TOKENS)


@dataclass(frozen=True)
class Prompt:
    """A request's checked prompt ids, and where its rendered chat leaves a reasoning model's thinking section."""

    ids: list[int]
    thinking: Thinking = Thinking.UNOPENED


class InputValidator:
    """Turns a request's prompt or chat into checked token ids."""

    def __init__(self, tokenizer: Any, limits: Limits) -> None:
        self.tokenizer = tokenizer
        self.limits = limits
        self.longest_token = max((len(token) for token in tokenizer.get_vocab()), default=1)
        self.reasoning = tool_formats.has_thinking(template_text(tokenizer))

    def _bounded(self, text: str, limit: int) -> tuple[str, bool]:
        """`text`, or the prefix of it that must already hold more than `limit` tokens (and True) when it is that
        long; the caller falls back to the whole text when the prefix turns out shorter."""
        bound = (limit + 1) * self.longest_token
        return (text[:bound], True) if len(text) > bound else (text, False)

    def render_chat(self, chat: ChatPrompt) -> str:
        """The conversation rendered by the chat template, ready for generation or continuing the last message.

        OpenAI's `developer` role is passed on as `system` to a template that never mentions it; the request's
        `chat_template_kwargs` become the template's variables."""
        template = getattr(self.tokenizer, "chat_template", None)
        if template is None:
            raise RequestError(ErrorKind.TEMPLATE, "Template error: template not found")
        knows_developer = "developer" in str(template)
        messages = [msgspec.structs.asdict(m) for m in chat.messages]
        for message in messages:  # the template sees only the fields a message has
            if message["role"] == "developer" and not knows_developer:
                message["role"] = "system"
            for key in ("tool_calls", "tool_call_id", "name"):
                if message[key] is None:
                    del message[key]
        try:
            return self.tokenizer.apply_chat_template(
                messages, tools=list(chat.tools) if chat.tools else None, tokenize=False,
                add_generation_prompt=not chat.continue_final_message,
                continue_final_message=chat.continue_final_message, **(chat.template_kwargs or {}))
        except Exception as exc:  # the template is the model author's code: any error in it is a template error
            raise RequestError(ErrorKind.TEMPLATE, f"Template error: {exc}") from exc

    def text_of(self, prompt: str | None, chat: ChatPrompt | None, add_special_tokens: bool) -> tuple[str, bool]:
        """The text to tokenize and whether to add special tokens (never for a rendered chat)."""
        if chat is not None:
            return self.render_chat(chat), False
        return prompt or "", add_special_tokens

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        """Token ids of `text`; a tokenizer failure is a validation error."""
        try:
            return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))
        except Exception as exc:
            raise invalid(f"tokenizer error {exc}") from exc

    def given_ids(self, ids: tuple[int, ...]) -> list[int]:
        """A prompt given as token ids, each checked to be one of the tokenizer's."""
        vocabulary = len(self.tokenizer)
        unknown = [token_id for token_id in ids if not 0 <= token_id < vocabulary]
        if unknown:
            raise invalid(f"token ids must be >= 0 and < {vocabulary}. Given: {unknown[0]}")
        return list(ids)

    def thinking(self, chat: ChatPrompt | None, text: str) -> Thinking:
        """Where the rendered chat `text` leaves a reasoning model's thinking section."""
        if chat is None or not self.reasoning:
            return Thinking.UNOPENED
        continued = chat.messages[-1].content if chat.continue_final_message and chat.messages else None
        return tool_formats.prompt_thinking(text, continued)

    def prompt(self, request: GenerateRequest) -> Prompt:
        """The checked (and truncated) prompt of a generate request."""
        text, add_special_tokens = self.text_of(request.prompt, request.chat, request.add_special_tokens)
        return Prompt(self._prompt_ids(request, text, add_special_tokens), self.thinking(request.chat, text))

    def _prompt_ids(self, request: GenerateRequest, text: str, add_special_tokens: bool) -> list[int]:
        """The checked (and truncated) prompt ids of a generate request whose text is `text`."""
        if not text and not request.prompt_ids:
            raise invalid("`inputs` cannot be empty")
        max_input, max_total = self.limits.max_input_tokens, self.limits.max_total_tokens
        truncate = request.truncate
        if truncate is not None and not 0 < truncate <= max_input:
            raise invalid(f"`truncate` must be strictly positive and less than {max_input}. Given: {truncate}")
        if request.prompt_ids:
            ids, partial = self.given_ids(request.prompt_ids), False
        else:
            ids, partial = self._encode_up_to(text, add_special_tokens, None if truncate is not None else max_input)
        if truncate is not None:
            ids = ids[-truncate:]
        if not ids:
            raise invalid("`inputs` cannot be empty")
        input_length = len(ids)
        given = f"at least {input_length}" if partial else str(input_length)
        max_new = request.stopping.max_new_tokens
        chunk = min(max_new if max_new is not None else max(max_total - input_length, 0), BUDGET_CHUNK)
        if input_length + chunk > max_total:
            raise invalid(f"`inputs` tokens + `max_new_tokens` must be <= {max_total}. "
                          f"Given: {given} `inputs` tokens and {chunk} `max_new_tokens`", CONTEXT_LENGTH_EXCEEDED)
        if input_length > max_input:
            raise invalid(f"`inputs` must have less than {max_input} tokens. Given: {given}", CONTEXT_LENGTH_EXCEEDED)
        return ids

    def _encode_up_to(self, text: str, add_special_tokens: bool, limit: int | None) -> tuple[list[int], bool]:
        """Token ids of `text`, or of a prefix holding more than `limit` tokens (then True): see `_bounded`."""
        if limit is not None:
            prefix, cut = self._bounded(text, limit)
            if cut:
                ids = self.encode(prefix, add_special_tokens)
                if len(ids) > limit:
                    return ids, True
        return self.encode(text, add_special_tokens), False

    def tokenize(self, request: TokenizeRequest) -> TokenizeResult:
        """Tokenize text, or a chat rendered by the template, with each token's byte offsets (at most
        MAX_INPUT_TOKENS of them: a longer input is a validation error)."""
        max_input = self.limits.max_input_tokens
        try:
            text, add_special_tokens = self.text_of(request.text, request.chat, request.add_special_tokens)
            prefix, cut = self._bounded(text, max_input)
            spans = self.token_spans(prefix, add_special_tokens)
            if cut and len(spans) <= max_input:
                cut, spans = False, self.token_spans(text, add_special_tokens)
            if len(spans) > max_input:
                raise invalid(f"`inputs` must have less than {max_input} tokens. "
                              f"Given: {'at least ' if cut else ''}{len(spans)}")
        except RequestError as error:
            return TokenizeResult(request.call_id, error=Failed(request.call_id, error.kind, error.message, error.code))
        return TokenizeResult(request.call_id, tokens=spans,
                              templated_text=text if request.chat is not None else None)

    def token_spans(self, text: str, add_special_tokens: bool) -> tuple[TokenSpan, ...]:
        """Each token of `text` with its UTF-8 byte offsets and the text between them ((0, 0) and "" for added
        special tokens, and for every token when the tokenizer has no offsets)."""
        if not getattr(self.tokenizer, "is_fast", False):
            return tuple(TokenSpan(id=i, text="", start=0, stop=0) for i in self.encode(text, add_special_tokens))
        try:
            encoding = self.tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        except Exception as exc:
            raise invalid(f"tokenizer error {exc}") from exc
        data = text.encode("utf-8")
        byte_at = list(accumulate((len(ch.encode("utf-8")) for ch in text), initial=0))
        spans = []
        for token_id, (start, stop) in zip(encoding["input_ids"], encoding["offset_mapping"]):
            begin, end = byte_at[start], byte_at[stop]
            spans.append(TokenSpan(id=token_id, text=data[begin:end].decode("utf-8", errors="replace"),
                                   start=begin, stop=end))
        return tuple(spans)
