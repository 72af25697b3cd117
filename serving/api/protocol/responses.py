"""The shapes of every response body and stream event, as typed dicts with no room for extra keys.

They are the response half of the OpenAPI document (`serving.api.docs`), and the compatibility tests validate
real responses against them (`pydantic.TypeAdapter`), so the document and the wire cannot drift apart.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict
from typing_extensions import NotRequired, TypedDict

EXACT = ConfigDict(extra="forbid", strict=True)

FinishReason = Literal["length", "eos_token", "stop_sequence"]
OpenAIFinishReason = Literal["length", "stop", "tool_calls"]


class Token(TypedDict):
    """A generated token; `text` keeps special tokens."""

    __pydantic_config__ = EXACT
    id: int
    text: str
    logprob: float | None
    special: bool


class PrefillToken(TypedDict):
    """A prompt token with its logprob (null for the first)."""

    __pydantic_config__ = EXACT
    id: int
    text: str
    logprob: float | None


class BestOfSequence(TypedDict):
    """One of the other `best_of` sequences."""

    __pydantic_config__ = EXACT
    generated_text: str
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None
    prefill: list[PrefillToken]
    tokens: list[Token]
    top_tokens: NotRequired[list[list[Token]]]


class Details(TypedDict):
    """`details` of `/generate`, present with `details` or `decoder_input_details`."""

    __pydantic_config__ = EXACT
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None
    prefill: list[PrefillToken]
    tokens: list[Token]
    best_of_sequences: NotRequired[list[BestOfSequence]]
    top_tokens: NotRequired[list[list[Token]]]


class GenerateResponse(TypedDict):
    """`/generate`'s answer (`POST /` answers a one-element list of it)."""

    __pydantic_config__ = EXACT
    generated_text: str
    details: NotRequired[Details]


class StreamDetails(TypedDict):
    """`details` of the last `/generate_stream` event, with `details: true`."""

    __pydantic_config__ = EXACT
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None
    input_length: int


class StreamResponse(TypedDict):
    """One `/generate_stream` event; `generated_text` and `details` are null until the last one."""

    __pydantic_config__ = EXACT
    index: int
    token: Token
    top_tokens: NotRequired[list[Token]]
    generated_text: str | None
    details: StreamDetails | None


class ErrorResponse(TypedDict):
    """TGI's error body, also the error event of its streams."""

    __pydantic_config__ = EXACT
    error: str
    error_type: str


class OpenAIErrorDetail(TypedDict):
    """OpenAI's `error` object."""

    __pydantic_config__ = EXACT
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(TypedDict):
    """The error body of the OpenAI routes: OpenAI's shape, plus TGI's `error_type`; also the error event of their
    streams (then `[DONE]`)."""

    __pydantic_config__ = EXACT
    error: OpenAIErrorDetail
    error_type: str


class VertexResponse(TypedDict):
    """`POST /vertex`: the generated text of each instance, in order."""

    __pydantic_config__ = EXACT
    predictions: list[str]


class Adapter(TypedDict):
    """A registered LoRA adapter, in `/info` and `GET /adapters`: its source, rank (null until its config was
    read), the projections it changes, whether it is pinned and whether its weights are in memory now."""

    __pydantic_config__ = EXACT
    name: str
    src: str
    rank: int | None
    target_modules: list[str]
    pinned: bool
    resident: bool


class Info(TypedDict):
    """`GET /info`: TGI's key set, then the model's dtype, device and device map, then its KV cache."""

    __pydantic_config__ = EXACT
    model_id: str
    model_sha: str | None
    model_pipeline_tag: str | None
    max_concurrent_requests: int
    max_best_of: int
    max_stop_sequences: int
    max_input_tokens: int
    max_total_tokens: int
    validation_workers: int
    max_client_batch_size: int
    router: str
    version: str
    sha: str | None
    docker_label: str | None
    model_dtype: str
    model_device_type: str
    device_map: dict[str, str]
    kv_cache_block_size: int
    kv_cache_blocks: int
    prefix_caching: bool
    max_lora_adapters: int
    max_lora_rank: int
    lora_adapters: list[Adapter]


class SimpleToken(TypedDict):
    """A token of `/tokenize` with its byte offsets into the input."""

    __pydantic_config__ = EXACT
    id: int
    text: str
    start: int
    stop: int


class ChatTokenizeResponse(TypedDict):
    """`/chat_tokenize`: the rendered prompt and its tokens."""

    __pydantic_config__ = EXACT
    tokenize_response: list[SimpleToken]
    templated_text: str


class Model(TypedDict):
    """An entry of `/v1/models`: the served model, or a LoRA adapter with its source (`root`) and base model
    (`parent`), as vLLM shows one."""

    __pydantic_config__ = EXACT
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: NotRequired[str]
    parent: NotRequired[str]


class ModelList(TypedDict):
    """`GET /v1/models`."""

    __pydantic_config__ = EXACT
    object: Literal["list"]
    data: list[Model]


class Usage(TypedDict):
    """Token counts of a chat or completions response."""

    __pydantic_config__ = EXACT
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(TypedDict):
    """One alternative of a chat logprob entry."""

    __pydantic_config__ = EXACT
    token: str
    logprob: float | None


class ChatLogprob(TypedDict):
    """A chat token's logprob and its `top_logprobs` alternatives."""

    __pydantic_config__ = EXACT
    token: str
    logprob: float | None
    top_logprobs: list[TopLogprob]


class ChatLogprobs(TypedDict):
    """A choice's `logprobs`, with `logprobs: true`."""

    __pydantic_config__ = EXACT
    content: list[ChatLogprob]


class FunctionCall(TypedDict):
    """A called function: its name and its arguments as a JSON string."""

    __pydantic_config__ = EXACT
    name: str
    arguments: str


class ToolCall(TypedDict):
    """One tool call of an assistant message."""

    __pydantic_config__ = EXACT
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(TypedDict):
    """The generated message: text (null when the answer is only tool calls), its tool calls, and the thinking
    section of a reasoning model."""

    __pydantic_config__ = EXACT
    role: Literal["assistant"]
    content: str | None
    tool_calls: NotRequired[list[ToolCall]]
    reasoning_content: NotRequired[str]


class ChatChoice(TypedDict):
    """One choice of a chat completion."""

    __pydantic_config__ = EXACT
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: OpenAIFinishReason


class ChatCompletion(TypedDict):
    """`/v1/chat/completions` without streaming."""

    __pydantic_config__ = EXACT
    object: Literal["chat.completion"]
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class FunctionCallDelta(TypedDict):
    """A streamed piece of a call: the name in its first chunk, then fragments of the arguments."""

    __pydantic_config__ = EXACT
    name: NotRequired[str]
    arguments: str


class ToolCallDelta(TypedDict):
    """A streamed tool call entry: `index` always, `id` and `type` in its first chunk."""

    __pydantic_config__ = EXACT
    index: int
    id: NotRequired[str]
    type: NotRequired[Literal["function"]]
    function: FunctionCallDelta


class ChatDelta(TypedDict):
    """A chunk's delta: the role in every one, as TGI sends it; `content` null beside tool calls."""

    __pydantic_config__ = EXACT
    role: Literal["assistant"]
    content: NotRequired[str | None]
    tool_calls: NotRequired[list[ToolCallDelta]]
    reasoning_content: NotRequired[str]


class ChatChunkChoice(TypedDict):
    """The choice of one chunk; `finish_reason` is set on the choice's last token."""

    __pydantic_config__ = EXACT
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: OpenAIFinishReason | None


class ChatCompletionChunk(TypedDict):
    """One event of a chat stream; the usage chunk (`include_usage`) has no choices."""

    __pydantic_config__ = EXACT
    object: Literal["chat.completion.chunk"]
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChunkChoice]
    usage: Usage | None


class CompletionLogprobs(TypedDict):
    """OpenAI's legacy `logprobs` of a completion choice (with `logprobs: k`)."""

    __pydantic_config__ = EXACT
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float | None]]
    text_offset: list[int]


class CompletionChoice(TypedDict):
    """One choice of a completion; in a stream `finish_reason` is null until the prompt's last token."""

    __pydantic_config__ = EXACT
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: OpenAIFinishReason | None


class Completion(TypedDict):
    """`/v1/completions`, and the events of its stream (a prompt's last one carries its usage)."""

    __pydantic_config__ = EXACT
    object: Literal["text_completion"]
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: NotRequired[Usage | None]
