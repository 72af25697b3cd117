"""OpenAI's legacy Completions body, and its responses: one engine request per prompt.

A prompt is a string, a list of strings, a list of token ids or a list of such lists, as OpenAI takes it; `echo`
puts each prompt in front of its completions (a prompt of token ids as the engine decodes it).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema

from serving import messages
from serving.api.catalogue import Error
from serving.api.errors import ApiError
from serving.api.feed import Generation, Step
from serving.api.protocol.chat import StopSequences, StreamOptions, openai_finish_reason, usage
from serving.api.protocol.generate import STRICT, U32, U64, whole_number
from serving.api.protocol.stop_text import StopHoldback, without_stop
from serving.api.protocol.tokens import logprob
from serving.api.protocol.validation import Knobs, Limits, openai_temperature, parse_logit_bias
from serving.api.version import SYSTEM_FINGERPRINT


def _prompt_list(value: Any) -> Any:
    """One prompt or a non-empty list of them; a list of token ids is one prompt."""
    if isinstance(value, str):
        return [value]
    if value == []:
        raise ValueError("Empty array detected. Do not use an empty array for the prompt.")
    if isinstance(value, list) and all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value):
        return [value]
    return value


TokenIds = Annotated[list[Annotated[int, Field(ge=0), BeforeValidator(whole_number)]], Field(min_length=1)]
Prompt = str | TokenIds
_PROMPT_SCHEMA = {"anyOf": [
    {"type": "string"},
    {"type": "array", "items": {"type": "string"}, "minItems": 1},
    {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
    {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
     "minItems": 1},
]}


class CompletionRequest(BaseModel):
    """The body of `/v1/completions` (and of `/invocations`' third variant)."""

    model_config = STRICT

    model: str | None = None
    prompt: Annotated[list[Prompt], BeforeValidator(_prompt_list), WithJsonSchema(_PROMPT_SCHEMA)]
    suffix: str | None = None
    echo: bool = False
    max_tokens: U32 | None = None
    temperature: float | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | list[float] | None = None
    n: U32 | None = None
    seed: U64 | None = None
    stop: StopSequences = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: U32 | None = None
    ignore_eos: bool = False  # vLLM's extra fields: generate past EOS / not end before `min_tokens` tokens
    min_tokens: U32 | None = None

    def check_batch(self, limits: Limits) -> None:
        """The errors reported before generating anything: a suffix, or too many prompts (TGI's)."""
        if self.suffix is not None:
            raise ApiError(Error.SUFFIX_UNSUPPORTED,
                           "Suffix is not supported and can be achieved by preprocessing the prompt.")
        if len(self.prompt) > limits.max_client_batch_size:
            raise ApiError(Error.BATCH_SIZE, "Number of prompts exceeds the maximum allowed batch size of "
                                                  f"{limits.max_client_batch_size}")

    def choices_per_prompt(self) -> int:
        """`n`: how many completions of each prompt."""
        return 1 if self.n is None else self.n

    def to_engine_requests(self, request_id: str, limits: Limits) -> list[messages.GenerateRequest]:
        """Validate and build `n` engine requests per prompt; request `i * n + j` is choice `i * n + j`."""
        do_sample, temperature = openai_temperature(self.temperature)
        knobs = Knobs(
            do_sample=do_sample, temperature=temperature, repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty, presence_penalty=self.presence_penalty, top_p=self.top_p,
            max_new_tokens=self.max_tokens, stop=self.stop or (), seed=self.seed, top_n_tokens=self.logprobs,
            logit_bias=parse_logit_bias(self.logit_bias), n=self.choices_per_prompt(), ignore_eos=self.ignore_eos,
            min_new_tokens=self.min_tokens, logprobs=self.logprobs is not None,
        )
        knobs.check(limits)
        n = knobs.n
        return [
            messages.GenerateRequest(request_id=f"{request_id}-{index * n + choice}",
                                     sampling=knobs.sampling(choice), stopping=knobs.stopping(),
                                     prompt=prompt if isinstance(prompt, str) else None,
                                     prompt_ids=None if isinstance(prompt, str) else tuple(prompt),
                                     echo=self.echo and not isinstance(prompt, str), add_special_tokens=True)
            for index, prompt in enumerate(self.prompt)
            for choice in range(n)
        ]

    def characters(self) -> int:
        """The characters of the text prompts, for `x-compute-characters`."""
        return sum(len(prompt) for prompt in self.prompt if isinstance(prompt, str))

    def echoed(self, index: int, prompt_text: str | None) -> str:
        """What `echo` puts in front of choice `index`: its prompt (`prompt_text`, as the engine decoded it, if
        token ids)."""
        if not self.echo:
            return ""
        prompt = self.prompt[index // self.choices_per_prompt()]
        if isinstance(prompt, str):
            return prompt
        return prompt_text or ""


class CompletionResponder:
    """Builds one request's `text_completion` or its chunks; `model` is always the served model (TGI).

    With `logprobs: k` each choice carries OpenAI's legacy `logprobs` (tokens, their logprobs, the k best
    alternatives and each token's offset into the choice's text); with `stream_options.include_usage` every chunk
    has `usage: null` and the stream ends with one chunk of no choices and the whole usage, as OpenAI sends it.
    With `echo` a choice's text (a stream's first chunk of each choice) starts with its prompt.
    """

    def __init__(self, request: CompletionRequest, completion_id: str, created: int, model: str) -> None:
        self.request = request
        self.completion_id = completion_id
        self.created = created
        self.model = model
        self.choices_per_prompt = request.choices_per_prompt()
        self.include_usage = request.stream_options is not None and request.stream_options.include_usage
        self.stops = tuple(request.stop or ())
        self._offsets: dict[int, int] = {}
        self._holdbacks: dict[int, StopHoldback] = {}
        self._usage = (0, 0)

    def _logprobs(self, deltas: list[messages.TokenDelta], offset: int) -> dict[str, Any] | None:
        """OpenAI's legacy `logprobs` of `deltas`, whose text starts at `offset` in the choice's text."""
        if self.request.logprobs is None:
            return None
        offsets = []
        for delta in deltas:
            offsets.append(offset)
            offset += 0 if delta.token.special else len(delta.token.text)
        return {"tokens": [delta.token.text for delta in deltas],
                "token_logprobs": [logprob(delta.token.logprob) for delta in deltas],
                "top_logprobs": [{top.text: logprob(top.logprob) for top in delta.top_tokens} for delta in deltas],
                "text_offset": offsets}

    def _response(self, choices: list[dict[str, Any]], usage_field: dict[str, Any]) -> dict[str, Any]:
        """A `text_completion` with these choices."""
        return {"object": "text_completion", "id": self.completion_id, "created": self.created,
                "model": self.model, "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices, **usage_field}

    def completion(self, generations: list[Generation]) -> dict[str, Any]:
        """The non-streaming response; EOS is reported as `stop`; usage counts each prompt once."""
        choices = []
        for index, generation in enumerate(generations):
            finished = generation.finished
            prefix = self.request.echoed(index, generation.prompt_text)
            choices.append({"index": index,
                            "text": prefix + without_stop(finished.generated_text, finished.finish_reason, self.stops),
                            "logprobs": self._logprobs(generation.deltas, len(prefix)),
                            "finish_reason": openai_finish_reason(finished.finish_reason)})
        total = usage(sum(g.finished.input_length for g in generations[::self.choices_per_prompt]),
                      sum(g.finished.generated_tokens for g in generations))
        return self._response(choices, {"usage": total})

    def chunks(self, step: Step) -> list[dict[str, Any]]:
        """One token's chunk (`finish_reason: null` until a choice's last token). Text that could still become a
        stop string waits for a later chunk, and the stop string is never sent."""
        finished = step.finished
        holdback = self._holdbacks.setdefault(step.index, StopHoldback(self.stops))
        text = holdback.release("" if step.delta.token.special else step.delta.token.text,
                                None if finished is None else finished.finish_reason)
        if step.index not in self._offsets:  # the choice's first chunk
            prefix = self.request.echoed(step.index, step.prompt_text)
            text = prefix + text
            self._offsets[step.index] = len(prefix)
        offset = self._offsets[step.index]
        self._offsets[step.index] = offset + len(step.delta.token.text)
        choice = {"index": step.index, "text": text, "logprobs": self._logprobs([step.delta], offset),
                  "finish_reason": None if finished is None else openai_finish_reason(finished.finish_reason)}
        if finished is not None:
            prompt_tokens, completion_tokens = self._usage
            first_choice = step.index % self.choices_per_prompt == 0  # a prompt's tokens count once
            self._usage = (prompt_tokens + (finished.input_length if first_choice else 0),
                           completion_tokens + finished.generated_tokens)
        return [self._response([choice], {"usage": None} if self.include_usage else {})]

    def trailer(self) -> list[dict[str, Any]]:
        """With `include_usage`, a last chunk with no choices and the whole usage."""
        return [self._response([], {"usage": usage(*self._usage)})] if self.include_usage else []
