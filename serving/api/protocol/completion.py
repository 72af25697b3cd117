"""OpenAI's legacy Completions body as TGI reads it, and its responses: one engine request per prompt."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator

from serving import messages
from serving.api.errors import ApiError
from serving.api.feed import Generation, Step
from serving.api.protocol.chat import StopSequences, openai_finish_reason, usage
from serving.api.protocol.generate import STRICT, U32, U64
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
    prompt: Annotated[list[str], BeforeValidator(_prompt_list)]
    suffix: str | None = None
    max_tokens: U32 | None = None
    temperature: float | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    n: U32 | None = None
    seed: U64 | None = None
    stop: StopSequences = None
    stream: bool = False
    ignore_eos: bool = False  # vLLM's extra fields: generate past EOS / not end before `min_tokens` tokens
    min_tokens: U32 | None = None

    def check_batch(self, limits: Limits) -> None:
        """The errors TGI reports before generating anything: a suffix, or too many prompts."""
        if self.suffix is not None:
            raise ApiError("suffix not supported",
                           "Suffix is not supported and can be achieved by preprocessing the prompt.")
        if len(self.prompt) > limits.max_client_batch_size:
            raise ApiError("batch size exceeded", "Number of prompts exceeds the maximum allowed batch size of "
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
            max_new_tokens=self.max_tokens, stop=self.stop or (), seed=self.seed,
            logit_bias=parse_logit_bias(self.logit_bias), n=self.choices_per_prompt(), ignore_eos=self.ignore_eos,
            min_new_tokens=self.min_tokens,
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
    """Builds one request's `text_completion` or its chunks; `model` is always the served model (TGI)."""

    def __init__(self, completion_id: str, created: int, model: str, choices_per_prompt: int) -> None:
        self.completion_id = completion_id
        self.created = created
        self.model = model
        self.choices_per_prompt = choices_per_prompt

    def _final(self, choices: list[dict[str, Any]], final_usage: dict[str, int]) -> dict[str, Any]:
        """TGI's `CompletionFinal`."""
        return {"object": "text_completion", "id": self.completion_id, "created": self.created,
                "model": self.model, "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices,
                "usage": final_usage}

    def completion(self, generations: list[Generation]) -> dict[str, Any]:
        """The non-streaming response; EOS is reported as `stop`; usage counts each prompt once."""
        choices = [
            {"index": index, "text": generation.finished.generated_text, "logprobs": None,
             "finish_reason": openai_finish_reason(generation.finished.finish_reason)}
            for index, generation in enumerate(generations)
        ]
        return self._final(choices, usage(sum(g.finished.input_length for g in generations[::self.choices_per_prompt]),
                                          sum(g.finished.generated_tokens for g in generations)))

    def chunks(self, step: Step) -> list[dict[str, Any]]:
        """One token's chunk (`finish_reason: ""`); a prompt's last token is a final with the raw reason."""
        choice = {"index": step.index, "text": step.delta.token.text, "logprobs": None, "finish_reason": ""}
        finished = step.finished
        if finished is None:
            return [{"object": "text_completion", "id": self.completion_id, "created": self.created,
                     "choices": [choice], "model": self.model, "system_fingerprint": SYSTEM_FINGERPRINT}]
        choice["finish_reason"] = finished.finish_reason.value
        return [self._final([choice], usage(finished.input_length, finished.generated_tokens))]

    def trailer(self) -> list[dict[str, Any]]:
        """Nothing follows the last token (each prompt's usage rides on its final chunk)."""
        return []
