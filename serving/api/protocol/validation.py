"""Parameter validation for every route: TGI's checks in TGI's order with its exact messages, and OpenAI's extras.

The engine checks what needs the tokenizer (input length, the token budget); everything else is checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from serving.api.errors import ApiError
from serving.config import ServerConfig
from serving.constraints import GRAMMAR_WITH_MIN_TOKENS
from serving.messages import Grammar, ModelInfo, SamplingParams, StoppingParams


@dataclass(frozen=True)
class Limits:
    """The configured bounds that parameters are checked against."""

    max_best_of: int
    max_stop_sequences: int
    max_top_n_tokens: int
    max_input_tokens: int
    max_client_batch_size: int
    grammar_max_bytes: int = 100_000
    tool_format: str | None = None  # the model's native tool-call format (`serving.tool_formats`)
    added_tokens: Mapping[str, int] = field(default_factory=dict, hash=False, compare=False)
    reasoning: bool = False

    @classmethod
    def of(cls, config: ServerConfig, info: ModelInfo) -> "Limits":
        """The limits of this server and this model."""
        return cls(config.max_best_of, config.max_stop_sequences, config.max_top_n_tokens, info.max_input_tokens,
                   config.max_client_batch_size, config.grammar_max_bytes, info.tool_format, info.added_tokens,
                   info.reasoning)


@dataclass(frozen=True)
class Knobs:
    """The sampling and stopping parameters of one request as the client sent them (None = not sent)."""

    do_sample: bool = False
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    max_new_tokens: int | None = None
    stop: Sequence[str] = ()
    seed: int | None = None
    top_n_tokens: int | None = None
    logit_bias: dict[int, float] | None = None
    best_of: int = 1
    n: int = 1
    ignore_eos: bool = False
    min_new_tokens: int | None = None
    logprobs: bool = True  # False where the response shows no logprob (an OpenAI request that did not ask)
    grammar: Grammar | None = None

    def check(self, limits: Limits) -> None:
        """Raise the first of TGI's validation errors that applies, in TGI's order."""
        fail = ApiError.validation
        if self.best_of > 1:
            if limits.max_best_of == 1:
                raise fail("`best_of` != 1 is not allowed for this endpoint")
            if self.best_of > limits.max_best_of:
                raise fail(f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {self.best_of}")
            if not (self.do_sample or self.temperature is not None or self.top_k is not None
                    or self.top_p is not None or self.typical_p is not None):
                raise fail("you must use sampling when `best_of` is > 1")
        if self.temperature is not None and self.temperature <= 0:
            raise fail("`temperature` must be strictly positive")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise fail("`repetition_penalty` must be strictly positive")
        if self.frequency_penalty is not None and not -2.0 <= self.frequency_penalty <= 2.0:
            raise fail("`frequency_penalty` must be >= -2.0 and <= 2.0")
        if self.presence_penalty is not None and not -2.0 <= self.presence_penalty <= 2.0:
            raise fail("`presence_penalty` must be >= -2.0 and <= 2.0")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise fail("`top_p` must be > 0.0 and < 1.0")
        if self.typical_p is not None and not 0.0 < self.typical_p < 1.0:
            raise fail("`typical_p` must be > 0.0 and < 1.0")
        if self.top_k is not None and self.top_k <= 0:
            raise fail("`top_k` must be strictly positive")
        if self.max_new_tokens == 0:
            raise fail("`max_new_tokens` must be strictly positive")
        if len(self.stop) > limits.max_stop_sequences:
            raise fail(f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(self.stop)}")
        if self.best_of > 1 and self.seed is not None:
            raise fail("`seed` must not be set when `best_of` > 1")
        if self.top_n_tokens is not None and self.top_n_tokens > limits.max_top_n_tokens:
            raise fail(f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {self.top_n_tokens}")
        if not 1 <= self.n <= limits.max_client_batch_size:
            raise fail(f"`n` must be >= 1 and <= {limits.max_client_batch_size}. Given: {self.n}")
        if self.grammar is not None and (self.ignore_eos or self.min_new_tokens):
            raise fail(GRAMMAR_WITH_MIN_TOKENS)

    def sampling(self, seed_offset: int = 0) -> SamplingParams:
        """The engine's sampling parameters (`top_p: 1.0` means no top-p); `seed_offset` varies fanned-out copies."""
        return SamplingParams(
            do_sample=self.do_sample,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_k=self.top_k or 0,
            top_p=1.0 if self.top_p is None else self.top_p,
            typical_p=1.0 if self.typical_p is None else self.typical_p,
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            seed=None if self.seed is None else (self.seed + seed_offset) % 2**64,
            top_n_tokens=self.top_n_tokens or 0,
            logit_bias=dict(self.logit_bias or {}),
            logprobs=self.logprobs,
            grammar=self.grammar,
        )

    def stopping(self) -> StoppingParams:
        """The engine's stopping parameters."""
        return StoppingParams(max_new_tokens=self.max_new_tokens, stop=tuple(self.stop), ignore_eos=self.ignore_eos,
                              min_new_tokens=self.min_new_tokens or 0)


def check_inputs(inputs: str, truncate: int | None, limits: Limits) -> None:
    """TGI's checks of the prompt that follow the parameter checks: non-empty, and `truncate` in range."""
    if not inputs:
        raise ApiError.validation("`inputs` cannot be empty")
    if truncate is not None and not 0 < truncate <= limits.max_input_tokens:
        raise ApiError.validation("`truncate` must be strictly positive and less than "
                                  f"{limits.max_input_tokens}. Given: {truncate}")


def openai_temperature(temperature: float | None) -> tuple[bool, float | None]:
    """OpenAI routes' rule: exactly 0 is greedy; anything else, null included, samples (null = 1.0)."""
    if temperature == 0.0:
        return False, None
    return True, temperature


def parse_logit_bias(logit_bias: dict[str, float] | list[float] | None) -> dict[int, float] | None:
    """OpenAI's `{"token id": bias}` map, checked (TGI rejects it as a type error); TGI's own array of floats,
    which `text_generation` and `huggingface_hub` send, is accepted and, as in TGI, unused. An id outside the
    vocabulary is ignored (the engine skips those; one past 64 bits is dropped here, as no message could carry it)."""
    if not logit_bias or isinstance(logit_bias, list):
        return None
    parsed: dict[int, float] = {}
    for key, bias in logit_bias.items():
        if not (key.isascii() and key.isdigit()):
            raise ApiError.validation(f"`logit_bias` keys must be token ids. Given: {key!r}")
        if not -100.0 <= bias <= 100.0:
            raise ApiError.validation(f"`logit_bias` values must be >= -100 and <= 100. Given: {bias}")
        if int(key) < 2**63:
            parsed[int(key)] = bias
    return parsed
