"""OpenAI's Chat Completions body as TGI reads it (with OpenAI's own semantics where noted), and its responses."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from serving import messages
from serving.api.feed import Generation, Step
from serving.api.protocol.assistant import AssistantReader
from serving.api.protocol.generate import STRICT, U32, U64
from serving.api.protocol.stop_text import StopHoldback, without_stop
from serving.api.protocol.structured import after_thinking, response_format_grammar
from serving.api.protocol.tools import ToolPlan, arguments_object, render_calls, tool_error
from serving.tool_formats import FALLBACK
from serving.api.protocol.tokens import openai_logprob
from serving.api.protocol.validation import Knobs, Limits, openai_temperature, parse_logit_bias
from serving.api.version import SYSTEM_FINGERPRINT
from serving.messages import FinishReason, Thinking


def _stop_list(value: Any) -> Any:
    """`stop` may be one string (OpenAI allows it; TGI does not)."""
    return [value] if isinstance(value, str) else value


StopSequences = Annotated[list[str] | None, BeforeValidator(_stop_list), WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]})]
_CONTENT_SCHEMA = {"anyOf": [
    {"type": "string"},
    {"type": "array", "items": {"oneOf": [
        {"type": "object", "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
         "required": ["type", "text"]},
        {"type": "object", "properties": {"type": {"const": "image_url"}, "image_url": {
            "type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}},
         "required": ["type", "image_url"]},
    ]}},
    {"type": "null"},
]}


def _part_text(part: Any) -> str:
    """One content part as text; an image becomes markdown, as TGI hands it to text models."""
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return part["text"]
    if isinstance(part, dict) and part.get("type") == "image_url":
        image = part.get("image_url")
        if isinstance(image, dict) and isinstance(image.get("url"), str):
            return f"![]({image['url']})"
    raise ValueError("data did not match any variant of untagged enum MessageChunk")


def _content_text(value: Any) -> Any:
    """A string, or an array of text and image parts joined into one string."""
    if isinstance(value, list):
        return "".join(_part_text(part) for part in value)
    if value is None or isinstance(value, str):
        return value
    raise ValueError("data did not match any variant of untagged enum MessageContent")


# apply_chat_template's own arguments and what it hands the template itself: not for `chat_template_kwargs`
RESERVED_TEMPLATE_VARIABLES = frozenset({
    "conversation", "messages", "tools", "documents", "chat_template", "add_generation_prompt",
    "continue_final_message", "tokenize", "sanitize_control_tokens", "padding", "truncation", "max_length",
    "return_tensors", "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs",
})
Role = Literal["system", "developer", "user", "assistant", "tool"]  # OpenAI's; `developer` is a newer `system`


class ChatMessage(BaseModel):
    """One message: `content` (a string or parts), or `tool_calls` from an earlier assistant turn."""

    model_config = ConfigDict(**STRICT, json_schema_extra={"anyOf": [
        {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
        {"required": ["tool_calls"], "properties": {"tool_calls": {"type": "array"}}},
    ]})

    role: Role
    content: Annotated[str | None, BeforeValidator(_content_text), WithJsonSchema(_CONTENT_SCHEMA)] = None
    tool_calls: list[dict[str, Any]] | None = None
    name: str | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _has_body(self) -> "ChatMessage":
        if self.content is None and self.tool_calls is None:
            raise ValueError("data did not match any variant of untagged enum MessageBody")
        return self

    def text(self) -> str:
        """What a template without tool support sees: the content, or the tool calls in the fallback format."""
        if self.content is not None:
            return self.content
        return render_calls(FALLBACK, self.tool_calls or [])

    def structured(self) -> messages.ChatMessage:
        """The message for a template that knows tools: tool calls with their arguments as objects."""
        calls = None
        if self.tool_calls is not None:
            calls = tuple({**call, "function": {**call.get("function", {}), "arguments": arguments_object(
                call.get("function", {}).get("arguments"))}} for call in self.tool_calls)
        return messages.ChatMessage(role=self.role, content=self.content or "", tool_calls=calls,
                                    tool_call_id=self.tool_call_id, name=self.name)


class FunctionDefinition(BaseModel):
    """A tool's function: its name, and optionally a description and a JSON schema of its arguments."""

    model_config = STRICT

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    """One of the `tools`: OpenAI's function tool."""

    model_config = STRICT

    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(BaseModel):
    """`stream_options`: only `include_usage` exists."""

    model_config = STRICT

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of `/v1/chat/completions` (and of `/invocations`' second variant)."""

    model_config = STRICT

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | list[float] | None = None
    logprobs: bool | None = None
    top_logprobs: U32 | None = None
    max_tokens: U32 | None = None
    max_completion_tokens: U32 | None = None
    n: U32 | None = None
    stop: StopSequences = None
    stream: bool = False
    stream_options: StreamOptions = Field(default_factory=StreamOptions)
    seed: U64 | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[Tool] | None = None
    tool_choice: Any = None
    tool_prompt: str | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    ignore_eos: bool = False  # vLLM's extra fields: generate past EOS / not end before `min_tokens` tokens
    min_tokens: U32 | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's: the chat template's variables

    @field_validator("chat_template_kwargs")
    @classmethod
    def _free_template_variables(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """The template's own variables only: none of the names that the server sets itself."""
        taken = sorted(RESERVED_TEMPLATE_VARIABLES.intersection(value or {}))
        if taken:
            raise ValueError(f"`chat_template_kwargs` cannot set {', '.join(taken)}: the server sets them")
        return value

    def tool_plan(self, limits: Limits) -> ToolPlan | None:
        """The tools this request offers and how they must be used (tool errors are raised here, before any
        streaming starts); None without tools or with `tool_choice: "none"`."""
        tools = [tool.model_dump(exclude_none=True) for tool in self.tools] if self.tools else None
        return ToolPlan.of(tools, self.tool_choice, self.parallel_tool_calls, limits.tool_format)

    def grammar(self, plan: ToolPlan | None, limits: Limits) -> messages.Grammar | None:
        """The grammar of the answer: the tools' (with `response_format`'s schema as the text alternative), or
        `response_format`'s, or none; a reasoning model may think first, unconstrained."""
        grammar = self._answer_grammar(plan, limits)
        if limits.reasoning:
            return None if grammar is None else after_thinking(grammar, limits.added_tokens, limits.grammar_max_bytes)
        return grammar

    def _answer_grammar(self, plan: ToolPlan | None, limits: Limits) -> messages.Grammar | None:
        """The grammar of the answer itself (after a thinking section)."""
        if plan is None:
            if self.response_format is None:
                return None
            return response_format_grammar(self.response_format, limits.grammar_max_bytes)
        answer = None
        if self.response_format is not None:
            answer_grammar = response_format_grammar(self.response_format, limits.grammar_max_bytes)
            if answer_grammar is not None and answer_grammar.kind is not messages.GrammarKind.JSON_SCHEMA:
                raise tool_error("with tools, `response_format` must be a JSON schema")
            answer = json.loads(answer_grammar.value) if answer_grammar is not None else None
        return plan.grammar(limits.added_tokens, answer, limits.grammar_max_bytes)

    def choices(self) -> int:
        """How many choices (`n`) to generate, each its own engine request."""
        return 1 if self.n is None else self.n

    def to_engine_requests(self, request_id: str, limits: Limits) -> list[messages.GenerateRequest]:
        """Validate and build `n` engine requests for the templated conversation (seed + i for choice i)."""
        plan = self.tool_plan(limits)
        grammar = self.grammar(plan, limits)
        do_sample, temperature = openai_temperature(self.temperature)
        knobs = Knobs(
            do_sample=do_sample, temperature=temperature, frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty, top_p=self.top_p,
            max_new_tokens=self.max_tokens if self.max_tokens is not None else self.max_completion_tokens,
            stop=self.stop or (), seed=self.seed, top_n_tokens=self.top_logprobs,
            logit_bias=parse_logit_bias(self.logit_bias), n=self.choices(), ignore_eos=self.ignore_eos,
            min_new_tokens=self.min_tokens, logprobs=bool(self.logprobs), grammar=grammar,
        )
        knobs.check(limits)
        prompt = self.chat_prompt(plan, limits.tool_format is not None)
        return [
            messages.GenerateRequest(request_id=f"{request_id}-{index}", sampling=knobs.sampling(index),
                                     stopping=knobs.stopping(), chat=prompt, add_special_tokens=False)
            for index in range(knobs.n)
        ]

    def chat_prompt(self, plan: ToolPlan | None = None, native_tools: bool = False) -> messages.ChatPrompt:
        """The conversation for the engine's chat template; a final assistant message is continued, not closed.

        A template that knows tools (`native_tools`) gets them, and the messages' tool calls and call ids, as
        structured fields; for any other template, tool calls are written out in the fallback format and the
        offered tools go into a system message."""
        if native_tools:
            chat = [m.structured() for m in self.messages]
        else:
            chat = [messages.ChatMessage(role=m.role, content=m.text()) for m in self.messages]
            if plan is not None:
                prompt = plan.system_prompt(self.tool_prompt)
                if chat and chat[0].role == "system":
                    chat[0] = messages.ChatMessage(role="system", content=f"{chat[0].content}\n\n{prompt}")
                else:
                    chat.insert(0, messages.ChatMessage(role="system", content=prompt))
        return messages.ChatPrompt(
            messages=tuple(chat),
            continue_final_message=bool(self.messages) and self.messages[-1].role == "assistant",
            tools=tuple(plan.tools) if plan is not None and native_tools else None,
            template_kwargs=self.chat_template_kwargs,
        )

    def characters(self) -> int:
        """The characters of the conversation, for `x-compute-characters`."""
        return sum(len(message.text()) for message in self.messages)

    def response_model(self, served_model: str) -> str:
        """TGI echoes the requested model, unless it is absent or `tgi`."""
        return self.model if self.model not in (None, "tgi") else served_model


def openai_finish_reason(reason: FinishReason) -> str:
    """OpenAI's reason: `length`, or `stop` for EOS and for a stop string alike (TGI says `stop_sequence`)."""
    return "length" if reason == FinishReason.LENGTH else "stop"


def _tool_reason(reader: AssistantReader, reason: str) -> str:
    """OpenAI's `tool_calls` for an answer that ended by itself after calling tools."""
    return "tool_calls" if reason == "stop" and reader.called() else reason


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's `usage`."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class ChatResponder:
    """Builds one request's `chat.completion` or its `chat.completion.chunk`s, all with the same id and time.

    With tools or a reasoning model, each choice's tokens go through an `AssistantReader`, which splits them into
    `reasoning_content`, `content` and `tool_calls`; otherwise the text is the content as generated.
    """

    def __init__(self, request: ChatCompletionRequest, completion_id: str, created: int, model: str,
                 plan: ToolPlan | None = None, reasoning: bool = False) -> None:
        self.request = request
        self.head = {"id": completion_id, "created": created, "model": model,
                     "system_fingerprint": SYSTEM_FINGERPRINT}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.plan = plan
        self.reasoning = reasoning
        self.readers: dict[int, AssistantReader] = {}
        self.stops = tuple(request.stop or ())
        self._holdbacks: dict[int, StopHoldback] = {}

    @property
    def reads(self) -> bool:
        """Whether answers are read (split into reasoning, content and tool calls) rather than passed through."""
        return self.plan is not None or self.reasoning

    def _reader(self, index: int, thinking: Thinking) -> AssistantReader:
        """The reader of choice `index` (made at its first token, when `thinking` is known)."""
        if index not in self.readers:
            self.readers[index] = AssistantReader(self.plan, self.reasoning, thinking)
        return self.readers[index]

    def _logprobs(self, deltas: list[messages.TokenDelta]) -> dict[str, Any] | None:
        """`logprobs.content`, when asked for."""
        if not self.request.logprobs:
            return None
        return {"content": [openai_logprob(delta) for delta in deltas]}

    def _message(self, index: int, generation: Generation) -> tuple[dict[str, Any], str]:
        """A choice's message and finish reason."""
        finished = generation.finished
        reason = openai_finish_reason(finished.finish_reason)
        if not self.reads:
            return {"role": "assistant", "content": without_stop(finished.generated_text, finished.finish_reason,
                                                                 self.stops)}, reason
        reader = self._reader(index, generation.thinking)
        for delta in generation.deltas:
            reader.feed(delta.token.text, delta.token.special)
        reader.finish()
        message = reader.message()
        if message["content"] is not None:
            message["content"] = without_stop(message["content"], finished.finish_reason, self.stops)
        return message, _tool_reason(reader, reason)

    def completion(self, generations: list[Generation]) -> dict[str, Any]:
        """The non-streaming `chat.completion`; the prompt is counted once however many choices."""
        choices = []
        for index, generation in enumerate(generations):
            message, reason = self._message(index, generation)
            choices.append({"index": index, "message": message, "logprobs": self._logprobs(generation.deltas),
                            "finish_reason": reason})
        completion_tokens = sum(generation.finished.generated_tokens for generation in generations)
        return {"object": "chat.completion", **self.head, "choices": choices,
                "usage": usage(generations[0].finished.input_length, completion_tokens)}

    def _chunk(self, choices: list[dict[str, Any]], chunk_usage: dict[str, int] | None) -> dict[str, Any]:
        """One `chat.completion.chunk`."""
        return {"object": "chat.completion.chunk", **self.head, "choices": choices, "usage": chunk_usage}

    def chunks(self, step: Step) -> list[dict[str, Any]]:
        """The chunk of one token: the role in every delta, "" for special tokens, the reason on the last; text
        that could still become a stop string waits for a later chunk, and the stop string is never sent. A read
        answer sends only what the token added (`reasoning_content`, `content` or `tool_calls` entries), nothing
        for a token that is held back, and `finish_reason: "tool_calls"` when it ends after calling."""
        delta = step.delta
        finished = step.finished
        if finished is not None:
            self.prompt_tokens = finished.input_length
            self.completion_tokens += finished.generated_tokens
        reason = None if finished is None else openai_finish_reason(finished.finish_reason)
        holdback = self._holdbacks.setdefault(step.index, StopHoldback(self.stops))
        finish_reason = None if finished is None else finished.finish_reason
        if not self.reads:
            fields: dict[str, Any] = {"content": holdback.release("" if delta.token.special else delta.token.text,
                                                                  finish_reason)}
        else:
            reader = self._reader(step.index, step.thinking)
            fields = reader.feed(delta.token.text, delta.token.special)
            if finished is not None:
                for key, value in reader.finish().items():
                    fields[key] = fields.get(key, "") + value
                reason = _tool_reason(reader, reason or "stop")
            if "content" in fields or finished is not None:
                text = holdback.release(fields.pop("content", ""), finish_reason)
                if text:
                    fields["content"] = text
            if not fields and finished is None and not self.request.logprobs:
                return []
            if "tool_calls" in fields:
                fields = {"content": None, **fields}
        choice = {
            "index": step.index,
            "delta": {"role": "assistant", **fields},
            "logprobs": self._logprobs([delta]),
            "finish_reason": reason,
        }
        return [self._chunk([choice], None)]

    def trailer(self) -> list[dict[str, Any]]:
        """The extra chunk with `choices: []` and the usage, sent only with `stream_options.include_usage`."""
        if not self.request.stream_options.include_usage:
            return []
        return [self._chunk([], usage(self.prompt_tokens, self.completion_tokens))]

