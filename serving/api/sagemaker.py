"""SageMaker's contract: `GET /ping` and `POST /invocations`, which dispatches on the body's shape like TGI."""

from __future__ import annotations

from typing import Any, Callable

from flask import Blueprint, Response, request
from pydantic import BaseModel

from serving.api import openai, tgi
from serving.api.adapters import take_sagemaker_header
from serving.api.catalogue import Error
from serving.api.context import services
from serving.api.errors import BodyError, use_openai_errors
from serving.api.protocol.body import DESERIALIZE_PREFIX, deserialize, read_json
from serving.api.protocol.chat import ChatCompletionRequest
from serving.api.protocol.completion import CompletionRequest
from serving.api.protocol.generate import CompatGenerateRequest

blueprint = Blueprint("sagemaker", __name__)

# TGI's untagged `SagemakerRequest`: the first shape the body deserializes into wins.
VARIANTS: list[tuple[type[BaseModel], Callable[[Any], Response]]] = [
    (CompatGenerateRequest, tgi.compat_generate),
    (ChatCompletionRequest, openai.chat),
    (CompletionRequest, openai.completions),
]


def _end_position(text: str) -> str:
    """serde_json's `line L column C` at the end of the body's JSON value."""
    lines = text.rstrip().split("\n")
    return f"line {len(lines)} column {len(lines[-1].encode('utf-8'))}"


@blueprint.get("/ping")
def ping() -> Response:
    """SageMaker's health check, the same as `/health`."""
    return tgi.health()


@blueprint.post("/invocations")
def invocations() -> Response:
    """Generate (`inputs`), chat (`messages`) or complete (`prompt`), streaming when `stream` is true.

    A body that fits no variant but is plainly a chat or a completion (`messages` or `prompt`, no `inputs`) gets
    that route's own error, in OpenAI's shape; anything else TGI's untagged-enum error. SageMaker's adapter header
    (an adapter inference component) chooses the LoRA adapter, over the body's `model` or `adapter_id`."""
    take_sagemaker_header()
    data, text = read_json(request, services().config.payload_limit)
    for model, handle in VARIANTS:
        try:
            body = deserialize(model, data)
        except BodyError:
            continue
        return handle(body)
    if isinstance(data, dict) and "inputs" not in data:
        for key, model in (("messages", ChatCompletionRequest), ("prompt", CompletionRequest)):
            if key in data:
                use_openai_errors()
                deserialize(model, data)
    raise BodyError(Error.WRONG_SHAPE, f"{DESERIALIZE_PREFIX}data did not match any variant of untagged enum "
                                       f"SagemakerRequest at {_end_position(text)}")
