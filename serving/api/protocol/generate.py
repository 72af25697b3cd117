"""TGI's `/generate`, `/generate_stream` and `POST /` bodies, and the responses and events they produce."""

from __future__ import annotations

from typing import Annotated, Any, Callable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from serving import messages
from serving.messages import Grammar
from serving.api.errors import ApiError
from serving.api.feed import Generation, Step
from serving.api.protocol.structured import tgi_grammar
from serving.api.protocol.tokens import prefill_json, token_json, top_tokens_json
from serving.api.protocol.validation import Knobs, Limits, check_inputs

def whole_number(value: Any) -> Any:
    """A float with no fractional part (`5.0`, `1e3`) is the integer JSON Schema says it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


U32 = Annotated[int, Field(ge=0, le=2**32 - 1), BeforeValidator(whole_number)]
U64 = Annotated[int, Field(ge=0, le=2**64 - 1), BeforeValidator(whole_number)]
I32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1), BeforeValidator(whole_number)]
STRICT = ConfigDict(strict=True, extra="ignore")


class GenerateParameters(BaseModel):
    """TGI's `parameters`; a missing field takes its own default (so `do_sample` is false)."""

    model_config = STRICT

    best_of: U32 | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: I32 | None = None
    top_p: float | None = None
    typical_p: float | None = None
    do_sample: bool = False
    max_new_tokens: U32 | None = None
    return_full_text: bool | None = None
    stop: list[str] = []
    truncate: U32 | None = None
    watermark: bool = False
    details: bool = False
    decoder_input_details: bool = False
    seed: U64 | None = None
    top_n_tokens: U32 | None = None
    grammar: dict[str, Any] | None = None
    adapter_id: str | None = None

    def knobs(self, grammar: Grammar | None = None) -> Knobs:
        """The sampling and stopping parameters to check and send."""
        return Knobs(
            do_sample=self.do_sample, temperature=self.temperature, repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty, top_k=self.top_k, top_p=self.top_p, typical_p=self.typical_p,
            max_new_tokens=self.max_new_tokens, stop=self.stop, seed=self.seed, top_n_tokens=self.top_n_tokens,
            best_of=self.best_of or 1, grammar=grammar,
        )


def _absent_parameters() -> GenerateParameters:
    """TGI's quirk: without a `parameters` key the request samples."""
    return GenerateParameters(do_sample=True)


class GenerateRequest(BaseModel):
    """The body of `/generate`, `/generate_stream` and `/tokenize`."""

    model_config = STRICT

    inputs: str
    parameters: GenerateParameters = Field(default_factory=_absent_parameters)

    def to_engine_requests(self, request_id: str, limits: Limits, streaming: bool) -> list[messages.GenerateRequest]:
        """Validate as TGI does and build one engine request, or `best_of` of them."""
        parameters = self.parameters
        if streaming and parameters.best_of not in (None, 1):
            raise ApiError.validation("`best_of` != 1 is not supported when streaming tokens")
        if streaming and parameters.decoder_input_details:
            raise ApiError.validation("`decoder_input_details` == true is not supported when streaming tokens")
        knobs = parameters.knobs()
        knobs.check(limits)
        check_inputs(self.inputs, parameters.truncate, limits)
        if parameters.grammar is not None:  # TGI's last check
            knobs = parameters.knobs(tgi_grammar(parameters.grammar, limits.grammar_max_bytes))
        return [
            messages.GenerateRequest(
                request_id=f"{request_id}-{index}", sampling=knobs.sampling(), stopping=knobs.stopping(),
                prompt=self.inputs, add_special_tokens=True, truncate=parameters.truncate,
                prefill_logprobs=parameters.decoder_input_details)
            for index in range(knobs.best_of)
        ]

    def prefix(self, compat_default: bool = False) -> str:
        """What goes before the generated text: the prompt when `return_full_text` (null = `compat_default`)."""
        full_text = self.parameters.return_full_text
        return self.inputs if (compat_default if full_text is None else full_text) else ""


class CompatGenerateRequest(GenerateRequest):
    """The body of `POST /` and of `/invocations`' first variant: `/generate` plus `stream`."""

    stream: bool = False


def _sequence_details(generation: Generation) -> dict[str, Any]:
    """The per-sequence part of TGI's `details`, in TGI's key order (`prefill` only with `decoder_input_details`)."""
    finished = generation.finished
    return {
        "finish_reason": finished.finish_reason.value,
        "generated_tokens": finished.generated_tokens,
        "seed": finished.seed,
        "prefill": prefill_json(finished.prefill),
        "tokens": [token_json(delta.token) for delta in generation.deltas],
    }


def _top_tokens(generation: Generation) -> dict[str, Any]:
    """`top_tokens`, present only when some were asked for."""
    if not any(delta.top_tokens for delta in generation.deltas):
        return {}
    return {"top_tokens": [top_tokens_json(delta.top_tokens) for delta in generation.deltas]}


def generate_response(request: GenerateRequest, generations: list[Generation], prefix: str) -> dict[str, Any]:
    """TGI's `GenerateResponse`; with `best_of`, the sequence of best mean logprob wins and the rest follow."""
    best, *others = sorted(generations, key=lambda generation: -generation.mean_logprob())
    response: dict[str, Any] = {"generated_text": prefix + best.finished.generated_text}
    if request.parameters.details or request.parameters.decoder_input_details:
        details = _sequence_details(best)
        if others:
            details["best_of_sequences"] = [
                {"generated_text": prefix + other.finished.generated_text, **_sequence_details(other),
                 **_top_tokens(other)}
                for other in others
            ]
        response["details"] = {**details, **_top_tokens(best)}
    return response


def stream_renderer(request: GenerateRequest, prefix: str) -> Callable[[Step], list[dict[str, Any]]]:
    """Turns each token into TGI's `StreamResponse`; the last one carries the text and, if asked, details."""
    index = 0

    def render(step: Step) -> list[dict[str, Any]]:
        nonlocal index
        index += 1
        event: dict[str, Any] = {"index": index, "token": token_json(step.delta.token)}
        if step.delta.top_tokens:
            event["top_tokens"] = top_tokens_json(step.delta.top_tokens)
        finished = step.finished
        event["generated_text"] = None if finished is None else prefix + finished.generated_text
        event["details"] = None if finished is None or not request.parameters.details else {
            "finish_reason": finished.finish_reason.value,
            "generated_tokens": finished.generated_tokens,
            "seed": finished.seed,
            "input_length": finished.input_length,
        }
        return [event]

    return render
