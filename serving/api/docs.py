"""`GET /api-doc/openapi.json`, an OpenAPI 3 document of every route, and `GET /docs`, a Swagger UI page for it.

Request schemas are generated from the pydantic request models that parse the bodies, response schemas from the
typed dicts of `protocol.responses`, so the document describes what the server really accepts and answers.
The Swagger UI page loads its script and styles from a CDN (unpkg): the server vendors no assets, so the page
needs a browser with internet access; the JSON document needs nothing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from flask import Blueprint, Response
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from serving.api.protocol import responses
from serving.api.protocol.chat import ChatCompletionRequest
from serving.api.protocol.completion import CompletionRequest
from serving.api.protocol.generate import CompatGenerateRequest, GenerateRequest
from serving.api.version import VERSION
from serving.api.vertex import GenerateInstance
from serving.api.wire import json_response

blueprint = Blueprint("docs", __name__)

REF = "#/components/schemas/{model}"
REQUESTS: tuple[type[BaseModel], ...] = (GenerateRequest, CompatGenerateRequest, ChatCompletionRequest,
                                         CompletionRequest, GenerateInstance)
RESPONSES = (
    responses.GenerateResponse, responses.StreamResponse, responses.ErrorResponse, responses.OpenAIErrorResponse,
    responses.Info, responses.SimpleToken, responses.ChatTokenizeResponse,
    responses.ModelList, responses.Model, responses.ChatCompletion, responses.ChatCompletionChunk, responses.Completion,
    responses.VertexResponse,
)
TGI_TAG = "Text Generation Inference"
OPENAI_TAG = "OpenAI"
SAGEMAKER_TAG = "SageMaker"
SWAGGER_UI = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Text Generation Inference API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
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


def _errors(error: str, statuses: tuple[int, ...] = (422, 424, 429, 500)) -> dict[str, Any]:
    """The error answers of a generation route, with the route's error body."""
    descriptions = {400: "Bad JSON", 401: "Missing or wrong API key (when API_KEY is set)",
                    413: "Body over PAYLOAD_LIMIT", 415: "Not a JSON Content-Type", 422: "Input validation error",
                    424: "Generation error", 429: "Model is overloaded", 500: "Incomplete generation",
                    503: "Engine unavailable"}
    answers: dict[str, Any] = {str(status): {"description": descriptions[status],
                                             "content": _content("application/json", _ref(error))}
                               for status in statuses}
    for status in (400, 401, 413, 415):
        answers[str(status)] = {"description": descriptions[status]}
    return dict(sorted(answers.items()))


def _generation(tag: str, summary: str, request: str, answer: dict[str, Any], error: str) -> dict[str, Any]:
    """A protected POST operation taking a JSON body."""
    return {"post": {
        "tags": [tag], "summary": summary,
        "requestBody": {"required": True, "content": _content("application/json", request)},
        "responses": {"200": answer, **_errors(error)},
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


def _paths() -> dict[str, Any]:
    """Every route of the server."""
    health = {"200": {"description": "Healthy (empty body)"},
              "503": {"description": "Unhealthy", "content": _content("application/json", _ref("ErrorResponse"))}}
    generate = _ref("GenerateRequest")
    chat = _ref("ChatCompletionRequest")
    paths = {
        "/": {
            **_generation(TGI_TAG, "Generate (TGI's compat route: a list, or a stream with `stream: true`)",
                          _ref("CompatGenerateRequest"),
                          _json_or_stream("Generated text", {"type": "array", "items": _ref("GenerateResponse")},
                                          _ref("StreamResponse")), "ErrorResponse"),
            **_get(TGI_TAG, "Health (same as /health)", health),
        },
        "/generate": _generation(TGI_TAG, "Generate text", generate,
                                 _json_answer("Generated text", _ref("GenerateResponse")), "ErrorResponse"),
        "/generate_stream": _generation(TGI_TAG, "Generate a stream of tokens (Server-Sent Events)", generate, {
            "description": "One event per token; an error after the stream opened is an event too",
            "content": _content("text/event-stream", _ref("StreamResponse"))}, "ErrorResponse"),
        "/v1/chat/completions": _generation(OPENAI_TAG, "Chat completion (OpenAI's Messages API)", chat,
                                            _json_or_stream("Chat completion", _ref("ChatCompletion"),
                                                            _ref("ChatCompletionChunk")), "OpenAIErrorResponse"),
        "/v1/completions": _generation(OPENAI_TAG, "Completion (OpenAI's legacy API)", _ref("CompletionRequest"),
                                       _json_or_stream("Completion", _ref("Completion"), _ref("Completion")),
                                       "OpenAIErrorResponse"),
        "/invocations": _generation(
            SAGEMAKER_TAG, "SageMaker: generate (`inputs`), chat (`messages`) or complete (`prompt`)",
            {"oneOf": [_ref("CompatGenerateRequest"), chat, _ref("CompletionRequest")]},
            {"description": "The answer of the route the body's shape selects",
             "content": {"application/json": {}, "text/event-stream": {}}}, "ErrorResponse"),
        "/vertex": _generation(
            TGI_TAG, "Google Vertex AI: generate every instance",
            {"type": "object", "required": ["instances"], "properties": {"instances": {
                "type": "array", "items": {"oneOf": [_ref("GenerateInstance"), chat]}}}},
            _json_answer("Generated texts", _ref("VertexResponse")), "ErrorResponse"),
        "/tokenize": _generation(TGI_TAG, "Tokenize the inputs", generate,
                                 _json_answer("Tokens", {"type": "array", "items": _ref("SimpleToken")}),
                                 "ErrorResponse"),
        "/chat_tokenize": {"post": {
            "tags": [TGI_TAG], "summary": "Render a chat with the template and tokenize it",
            "requestBody": {"required": True, "content": _content("application/json", chat)},
            "responses": {"200": _json_answer("Templated text and tokens", _ref("ChatTokenizeResponse")),
                          **_errors("ErrorResponse", (422,))}}},
        "/health": _get(TGI_TAG, "Health", health),
        "/ping": _get(SAGEMAKER_TAG, "SageMaker health (same as /health)", health),
        "/info": _get(TGI_TAG, "Model and server info", {"200": _json_answer("Info", _ref("Info"))}),
        "/metrics": _get(TGI_TAG, "Prometheus metrics", {"200": {
            "description": "Prometheus text exposition", "content": _content("text/plain", {"type": "string"})}}),
        "/v1/models": _get(OPENAI_TAG, "The served model", {"200": _json_answer("Models", _ref("ModelList"))}),
        "/v1/models/{model_id}": {"get": {
            "tags": [OPENAI_TAG], "summary": "The served model, by its id",
            "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json_answer("Model", _ref("Model")),
                          "404": {"description": "Not the served model's id",
                                  "content": _content("application/json", _ref("OpenAIErrorResponse"))}}}},
        "/docs": _get(TGI_TAG, "This document in Swagger UI", {"200": {
            "description": "HTML page", "content": _content("text/html", {"type": "string"})}}),
        "/api-doc/openapi.json": _get(TGI_TAG, "This document", {"200": {
            "description": "OpenAPI 3 document", "content": _content("application/json", {"type": "object"})}}),
    }
    return paths


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the server's routes."""
    _, request_schemas = models_json_schema([(model, "validation") for model in REQUESTS], ref_template=REF)
    schemas = dict(request_schemas["$defs"])
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
        "paths": _paths(),
        "components": {"schemas": dict(sorted(schemas.items())),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "Needed only when the server has an API_KEY"}}},
        "tags": [{"name": TGI_TAG}, {"name": OPENAI_TAG}, {"name": SAGEMAKER_TAG}],
    }


@blueprint.get("/api-doc/openapi.json")
def openapi() -> Response:
    """The OpenAPI document."""
    return json_response(openapi_document())


@blueprint.get("/docs")
@blueprint.get("/docs/")
def swagger_ui() -> Response:
    """Swagger UI for the OpenAPI document."""
    return Response(SWAGGER_UI, 200, content_type="text/html; charset=utf-8")
