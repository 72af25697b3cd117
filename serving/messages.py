"""The torch-free contract between the HTTP workers and the engine process.

Every message that crosses the local socket is one of the tagged `msgspec.Struct` types below, encoded as
MessagePack. Client -> engine: `GenerateRequest`, `AbortRequest`, `TokenizeRequest`, `InfoRequest`,
`HealthRequest`, `RegisterAdapterRequest`, `UnregisterAdapterRequest`. Engine -> client: an `EventBatch` per step
per worker, holding `Admitted`, `TokenDelta`, `Finished`, `Failed` and the replies `TokenizeResult`, `InfoResult`,
`HealthResult`, `AdapterResult`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Union

import msgspec


class FinishReason(str, Enum):
    """Why a generation ended, with TGI's wire names."""

    LENGTH = "length"
    EOS_TOKEN = "eos_token"
    STOP_SEQUENCE = "stop_sequence"


class ErrorKind(str, Enum):
    """What went wrong with a request; `serving.api.errors` maps each kind to an HTTP status once."""

    VALIDATION = "validation"
    OVERLOADED = "overloaded"
    GENERATION = "generation"
    TEMPLATE = "template_error"
    INCOMPLETE = "incomplete_generation"
    UNAVAILABLE = "unavailable"
    ADAPTER_NOT_FOUND = "adapter_not_found"  # the request named a LoRA adapter that is not registered


class GrammarKind(str, Enum):
    """What a `Grammar`'s text is."""

    JSON_SCHEMA = "json_schema"
    REGEX = "regex"
    LARK = "lark"


class Thinking(str, Enum):
    """Where a rendered chat prompt leaves a reasoning model's thinking section (`<think>...</think>`)."""

    UNOPENED = "unopened"  # the answer may start with one (the model opens it itself)
    OPEN = "open"  # the prompt ends inside one (the template opened it): the answer starts as reasoning
    CLOSED = "closed"  # the prompt ends just after one (e.g. `enable_thinking: false`): the answer does not think


class Grammar(msgspec.Struct, frozen=True):
    """A constraint on the generated text, checked by the API layer (`serving.constraints`); the engine masks every
    token the grammar does not allow and allows EOS exactly when the text is complete. `after_thinking` marks a
    reasoning model's answer grammar: the engine puts the thinking section that the rendered prompt calls for in
    front of it (`serving.constraints.thinking_grammar`)."""

    kind: GrammarKind
    value: str
    after_thinking: bool = False


class SamplingParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-request logits processing and sampling; validated by the API layer before it is sent."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    top_n_tokens: int = 0
    logit_bias: dict[int, float] = msgspec.field(default_factory=dict)
    logprobs: bool = True  # whether the chosen tokens' logprobs are read (TGI's routes always show them)
    grammar: Grammar | None = None

    @property
    def sampling(self) -> bool:
        """TGI's rule: any non-neutral warper turns sampling on, even without `do_sample`."""
        return (
            self.do_sample
            or self.temperature != 1.0
            or self.top_k > 0
            or self.top_p < 1.0
            or self.typical_p < 1.0
        )


class StoppingParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a generation stops; `max_new_tokens=None` means until the context is full."""

    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    min_new_tokens: int = 0


class ChatMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """One chat message with its content already flattened to a string by the API layer; an assistant's earlier
    tool calls and a tool result's call id go to the chat template as the structured fields it expects."""

    role: str
    content: str | None
    tool_calls: tuple[dict[str, Any], ...] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class ChatPrompt(msgspec.Struct, frozen=True):
    """A conversation that the engine renders with the model's own chat template (`tools`: OpenAI's tool list,
    passed to the template as `tools`)."""

    messages: tuple[ChatMessage, ...]
    continue_final_message: bool = False
    tools: tuple[dict[str, Any], ...] | None = None
    template_kwargs: dict[str, Any] | None = None  # vLLM's `chat_template_kwargs`, e.g. `enable_thinking`


class GenerateRequest(msgspec.Struct, frozen=True, tag="generate"):
    """Generate from `prompt` (plain text), `prompt_ids` (token ids, used as they are) or `chat` (templated in the
    engine); exactly one is set. With `echo`, `Admitted.prompt_text` is the decoded prompt."""

    request_id: str
    sampling: SamplingParams
    stopping: StoppingParams
    prompt: str | None = None
    chat: ChatPrompt | None = None
    add_special_tokens: bool = True
    truncate: int | None = None
    prefill_logprobs: bool = False
    prompt_ids: tuple[int, ...] | None = None
    echo: bool = False
    adapter: str | None = None  # a registered LoRA adapter's name; None is the base model
    # OpenAI's `model` field: when the engine has no adapter registered at all, an unknown `adapter` means the base
    # model instead of an ADAPTER_NOT_FOUND failure (clients send whatever model name they were configured with)
    adapter_optional: bool = False


class AbortRequest(msgspec.Struct, frozen=True, tag="abort"):
    """The client went away: drop the request and free its slot and cache."""

    request_id: str


class TokenizeRequest(msgspec.Struct, frozen=True, tag="tokenize"):
    """Tokenize text (or a rendered chat) and report each token's byte offsets."""

    call_id: str
    text: str | None = None
    chat: ChatPrompt | None = None
    add_special_tokens: bool = True


class InfoRequest(msgspec.Struct, frozen=True, tag="info"):
    """Ask for the loaded model's facts and limits."""

    call_id: str


class HealthRequest(msgspec.Struct, frozen=True, tag="health"):
    """Ask whether the engine is alive and able to serve."""

    call_id: str


class AdapterSpec(msgspec.Struct, frozen=True):
    """A LoRA adapter to register under `name`: `source` is a local directory in PEFT's format or a hub id
    (`owner/name` or `owner/name@revision`, downloaded like the base model). `preload` loads its weights now
    rather than at its first request; a `pinned` adapter is never evicted from memory."""

    name: str
    source: str
    preload: bool = True
    pinned: bool = False


class RegisterAdapterRequest(msgspec.Struct, frozen=True, tag="register_adapter"):
    """Register (and with `preload`, load) a LoRA adapter; answered by `AdapterResult` once it is done."""

    call_id: str
    spec: AdapterSpec


class UnregisterAdapterRequest(msgspec.Struct, frozen=True, tag="unregister_adapter"):
    """Unregister a LoRA adapter: new requests naming it fail at once, requests in flight on it finish first, then
    its weights are freed; answered by `AdapterResult`."""

    call_id: str
    name: str


ClientMessage = Union[GenerateRequest, AbortRequest, TokenizeRequest, InfoRequest, HealthRequest,
                      RegisterAdapterRequest, UnregisterAdapterRequest]


class TokenInfo(msgspec.Struct, frozen=True):
    """One token as TGI reports it; `text` keeps special tokens, `logprob` is None where undefined."""

    id: int
    text: str
    logprob: float | None
    special: bool = False


class Admitted(msgspec.Struct, frozen=True, tag="admitted"):
    """The request passed the engine's validation and waits for (or starts) its prefill."""

    request_id: str
    input_length: int
    seed: int | None
    prompt_text: str | None = None  # the decoded prompt, when the request asked for `echo`
    thinking: Thinking = Thinking.UNOPENED  # where a chat prompt leaves a reasoning model's thinking section


class TokenDelta(msgspec.Struct, frozen=True, tag="token"):
    """One generated token but the last (which `Finished` carries); `token.text` is its incremental decode (never
    a broken UTF-8 sequence)."""

    request_id: str
    token: TokenInfo
    top_tokens: tuple[TokenInfo, ...] = ()


class Finished(msgspec.Struct, frozen=True, tag="finished"):
    """The request ended normally with its last token (`token`, `top_tokens`: TGI's `End { token }`);
    `generated_text` is decoded with special tokens skipped.

    `prefill` holds one entry per prompt token (the first one's logprob is None) when the request asked for
    `prefill_logprobs`, else it is empty.
    """

    request_id: str
    finish_reason: FinishReason
    generated_tokens: int
    generated_text: str
    input_length: int
    seed: int | None
    queue_time: float
    inference_time: float
    token: TokenInfo
    prefill: tuple[TokenInfo, ...] = ()
    top_tokens: tuple[TokenInfo, ...] = ()


CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's `error.code` for a prompt or budget too long


class Failed(msgspec.Struct, frozen=True, tag="failed"):
    """The request ended with an error; `message` is the full user-facing text."""

    request_id: str
    kind: ErrorKind
    message: str
    code: str | None = None  # OpenAI's `error.code`, where it has one


class TokenSpan(msgspec.Struct, frozen=True):
    """A token of a tokenized input with its byte offsets into that input (0, 0 for special tokens)."""

    id: int
    text: str
    start: int
    stop: int


class TokenizeResult(msgspec.Struct, frozen=True, tag="tokenized"):
    """Reply to `TokenizeRequest`; `error` is set (and `tokens` empty) when it failed."""

    call_id: str
    tokens: tuple[TokenSpan, ...] = ()
    templated_text: str | None = None
    error: Failed | None = None


class AdapterStatus(str, Enum):
    """How a register or unregister call ended; the HTTP layer maps each to SageMaker's adapter status codes."""

    OK = "ok"  # 200
    BAD_REQUEST = "bad_request"  # 400: a malformed name or spec, or a name already registered to another source
    NOT_FOUND = "not_found"  # 404: no such source directory or hub id, or no such registered adapter
    LOAD_FAILED = "load_failed"  # 424: the adapter's files cannot serve this base model (format, shapes, rank)
    NO_ROOM = "no_room"  # 507: every resident adapter slot is pinned or in use


class AdapterResult(msgspec.Struct, frozen=True, tag="adapter_result"):
    """Reply to `RegisterAdapterRequest` and `UnregisterAdapterRequest`; `message` is the user-facing text."""

    call_id: str
    status: AdapterStatus
    message: str


class AdapterInfo(msgspec.Struct, frozen=True):
    """A registered LoRA adapter as `/info` and `/v1/models` show it."""

    name: str
    source: str
    rank: int | None  # None until its config has been read
    target_modules: tuple[str, ...]
    pinned: bool
    resident: bool  # its weights are in memory now


class ModelInfo(msgspec.Struct, frozen=True):
    """What the engine loaded and the limits it resolved from the model and the configuration."""

    model_id: str
    model_sha: str | None
    model_pipeline_tag: str | None
    max_input_tokens: int
    max_total_tokens: int
    max_batch_total_tokens: int
    max_concurrent_requests: int
    dtype: str
    device: str
    device_map: dict[str, str]
    has_chat_template: bool
    num_parameters: int
    tool_format: str | None = None  # the chat template's native tool-call format (`serving.tool_formats`)
    added_tokens: dict[str, int] = {}  # the tokenizer's added tokens (special ones, tool markers) by text
    reasoning: bool = False  # the chat template writes or expects a <think>...</think> section
    vocab_size: int = 0  # the tokenizer's: a prompt given as token ids must use ids below it
    block_size: int = 0  # tokens per KV cache block
    num_blocks: int = 0  # KV cache blocks in the pool
    prefix_caching: bool = False
    adapters: tuple[AdapterInfo, ...] = ()  # the registered LoRA adapters, now
    max_lora_adapters: int = 0  # adapters resident in memory at once
    max_lora_rank: int = 0


class InfoResult(msgspec.Struct, frozen=True, tag="info_result"):
    """Reply to `InfoRequest`."""

    call_id: str
    info: ModelInfo


class HealthResult(msgspec.Struct, frozen=True, tag="health_result"):
    """Reply to `HealthRequest`, with the scheduler's current load (`batch_tokens`: the tokens that the KV cache
    blocks in use hold) and the KV cache's counters since the start."""

    call_id: str
    healthy: bool
    running: int
    waiting: int
    batch_tokens: int = 0
    blocks_used: int = 0
    blocks_free: int = 0
    prefix_queried_tokens: int = 0  # prompt tokens looked up in the prefix cache
    prefix_hit_tokens: int = 0  # of which found there
    preemptions: int = 0


EngineEvent = Union[Admitted, TokenDelta, Finished, Failed, TokenizeResult, InfoResult, HealthResult, AdapterResult]


class EventBatch(msgspec.Struct, frozen=True, tag="batch"):
    """Everything one engine step produced for one HTTP worker, sent as one message."""

    events: tuple[EngineEvent, ...]


_encoder = msgspec.msgpack.Encoder()
_client_decoder = msgspec.msgpack.Decoder(ClientMessage)
_batch_decoder = msgspec.msgpack.Decoder(EventBatch)


def encode(message: Any) -> bytes:
    """Serialise any message of this contract to MessagePack."""
    return _encoder.encode(message)


def decode_client_message(data: bytes) -> ClientMessage:
    """Parse a message sent by a client (raises `msgspec.DecodeError` on garbage)."""
    return _client_decoder.decode(data)


def decode_event_batch(data: bytes) -> EventBatch:
    """Parse a batch of engine events."""
    return _batch_decoder.decode(data)
