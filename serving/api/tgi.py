"""TGI's own routes: `/`, `/health`, `/generate`, `/generate_stream`, `/info`, `/metrics`, `/tokenize` and
`/chat_tokenize`."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, request

from serving.api.adapters import chosen
from serving.api.catalogue import Error
from serving.api.context import count_request, new_id, services
from serving.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.api.errors import ApiError
from serving.api.feed import EventFeed
from serving.api.headers import generation_headers, stream_headers
from serving.api.protocol.adapter import adapter_json, by_adapter_id
from serving.api.protocol.body import parse_body
from serving.api.protocol.chat import ChatCompletionRequest
from serving.api.protocol.generate import CompatGenerateRequest, GenerateRequest, generate_response, stream_renderer
from serving.api.protocol.validation import Limits
from serving.api.streaming import stream
from serving.api.version import VERSION
from serving.api.wire import json_response
from serving.messages import TokenizeRequest

blueprint = Blueprint("tgi", __name__)


def _tgi_error(error: ApiError) -> dict[str, Any]:
    """TGI's SSE error event."""
    return error.tgi_body()


def compat_return_full_text() -> bool:
    """TGI's `return_full_text` default on `POST /` and `/invocations`: true for text-generation or unknown models."""
    return services().info().model_pipeline_tag in (None, "text-generation")


def generate(body: GenerateRequest, prefix: str, as_list: bool) -> Response:
    """Generate to completion and answer TGI's `GenerateResponse` (in a one-element list for `POST /`)."""
    started = time.monotonic()
    count_request()
    context = services()
    limits = Limits.of(context.config, context.info())
    adapter = chosen(by_adapter_id(body.parameters.adapter_id))
    requests = adapter.apply(body.to_engine_requests(new_id(), limits, streaming=False))
    generations = EventFeed(context.client, requests).collect()
    response = generate_response(body, generations, prefix)
    headers = generation_headers(context.config.compute_type, len(body.inputs), started, generations)
    return json_response([response] if as_list else response, headers=headers)


def generate_stream(body: GenerateRequest, prefix: str) -> Response:
    """Stream TGI's `StreamResponse` events; validation errors become the stream's only event, as in TGI."""
    count_request()
    context = services()
    limits = Limits.of(context.config, context.info())
    adapter = chosen(by_adapter_id(body.parameters.adapter_id))
    return stream(context.client, lambda: adapter.apply(body.to_engine_requests(new_id(), limits, streaming=True)),
                  stream_headers(context.config.compute_type, len(body.inputs)), stream_renderer(body, prefix),
                  _tgi_error, done=False)


def compat_generate(body: CompatGenerateRequest) -> Response:
    """`POST /` and `/invocations` with `inputs`: a list response, or the stream when `stream` is true."""
    prefix = body.prefix(compat_return_full_text())
    return generate_stream(body, prefix) if body.stream else generate(body, prefix, as_list=True)


@blueprint.get("/")
@blueprint.get("/health")
def health() -> Response:
    """200 with an empty body when the engine is healthy, else 503."""
    result = services().client.health()
    if result is None or not result.healthy:
        raise ApiError(Error.HEALTHCHECK, "unhealthy")
    return Response(b"", 200)


@blueprint.post("/")
def compat_route() -> Response:
    """TGI's compat route, which TGI's Python client and integration tests call."""
    return compat_generate(parse_body(request, services().config.payload_limit, CompatGenerateRequest))


@blueprint.post("/generate")
def generate_route() -> Response:
    """Generate text; `return_full_text` defaults to false."""
    body = parse_body(request, services().config.payload_limit, GenerateRequest)
    return generate(body, body.prefix(), as_list=False)


@blueprint.post("/generate_stream")
def generate_stream_route() -> Response:
    """Stream tokens as SSE; `return_full_text` defaults to false; no `[DONE]`."""
    body = parse_body(request, services().config.payload_limit, GenerateRequest)
    return generate_stream(body, body.prefix())


@blueprint.get("/info")
def info() -> Response:
    """TGI's `Info`, with its key set and order, then the dtype, device type and device map summary (module ranges
    to devices) of the loaded model and its KV cache: block size, blocks (over every replica), prefix caching; and
    the LoRA adapters registered now, with the limits on them."""
    context = services()
    model = context.info(refresh=True)
    config = context.config
    return json_response({
        "model_id": model.model_id,
        "model_sha": model.model_sha,
        "model_pipeline_tag": model.model_pipeline_tag,
        "max_concurrent_requests": model.max_concurrent_requests,
        "max_best_of": config.max_best_of,
        "max_stop_sequences": config.max_stop_sequences,
        "max_input_tokens": model.max_input_tokens,
        "max_total_tokens": model.max_total_tokens,
        "validation_workers": config.workers,
        "max_client_batch_size": config.max_client_batch_size,
        "router": "text-generation-router",
        "version": VERSION,
        "sha": None,
        "docker_label": None,
        "model_dtype": f"torch.{model.dtype}",
        "model_device_type": model.device,
        "device_map": model.device_map,
        "kv_cache_block_size": model.block_size,
        "kv_cache_blocks": model.num_blocks,
        "prefix_caching": model.prefix_caching,
        "max_lora_adapters": model.max_lora_adapters,
        "max_lora_rank": model.max_lora_rank,
        "lora_adapters": [adapter_json(adapter) for adapter in model.adapters],
    })


@blueprint.get("/metrics")
def metrics() -> Response:
    """TGI's Prometheus metrics, with the engine's queue and batch gauges."""
    context = services()
    text = context.metrics.exposition(context.client.health(), context.info())
    return Response(text, 200, content_type=METRICS_CONTENT_TYPE)


def _tokens(request: TokenizeRequest) -> tuple[list[dict[str, Any]], str | None]:
    """The engine's tokens as `{id, text, start, stop}` (byte offsets), and the templated text of a chat."""
    result = services().client.tokenize(request)
    if result.error is not None:
        raise ApiError.from_failed(result.error)
    tokens = [{"id": token.id, "text": token.text, "start": token.start, "stop": token.stop}
              for token in result.tokens]
    return tokens, result.templated_text


@blueprint.post("/tokenize")
def tokenize() -> Response:
    """Tokenize `inputs` (parameters are ignored)."""
    body = parse_body(request, services().config.payload_limit, GenerateRequest)
    tokens, _ = _tokens(TokenizeRequest(call_id=new_id(), text=body.inputs, add_special_tokens=True))
    return json_response(tokens)


@blueprint.post("/chat_tokenize")
def chat_tokenize() -> Response:
    """Render a chat request (with its tools) with the template and tokenize it without adding special tokens."""
    context = services()
    body = parse_body(request, context.config.payload_limit, ChatCompletionRequest)
    count_request()
    limits = Limits.of(context.config, context.info())
    prompt = body.chat_prompt(body.tool_plan(limits), limits.tool_format is not None)
    tokens, templated_text = _tokens(TokenizeRequest(call_id=new_id(), chat=prompt, add_special_tokens=False))
    return json_response({"tokenize_response": tokens, "templated_text": templated_text})
