"""LoRA adapters over HTTP: the adapter each request runs with, and the routes that register, unregister and list
them: SageMaker's `POST /adapters`, `DELETE /adapters/{name}` (and `GET /adapters`), and vLLM's
`/v1/load_lora_adapter` and `/v1/unload_lora_adapter`.

Registration reaches every engine replica (`EngineClient.register_adapter`); it may download and load weights, so
it waits long, in its own greenlet, never blocking other requests. SageMaker's statuses: 200 plain text, 400 a bad
request, 404 no such source or adapter, 424 an adapter that cannot load, 507 no room; the errors are JSON in TGI's
shape on SageMaker's routes and in OpenAI's on vLLM's.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, request

from serving.api.catalogue import Error
from serving.api.context import services
from serving.api.errors import ApiError, use_openai_errors
from serving.api.protocol.adapter import (
    AdapterChoice,
    LoadLoraAdapterBody,
    RegisterAdapterBody,
    UnloadLoraAdapterBody,
    adapter_json,
    adapter_spec,
    query_fields,
)
from serving.api.protocol.body import read_json
from serving.api.requestlog import current_record
from serving.api.wire import json_response
from serving.messages import AdapterResult, AdapterSpec, AdapterStatus

blueprint = Blueprint("adapters", __name__)

IDENTIFIER_HEADER = "X-Amzn-SageMaker-Adapter-Identifier"  # the adapter an /invocations call runs with
ALIAS_HEADER = "X-Amzn-SageMaker-Adapter-Alias"  # the adapter's display name in SageMaker's messages
PLAIN_TEXT = "text/plain; charset=utf-8"


def take_sagemaker_header() -> None:
    """Note `/invocations`' adapter header, which overrides the body's `model` or `adapter_id` (strictly)."""
    identifier = request.headers.get(IDENTIFIER_HEADER, "").strip()
    if identifier:
        g.sagemaker_adapter = identifier


def chosen(choice: AdapterChoice) -> AdapterChoice:
    """The adapter this request runs with: SageMaker's header when it came with one, else the body's `choice`;
    the access log names it."""
    header = g.get("sagemaker_adapter")
    if header is not None:
        choice = AdapterChoice(header)
    record = current_record()
    if record is not None:
        record.adapter = choice.name
    return choice


def _display_name(name: str) -> str:
    """SageMaker's alias of the adapter when the platform sent one, else its name."""
    return request.headers.get(ALIAS_HEADER, "").strip() or name


def _answer(result: AdapterResult, text: str) -> Response:
    """200 plain text, or the error of the call's status."""
    if result.status is not AdapterStatus.OK:
        raise ApiError(Error.of_adapter_status(result.status), result.message)
    return Response(text, 200, content_type=PLAIN_TEXT)


def _register(spec: AdapterSpec, text: str) -> Response:
    """Register `spec` with every replica and answer `text` when it worked."""
    return _answer(services().client.register_adapter(spec), text)


def _unregister(name: str, text: str) -> Response:
    """Unregister `name` from every replica and answer `text` when it worked."""
    return _answer(services().client.unregister_adapter(name), text)


def _json_object(limit: int) -> Any:
    """The request's JSON body (a 400 unless it is an object)."""
    data, _ = read_json(request, limit)
    if not isinstance(data, dict):
        raise ApiError(Error.ADAPTER_BAD_REQUEST, "Invalid adapter request: the body must be a JSON object")
    return data


@blueprint.post("/adapters")
def register() -> Response:
    """SageMaker's registration: `{"name", "src", "preload", "pin"}` as JSON, or as query parameters with any
    other body."""
    context = services()
    data = _json_object(context.config.payload_limit) if request.is_json else query_fields(request.args)
    body = RegisterAdapterBody.of(data)
    spec = body.spec(context.info().model_id)
    return _register(spec, f"Adapter {_display_name(spec.name)} registered")


@blueprint.delete("/adapters/<path:name>")
def unregister(name: str) -> Response:
    """SageMaker's unregistration; requests in flight on the adapter finish first."""
    return _unregister(name, f"Adapter {_display_name(name)} unregistered")


@blueprint.get("/adapters")
def listing() -> Response:
    """The registered adapters, now."""
    return json_response([adapter_json(adapter) for adapter in services().info(refresh=True).adapters])


@blueprint.post("/v1/load_lora_adapter")
def load_lora_adapter() -> Response:
    """vLLM's registration: `{"lora_name", "lora_path"}`."""
    use_openai_errors()
    context = services()
    body = LoadLoraAdapterBody.of(_json_object(context.config.payload_limit))
    spec = adapter_spec(body.lora_name, body.lora_path, context.info().model_id)
    return _register(spec, f"Success: LoRA adapter '{spec.name}' added successfully.")


@blueprint.post("/v1/unload_lora_adapter")
def unload_lora_adapter() -> Response:
    """vLLM's unregistration: `{"lora_name"}`."""
    use_openai_errors()
    body = UnloadLoraAdapterBody.of(_json_object(services().config.payload_limit))
    return _unregister(body.lora_name, f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
