"""OpenAI-compatible routes: `/v1/chat/completions`, `/v1/completions` and `/v1/models`; `model` chooses a LoRA
adapter by the rule of `protocol.adapter`."""

from __future__ import annotations

import time
from typing import Any, Callable

from flask import Blueprint, Response, request

from serving.api.adapters import chosen
from serving.api.catalogue import Error
from serving.api.context import count_request, new_id, services, unix_now
from serving.api.errors import MODEL_NOT_FOUND_CODE, ApiError, use_openai_errors
from serving.api.feed import EventFeed
from serving.api.headers import generation_headers, stream_headers
from serving.api.protocol.adapter import by_model
from serving.api.protocol.body import parse_body
from serving.api.protocol.chat import ChatCompletionRequest, ChatResponder
from serving.api.protocol.completion import CompletionRequest, CompletionResponder
from serving.api.protocol.validation import Limits
from serving.api.streaming import stream
from serving.api.wire import json_response
from serving.messages import AdapterInfo, GenerateRequest, ModelInfo

blueprint = Blueprint("openai", __name__)
blueprint.before_request(use_openai_errors)


def _openai_error(error: ApiError) -> dict[str, Any]:
    """The SSE error event of OpenAI routes: OpenAI's error body."""
    return error.openai_body()


def _serve(responder: ChatResponder | CompletionResponder, build: Callable[[], list[GenerateRequest]],
           streaming: bool, characters: int, started: float) -> Response:
    """Stream the chunks (then `[DONE]`), or generate everything and answer one JSON object.

    TGI counts each generation a chat or completions request starts as a request of its own.
    """
    context = services()
    compute_type = context.config.compute_type

    def counted_build() -> list[GenerateRequest]:
        requests = build()
        context.metrics.request(len(requests))
        return requests

    if streaming:
        return stream(context.client, counted_build, stream_headers(compute_type, characters), responder.chunks,
                      _openai_error, done=True, trailer=responder.trailer, http_errors=True)
    generations = EventFeed(context.client, counted_build()).collect()
    return json_response(responder.completion(generations),
                         headers=generation_headers(compute_type, characters, started, generations))


def _begin() -> tuple[float, ModelInfo, Limits]:
    """What both OpenAI routes do first: note the start, answer errors OpenAI's way, count the request; the
    model's facts and the request limits."""
    started = time.monotonic()
    use_openai_errors()
    count_request()
    context = services()
    info = context.info()
    return started, info, Limits.of(context.config, info)


def chat(body: ChatCompletionRequest) -> Response:
    """A chat completion, or its stream of chunks."""
    started, info, limits = _begin()
    plan = body.tool_plan(limits)  # tool errors are answered before any streaming, as in TGI
    request_id = new_id()
    responder = ChatResponder(body, f"chatcmpl-{request_id}", unix_now(), body.response_model(info.model_id),
                              plan, limits.reasoning)
    adapter = chosen(by_model(body.model, info.model_id))
    return _serve(responder, lambda: adapter.apply(body.to_engine_requests(request_id, limits)), body.stream,
                  body.characters(), started)


def completions(body: CompletionRequest) -> Response:
    """Completions of one prompt or several (each its own engine request), or their interleaved stream."""
    started, info, limits = _begin()
    body.check_batch(limits)
    request_id = new_id()
    responder = CompletionResponder(body, f"cmpl-{request_id}", unix_now(), info.model_id)
    adapter = chosen(by_model(body.model, info.model_id))
    return _serve(responder, lambda: adapter.apply(body.to_engine_requests(request_id, limits)), body.stream,
                  body.characters(), started)


@blueprint.post("/v1/chat/completions")
def chat_route() -> Response:
    """OpenAI's Chat Completions."""
    return chat(parse_body(request, services().config.payload_limit, ChatCompletionRequest))


@blueprint.post("/v1/completions")
def completions_route() -> Response:
    """OpenAI's legacy Completions."""
    return completions(parse_body(request, services().config.payload_limit, CompletionRequest))


def _model(model_id: str) -> dict[str, Any]:
    """OpenAI's model object of the served model."""
    return {"id": model_id, "object": "model", "created": 0, "owned_by": model_id}


def _adapter_model(adapter: AdapterInfo, base: str) -> dict[str, Any]:
    """A LoRA adapter's model object, as vLLM shows one: its source as `root`, the base model as `parent`."""
    return {"id": adapter.name, "object": "model", "created": 0, "owned_by": base, "root": adapter.source,
            "parent": base}


def _cards() -> dict[str, dict[str, Any]]:
    """Every model object by id: the served model, then one per registered adapter (asked of the engine now)."""
    info = services().info(refresh=True)
    cards = {info.model_id: _model(info.model_id)}
    cards.update((adapter.name, _adapter_model(adapter, info.model_id)) for adapter in info.adapters)
    return cards


@blueprint.get("/v1/models")
def models() -> Response:
    """The served model and its LoRA adapters."""
    return json_response({"object": "list", "data": list(_cards().values())})


@blueprint.get("/v1/models/<path:model_id>")
def model(model_id: str) -> Response:
    """The served model or an adapter, asked for by its id; any other id is OpenAI's 404 `model_not_found`."""
    card = _cards().get(model_id)
    if card is None:
        raise ApiError(Error.MODEL_NOT_FOUND, f"The model `{model_id}` does not exist",
                       code=MODEL_NOT_FOUND_CODE)
    return json_response(card)
