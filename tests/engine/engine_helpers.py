"""Small drivers for engine tests: build requests, run the engine dry, group the events by request."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

from serving.config import EngineConfig
from serving.engine.engine import LLMEngine
from serving.messages import (
    ChatPrompt,
    EngineEvent,
    Finished,
    GenerateRequest,
    SamplingParams,
    StoppingParams,
    TokenDelta,
)

PROMPTS = (
    "a",
    "Hello world",
    "the model was learning",
    "Deep neural network data token server request stream batch engine python coffee",
    "café naïve résumé 日本",
    "What is the time?",
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen",
    "🙂 über straße",
)


def request(request_id: str, prompt: str | None = None, max_new_tokens: int | None = 12, *,
            chat: ChatPrompt | None = None, truncate: int | None = None, stop: tuple[str, ...] = (),
            ignore_eos: bool = False, min_new_tokens: int = 0, prefill_logprobs: bool = False,
            **sampling: Any) -> GenerateRequest:
    """A generate request; keyword arguments beyond the stopping ones are sampling parameters."""
    return GenerateRequest(
        request_id=request_id,
        sampling=SamplingParams(**sampling),
        stopping=StoppingParams(max_new_tokens=max_new_tokens, stop=stop, ignore_eos=ignore_eos,
                                min_new_tokens=min_new_tokens),
        prompt=prompt,
        chat=chat,
        truncate=truncate,
        prefill_logprobs=prefill_logprobs,
    )


def drain(engine: LLMEngine, max_steps: int = 1000) -> dict[str, list[EngineEvent]]:
    """Step until the engine is idle; every event grouped by request id, in order."""
    events: dict[str, list[EngineEvent]] = defaultdict(list)
    for _ in range(max_steps):
        if not engine.has_work():
            return events
        for event in engine.step():
            events[event.request_id].append(event)
    raise AssertionError("the engine did not finish")


def token_ids(events: list[EngineEvent]) -> list[int]:
    """The generated token ids among a request's events."""
    return [e.token.id for e in events if isinstance(e, (TokenDelta, Finished))]


def finished(events: list[EngineEvent]) -> Finished:
    """The request's final event, which must be `Finished`."""
    assert isinstance(events[-1], Finished), events[-1]
    return events[-1]


def generate_alone(engine: LLMEngine, req: GenerateRequest) -> list[EngineEvent]:
    """Run one request on an idle engine; its events after `Admitted`."""
    assert not engine.has_work()
    engine.add_request(req)
    return drain(engine)[req.request_id]


def engine_config(model_id: str | Path, **overrides: object) -> EngineConfig:
    """An engine configuration for a local model with everything else left to the engine's defaults."""
    config = EngineConfig(
        model_id=str(model_id), revision=None, hf_token=None, trust_remote_code=False, num_gpus=None, dtype=None,
        max_input_tokens=None, max_total_tokens=None, max_batch_prefill_tokens=None, max_batch_total_tokens=None,
        max_batch_size=None, max_concurrent_requests=128, torch_threads=1, engine_address="ipc:///tmp/unused",
        log_level="info",
    )
    return dataclasses.replace(config, **overrides)
