"""`GET /api-doc/openapi.json`, an OpenAPI 3 document of every route, and `GET /docs`, a Swagger UI page for it.

Request schemas are generated from the pydantic request models that parse the bodies, response schemas from the
typed dicts of `protocol.responses`, so the document describes what the server really accepts and answers.
The request schemas of the generation routes carry the checks those routes make beyond the shape, with this
server's limits (`serving.api.constraints`). The Swagger UI page loads its script and styles from this server
(the assets of the `flask-swagger-ui` package), so it works with no internet access.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import flask_swagger_ui
from flask import Blueprint, Response, send_from_directory
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from serving.api.constraints import CONTEXT_NOTE, Served, check_schemas
from serving.api.context import services
from serving.api.protocol import responses
from serving.api.protocol.adapter import LoadLoraAdapterBody, RegisterAdapterBody, UnloadLoraAdapterBody
from serving.api.protocol.chat import ChatCompletionRequest
from serving.api.protocol.completion import CompletionRequest
from serving.api.protocol.generate import CompatGenerateRequest, GenerateRequest
from serving.api.protocol.validation import Limits
from serving.api.version import VERSION
from serving.api.vertex import GenerateInstance
from serving.api.wire import json_response

blueprint = Blueprint("docs", __name__)

REF = "#/components/schemas/{model}"
REQUESTS: tuple[type[BaseModel], ...] = (GenerateRequest, CompatGenerateRequest, ChatCompletionRequest,
                                         CompletionRequest, GenerateInstance, RegisterAdapterBody,
                                         LoadLoraAdapterBody, UnloadLoraAdapterBody)
RESPONSES = (
    responses.GenerateResponse, responses.StreamResponse, responses.ErrorResponse, responses.OpenAIErrorResponse,
    responses.Info, responses.Adapter, responses.SimpleToken, responses.ChatTokenizeResponse,
    responses.ModelList, responses.Model, responses.ChatCompletion, responses.ChatCompletionChunk, responses.Completion,
    responses.VertexResponse,
)
TGI_TAG = "Text Generation Inference"
OPENAI_TAG = "OpenAI"
SAGEMAKER_TAG = "SageMaker"
SWAGGER_UI_ASSETS = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
SWAGGER_UI = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Text Generation Inference API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/api-doc/openapi.json", dom_id: "#swagger-ui"});</script>
</body>
</html>
"""


def _ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": REF.format(model=name)}


def _content(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI `content` map with one media type."""
    return {media_type: {"schema": schema}}


PLAIN = _content("text/plain", {"type": "string"})
DESCRIPTIONS = {400: "Bad JSON (TGI's routes: plain text); on the OpenAI routes also a wrong shape or a bad value",
                401: "Missing or wrong API key (when API_KEY is set)",
                404: "Unknown model: with LoRA adapters registered, a `model` that names neither the base model nor "
                     "an adapter (or, on /invocations, an unknown adapter header)",
                413: "Body over PAYLOAD_LIMIT", 415: "Not a JSON Content-Type",
                422: "A wrong shape (plain text) or a bad value (JSON)", 424: "Generation error",
                429: "Model is overloaded", 500: "Incomplete generation", 503: "Engine unavailable"}
ADAPTER_DESCRIPTIONS = {400: "A missing or malformed field, a name of the base model, or a name registered to "
                             "another source", 404: "No such source directory or hub id, or no such adapter",
                        424: "The adapter cannot serve this model (format, shapes, target modules, rank over "
                             "MAX_LORA_RANK)",
                        507: "No room: every resident adapter slot (MAX_LORA_ADAPTERS) is pinned or in use",
                        503: "Engine unavailable (no replica registered the adapter)"}
ADAPTER_NOTE = ("Reaches every engine replica (all or none) and may download and load weights: it can take long. "
                "Needs the API key when API_KEY is set.")


def _errors(error: str, statuses: tuple[int, ...] = (422, 424, 429, 500, 503)) -> dict[str, Any]:
    """The error answers of a route: JSON in the route family's error body, and the framework's own answers
    (plain text on TGI's routes, the OpenAI JSON body on the OpenAI routes)."""
    json_error = _content("application/json", _ref(error))
    openai = error == "OpenAIErrorResponse"
    framework = json_error if openai else PLAIN
    answers: dict[str, Any] = {str(status): {"description": DESCRIPTIONS[status], "content": json_error}
                               for status in statuses}
    for status in (400, 413, 415):
        answers[str(status)] = {"description": DESCRIPTIONS[status], "content": framework}
    if "422" in answers and not openai:
        answers["422"]["content"] = {**json_error, **PLAIN}
    answers["401"] = {"description": DESCRIPTIONS[401]}
    return dict(sorted(answers.items()))


def _generation(tag: str, summary: str, request: dict[str, Any], answer: dict[str, Any], error: str,
                statuses: tuple[int, ...] = (422, 424, 429, 500, 503)) -> dict[str, Any]:
    """A protected POST operation taking a JSON body, which the route checks beyond its shape."""
    return {"post": {
        "tags": [tag], "summary": summary, "description": CONTEXT_NOTE,
        "requestBody": {"required": True, "content": _content("application/json", request)},
        "responses": {"200": answer, **_errors(error, statuses)},
        "security": [{}, {"bearer": []}],
    }}


def _json_or_stream(description: str, body: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """A 200 answer that is JSON, or SSE events when the body asks to stream."""
    return {"description": description,
            "content": {**_content("application/json", body), **_content("text/event-stream", event)}}


def _get(tag: str, summary: str, answers: dict[str, Any]) -> dict[str, Any]:
    """An open GET operation."""
    return {"get": {"tags": [tag], "summary": summary, "responses": answers}}


def _json_answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON 200 answer."""
    return {"description": description, "content": _content("application/json", schema)}


def _events(*schemas: str, done: bool = False) -> dict[str, Any]:
    """The schema of one SSE event (as OpenAPI 3.1 describes one: `data`, `event`, `id`, `retry`) whose `data` is
    the JSON of any of `schemas`, or `[DONE]` at the end of an OpenAI stream."""
    payload: dict[str, Any] = {"type": "string", "contentMediaType": "application/json",
                               "contentSchema": {"oneOf": [_ref(name) for name in schemas]}}
    data = {"anyOf": [{"const": "[DONE]"}, payload]} if done else payload
    return {"type": "object", "required": ["data"], "properties": {"data": data}}


def _adapter_call(summary: str, statuses: tuple[int, ...], error: str, text: str,
                  body: dict[str, Any] | None = None, parameters: list[dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """A protected operation on LoRA adapters: plain text `text` on success, `error`'s JSON body otherwise."""
    json_error = _content("application/json", _ref(error))
    answers: dict[str, Any] = {"200": {"description": text, "content": PLAIN},
                               "401": {"description": DESCRIPTIONS[401]},
                               **{str(status): {"description": ADAPTER_DESCRIPTIONS[status], "content": json_error}
                                  for status in statuses}}
    if body is not None:  # the framework's answers about the body (plain text on SageMaker's routes)
        framework = PLAIN if error == "ErrorResponse" else json_error
        answers["400"] = {"description": f"{ADAPTER_DESCRIPTIONS[400]}; or bad JSON", "content": {
            **json_error, **framework}}
        for status in (413,) if error == "ErrorResponse" else (413, 415):  # /adapters takes any other body too
            answers[str(status)] = {"description": DESCRIPTIONS[status], "content": framework}
    operation: dict[str, Any] = {
        "tags": [SAGEMAKER_TAG if error == "ErrorResponse" else OPENAI_TAG], "summary": summary,
        "description": ADAPTER_NOTE, "responses": dict(sorted(answers.items())), "security": [{}, {"bearer": []}]}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    if parameters is not None:
        operation["parameters"] = parameters
    return operation


def _adapter_paths() -> dict[str, Any]:
    """SageMaker's and vLLM's routes that register, unregister and list LoRA adapters."""
    query = [{"name": name, "in": "query", "required": False, "schema": schema,
              "description": "With a body that is not JSON, the field of the same name"}
             for name, schema in (("name", {"type": "string"}), ("src", {"type": "string"}),
                                  ("preload", {"type": "boolean"}), ("pin", {"type": "boolean"}))]
    alias = {"name": "X-Amzn-SageMaker-Adapter-Alias", "in": "header", "required": False,
             "schema": {"type": "string"}, "description": "The adapter's name in the answer's text"}
    return {
        "/adapters": {
            "post": _adapter_call("SageMaker: register a LoRA adapter (`src`: a local PEFT directory or a hub id)",
                                  (400, 404, 424, 503, 507), "ErrorResponse", "`Adapter {name} registered`",
                                  _content("application/json", _ref("RegisterAdapterBody")), [*query, alias]),
            "get": {"tags": [SAGEMAKER_TAG], "summary": "The registered LoRA adapters",
                    "responses": {"200": _json_answer("Adapters", {"type": "array", "items": _ref("Adapter")}),
                                  "401": {"description": DESCRIPTIONS[401]}},
                    "security": [{}, {"bearer": []}]},
        },
        "/adapters/{name}": {"delete": _adapter_call(
            "SageMaker: unregister a LoRA adapter (requests in flight on it finish first)", (404, 503),
            "ErrorResponse", "`Adapter {name} unregistered`",
            parameters=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}, alias])},
        "/v1/load_lora_adapter": {"post": _adapter_call(
            "vLLM: register a LoRA adapter", (400, 404, 424, 503, 507), "OpenAIErrorResponse",
            "`Success: LoRA adapter '{name}' added successfully.`",
            _content("application/json", _ref("LoadLoraAdapterBody")))},
        "/v1/unload_lora_adapter": {"post": _adapter_call(
            "vLLM: unregister a LoRA adapter", (400, 404, 503), "OpenAIErrorResponse",
            "`Success: LoRA adapter '{name}' removed successfully.`",
            _content("application/json", _ref("UnloadLoraAdapterBody")))},
    }


def _paths(model_id: str) -> dict[str, Any]:
    """Every route of the server (`model_id`: the served model's, the example of `/v1/models/{model_id}`)."""
    health = {"200": {"description": "Healthy (empty body)"},
              "503": {"description": "Unhealthy", "content": _content("application/json", _ref("ErrorResponse"))}}
    chat = _ref("ChatCompletionRequest")
    openai_error = "OpenAIErrorResponse"
    openai_statuses = (404, 424, 429, 500, 503)
    tgi_event = _events("StreamResponse", "ErrorResponse")
    paths = {
        "/": {
            **_generation(TGI_TAG, "Generate (TGI's compat route: a list, or a stream with `stream: true`)",
                          _ref("CompatGenerateRequest"),
                          _json_or_stream("Generated text", {"type": "array", "items": _ref("GenerateResponse")},
                                          tgi_event), "ErrorResponse"),
            **_get(TGI_TAG, "Health (same as /health)", health),
        },
        "/generate": _generation(TGI_TAG, "Generate text", _ref("GenerateRequest"),
                                 _json_answer("Generated text", _ref("GenerateResponse")), "ErrorResponse"),
        "/generate_stream": _generation(TGI_TAG, "Generate a stream of tokens (Server-Sent Events)",
                                        _ref("GenerateStreamRequest"), {
            "description": "One event per token; a validation error, or an error after the stream opened, is an "
                           "error event (and the stream ends)",
            "content": _content("text/event-stream", tgi_event)}, "ErrorResponse"),
        "/v1/chat/completions": _generation(
            OPENAI_TAG, "Chat completion (OpenAI's Chat Completions API)", chat,
            _json_or_stream("Chat completion; streamed, an error after the stream opened is an error event, then "
                            "`[DONE]`", _ref("ChatCompletion"), _events("ChatCompletionChunk", openai_error, done=True)),
            openai_error, openai_statuses),
        "/v1/completions": _generation(
            OPENAI_TAG, "Completion (OpenAI's legacy Completions API)", _ref("CompletionRequest"),
            _json_or_stream("Completion; streamed, an error after the stream opened is an error event, then `[DONE]`",
                            _ref("Completion"), _events("Completion", openai_error, done=True)),
            openai_error, openai_statuses),
        "/invocations": _generation(
            SAGEMAKER_TAG, "SageMaker: generate (`inputs`, TGI's answers), chat (`messages`) or complete (`prompt`, "
                           "both OpenAI's answers)",
            {"anyOf": [_ref("CompatGenerateRequest"), chat, _ref("CompletionRequest")]},
            {"description": "The answer of the route the body's shape selects", "content": {
                "application/json": {"schema": {"anyOf": [
                    {"type": "array", "items": _ref("GenerateResponse")}, _ref("ChatCompletion"),
                    _ref("Completion")]}},
                "text/event-stream": {"schema": _events("StreamResponse", "ErrorResponse", "ChatCompletionChunk",
                                                        "Completion", openai_error, done=True)}}},
            "ErrorResponse", (404, 422, 424, 429, 500, 503)),
        **_adapter_paths(),
        "/vertex": _generation(
            TGI_TAG, "Google Vertex AI: generate every instance",
            {"type": "object", "required": ["instances"], "properties": {"instances": {
                "type": "array", "minItems": 1, "items": {"anyOf": [_ref("GenerateInstance"), chat]}}}},
            _json_answer("Generated texts", _ref("VertexResponse")), "ErrorResponse"),
        "/tokenize": {"post": {
            "tags": [TGI_TAG], "summary": "Tokenize the inputs (the parameters are read, not used)",
            "requestBody": {"required": True, "content": _content("application/json", _ref("TokenizeRequest"))},
            "responses": {"200": _json_answer("Tokens", {"type": "array", "items": _ref("SimpleToken")}),
                          **_errors("ErrorResponse", (422, 503))},
            "security": [{}, {"bearer": []}]}},
        "/chat_tokenize": {"post": {
            "tags": [TGI_TAG], "summary": "Render a chat with the template and tokenize it",
            "requestBody": {"required": True, "content": _content("application/json", _ref("ChatTokenizeRequest"))},
            "responses": {"200": _json_answer("Templated text and tokens", _ref("ChatTokenizeResponse")),
                          **_errors("ErrorResponse", (422, 503))},
            "security": [{}, {"bearer": []}]}},
        "/health": _get(TGI_TAG, "Health", health),
        "/ping": _get(SAGEMAKER_TAG, "SageMaker health (same as /health)", health),
        "/info": _get(TGI_TAG, "Model and server info", {"200": _json_answer("Info", _ref("Info"))}),
        "/metrics": _get(TGI_TAG, "Prometheus metrics", {"200": {
            "description": "Prometheus text exposition", "content": _content("text/plain", {"type": "string"})}}),
        "/v1/models": _get(OPENAI_TAG, "The served model and its LoRA adapters",
                           {"200": _json_answer("Models", _ref("ModelList"))}),
        "/v1/models/{model_id}": {"get": {
            "tags": [OPENAI_TAG], "summary": "The served model or a LoRA adapter, by its id",
            "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"},
                            "example": model_id}],
            "responses": {"200": _json_answer("Model", _ref("Model")),
                          "404": {"description": "Neither the served model's id nor an adapter's (OpenAI's error "
                                                 "body, `code: model_not_found`), or no such path (empty body)"}}}},
        "/docs": _get(TGI_TAG, "This document in Swagger UI (served with its assets: no internet needed)", {
            "200": {"description": "HTML page", "content": _content("text/html", {"type": "string"})}}),
        "/docs/{asset}": {"get": {
            "tags": [TGI_TAG], "summary": "Swagger UI's scripts and styles, from the `flask-swagger-ui` package",
            "parameters": [{"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The asset"}, "404": {"description": "No such asset"}}}},
        "/api-doc/openapi.json": _get(TGI_TAG, "This document", {"200": {
            "description": "OpenAPI 3 document", "content": _content("application/json", {"type": "object"})}}),
    }
    either = {"anyOf": [_ref("ErrorResponse"), _ref(openai_error)]}  # /invocations answers as the route it picks
    for status, answer in paths["/invocations"]["post"]["responses"].items():
        if status not in ("200", "401"):
            answer["content"] = {**_content("application/json", either), **PLAIN}
    return paths


@lru_cache(maxsize=4)
def openapi_document(limits: Limits, vocab_size: int, served: Served) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the server's routes, with this server's limits and the adapters registered now
    in the checked schemas."""
    _, request_schemas = models_json_schema([(model, "validation") for model in REQUESTS], ref_template=REF)
    schemas = dict(request_schemas["$defs"])
    check_schemas(schemas, limits, vocab_size, served)
    for shape in RESPONSES:
        schema = TypeAdapter(shape).json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[shape.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "Text Generation Inference", "version": VERSION,
                 "description": "TGI's API, OpenAI's Chat Completions and Completions, and SageMaker's "
                                "invocations, served by `serving`.",
                 "license": {"name": "Apache 2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}},
        "paths": _paths(served.model_id),
        "components": {"schemas": dict(sorted(schemas.items())),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "Needed only when the server has an API_KEY"}}},
        "tags": [{"name": TGI_TAG}, {"name": OPENAI_TAG}, {"name": SAGEMAKER_TAG}],
    }


@blueprint.get("/api-doc/openapi.json")
def openapi() -> Response:
    """The OpenAPI document."""
    context = services()
    info = context.info(refresh=True)
    served = Served(info.model_id, tuple(adapter.name for adapter in info.adapters))
    return json_response(openapi_document(Limits.of(context.config, info), info.vocab_size, served))


@blueprint.get("/docs")
@blueprint.get("/docs/")
def swagger_ui() -> Response:
    """Swagger UI for the OpenAPI document."""
    return Response(SWAGGER_UI, 200, content_type="text/html; charset=utf-8")


@blueprint.get("/docs/<path:asset>")
def swagger_ui_asset(asset: str) -> Response:
    """One of Swagger UI's files, as the `flask-swagger-ui` package ships them."""
    return send_from_directory(SWAGGER_UI_ASSETS, asset)
