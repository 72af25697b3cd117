"""OpenAI's legacy Completions body as TGI reads it, and its responses: one engine request per prompt."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, WithJsonSchema

from serving import messages
from serving.api.catalogue import Error
from serving.api.errors import ApiError
from serving.api.feed import Generation, Step
from serving.api.protocol.chat import StopSequences, StreamOptions, openai_finish_reason, usage
from serving.api.protocol.generate import STRICT, U32, U64
from serving.api.protocol.tokens import logprob
from serving.api.protocol.validation import Knobs, Limits, openai_temperature, parse_logit_bias
from serving.api.version import SYSTEM_FINGERPRINT


def _prompt_list(value: Any) -> Any:
    """One prompt or a non-empty list of them."""
    if isinstance(value, str):
        return [value]
    if value == []:
        raise ValueError("Empty array detected. Do not use an empty array for the prompt.")
    return value


class CompletionRequest(BaseModel):
    """The body of `/v1/completions` (and of `/invocations`' third variant)."""

    model_config = STRICT

    model: str | None = None
    prompt: Annotated[list[str], BeforeValidator(_prompt_list), WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]})]
    suffix: str | None = None
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
        """The errors TGI reports before generating anything: a suffix, or too many prompts."""
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
                                     prompt=prompt, add_special_tokens=True)
            for index, prompt in enumerate(self.prompt)
            for choice in range(n)
        ]


class CompletionResponder:
    """Builds one request's `text_completion` or its chunks; `model` is always the served model (TGI).

    With `logprobs: k` each choice carries OpenAI's legacy `logprobs` (tokens, their logprobs, the k best
    alternatives and each token's offset into the choice's text); with `stream_options.include_usage` a stream
    ends with a chunk of no choices and the whole usage, as OpenAI sends it.
    """

    def __init__(self, request: CompletionRequest, completion_id: str, created: int, model: str) -> None:
        self.request = request
        self.completion_id = completion_id
        self.created = created
        self.model = model
        self.choices_per_prompt = request.choices_per_prompt()
        self._offsets: dict[int, int] = {}
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

    def _final(self, choices: list[dict[str, Any]], final_usage: dict[str, int]) -> dict[str, Any]:
        """TGI's `CompletionFinal`."""
        return {"object": "text_completion", "id": self.completion_id, "created": self.created,
                "model": self.model, "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices,
                "usage": final_usage}

    def completion(self, generations: list[Generation]) -> dict[str, Any]:
        """The non-streaming response; EOS is reported as `stop`; usage counts each prompt once."""
        choices = [
            {"index": index, "text": generation.finished.generated_text,
             "logprobs": self._logprobs(generation.deltas, 0),
             "finish_reason": openai_finish_reason(generation.finished.finish_reason)}
            for index, generation in enumerate(generations)
        ]
        return self._final(choices, usage(sum(g.finished.input_length for g in generations[::self.choices_per_prompt]),
                                          sum(g.finished.generated_tokens for g in generations)))

    def chunks(self, step: Step) -> list[dict[str, Any]]:
        """One token's chunk (`finish_reason: ""`); a prompt's last token is a final with the raw reason."""
        offset = self._offsets.get(step.index, 0)
        choice = {"index": step.index, "text": step.delta.token.text,
                  "logprobs": self._logprobs([step.delta], offset), "finish_reason": ""}
        self._offsets[step.index] = offset + len(step.delta.token.text)
        finished = step.finished
        if finished is None:
            return [{"object": "text_completion", "id": self.completion_id, "created": self.created,
                     "choices": [choice], "model": self.model, "system_fingerprint": SYSTEM_FINGERPRINT}]
        choice["finish_reason"] = finished.finish_reason.value
        prompt_tokens, completion_tokens = self._usage
        first_choice = step.index % self.choices_per_prompt == 0  # a prompt's tokens count once
        self._usage = (prompt_tokens + (finished.input_length if first_choice else 0),
                       completion_tokens + finished.generated_tokens)
        return [self._final([choice], usage(finished.input_length, finished.generated_tokens))]

    def trailer(self) -> list[dict[str, Any]]:
        """Each prompt's usage rides on its final chunk; with `include_usage`, a last chunk has it all."""
        options = self.request.stream_options
        if options is None or not options.include_usage:
            return []
        return [self._final([], usage(*self._usage))]
