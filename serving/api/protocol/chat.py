"""OpenAI's Chat Completions body as TGI reads it (with OpenAI's own semantics where noted), and its responses."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from serving import messages
from serving.api.catalogue import Error
from serving.api.errors import ApiError
from serving.api.feed import Generation, Step
from serving.api.protocol.generate import GRAMMAR_UNSUPPORTED, STRICT, U32, U64
from serving.api.protocol.stop_text import StopHoldback, without_stop
from serving.api.protocol.tokens import openai_logprob
from serving.api.protocol.validation import Knobs, Limits, openai_temperature, parse_logit_bias
from serving.api.version import SYSTEM_FINGERPRINT
from serving.api.wire import dumps
from serving.messages import FinishReason


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
        """What the chat template sees: the content, or the JSON of the tool calls."""
        return self.content if self.content is not None else dumps(self.tool_calls)


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
    response_format: dict[str, Any] | None = None
    ignore_eos: bool = False  # vLLM's extra fields: generate past EOS / not end before `min_tokens` tokens
    min_tokens: U32 | None = None

    def check_tools(self) -> None:
        """Tool errors, which TGI reports before streaming starts; then, since tools need a grammar and none is
        built in, TGI's answer with grammar support disabled (`tool_choice: "none"` ignores the tools)."""
        tools_active = self.tools is not None and self.tool_choice != "none"
        if tools_active and self.response_format is not None:
            raise ApiError(Error.TOOL, "Tool error: Grammar and tools are mutually exclusive")
        if tools_active:
            name = self._chosen_function()
            names = [tool.function.name for tool in self.tools]
            if name is not None and name not in names:
                raise ApiError(Error.TOOL, f"Tool error: Tool with name {name} not found")
            raise ApiError.validation(GRAMMAR_UNSUPPORTED)

    def _chosen_function(self) -> str | None:
        """The function `tool_choice` names, if it names one (a string other than auto/required, or an object)."""
        choice = self.tool_choice
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            return choice["function"].get("name")
        if isinstance(choice, str) and choice not in ("auto", "required", "none"):
            return choice
        return None

    def choices(self) -> int:
        """How many choices (`n`) to generate, each its own engine request."""
        return 1 if self.n is None else self.n

    def to_engine_requests(self, request_id: str, limits: Limits) -> list[messages.GenerateRequest]:
        """Validate and build `n` engine requests for the templated conversation (seed + i for choice i)."""
        do_sample, temperature = openai_temperature(self.temperature)
        knobs = Knobs(
            do_sample=do_sample, temperature=temperature, frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty, top_p=self.top_p,
            max_new_tokens=self.max_tokens if self.max_tokens is not None else self.max_completion_tokens,
            stop=self.stop or (), seed=self.seed, top_n_tokens=self.top_logprobs,
            logit_bias=parse_logit_bias(self.logit_bias), n=self.choices(), ignore_eos=self.ignore_eos,
            min_new_tokens=self.min_tokens, logprobs=bool(self.logprobs),
        )
        knobs.check(limits)
        if self.response_format is not None:
            raise ApiError.validation(GRAMMAR_UNSUPPORTED)
        prompt = self.chat_prompt()
        return [
            messages.GenerateRequest(request_id=f"{request_id}-{index}", sampling=knobs.sampling(index),
                                     stopping=knobs.stopping(), chat=prompt, add_special_tokens=False)
            for index in range(knobs.n)
        ]

    def chat_prompt(self) -> messages.ChatPrompt:
        """The conversation for the engine's chat template; a final assistant message is continued, not closed."""
        return messages.ChatPrompt(
            messages=tuple(messages.ChatMessage(role=m.role, content=m.text()) for m in self.messages),
            continue_final_message=bool(self.messages) and self.messages[-1].role == "assistant",
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


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's `usage`."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class ChatResponder:
    """Builds one request's `chat.completion` or its `chat.completion.chunk`s, all with the same id and time."""

    def __init__(self, request: ChatCompletionRequest, completion_id: str, created: int, model: str) -> None:
        self.request = request
        self.head = {"id": completion_id, "created": created, "model": model,
                     "system_fingerprint": SYSTEM_FINGERPRINT}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.stops = tuple(request.stop or ())
        self._holdbacks: dict[int, StopHoldback] = {}

    def _logprobs(self, deltas: list[messages.TokenDelta]) -> dict[str, Any] | None:
        """`logprobs.content`, when asked for."""
        if not self.request.logprobs:
            return None
        return {"content": [openai_logprob(delta) for delta in deltas]}

    def completion(self, generations: list[Generation]) -> dict[str, Any]:
        """The non-streaming `chat.completion`; the prompt is counted once however many choices."""
        choices = [
            {"index": index,
             "message": {"role": "assistant", "content": without_stop(
                 generation.finished.generated_text, generation.finished.finish_reason, self.stops)},
             "logprobs": self._logprobs(generation.deltas),
             "finish_reason": openai_finish_reason(generation.finished.finish_reason)}
            for index, generation in enumerate(generations)
        ]
        completion_tokens = sum(generation.finished.generated_tokens for generation in generations)
        return {"object": "chat.completion", **self.head, "choices": choices,
                "usage": usage(generations[0].finished.input_length, completion_tokens)}

    def _chunk(self, choices: list[dict[str, Any]], chunk_usage: dict[str, int] | None) -> dict[str, Any]:
        """One `chat.completion.chunk`."""
        return {"object": "chat.completion.chunk", **self.head, "choices": choices, "usage": chunk_usage}

    def chunks(self, step: Step) -> list[dict[str, Any]]:
        """The chunk of one token: the role in every delta, "" for special tokens, the reason on the last; text
        that could still become a stop string waits for a later chunk, and the stop string is never sent."""
        delta = step.delta
        finished = step.finished
        if finished is not None:
            self.prompt_tokens = finished.input_length
            self.completion_tokens += finished.generated_tokens
        holdback = self._holdbacks.setdefault(step.index, StopHoldback(self.stops))
        text = holdback.release("" if delta.token.special else delta.token.text,
                                None if finished is None else finished.finish_reason)
        choice = {
            "index": step.index,
            "delta": {"role": "assistant", "content": text},
            "logprobs": self._logprobs([delta]),
            "finish_reason": None if finished is None else openai_finish_reason(finished.finish_reason),
        }
        return [self._chunk([choice], None)]

    def trailer(self) -> list[dict[str, Any]]:
        """The extra chunk with `choices: []` and the usage, sent only with `stream_options.include_usage`."""
        if not self.request.stream_options.include_usage:
            return []
        return [self._chunk([], usage(self.prompt_tokens, self.completion_tokens))]

