"""`POST /vertex`, TGI's Google Vertex AI route: `{"instances": [...]}` in, `{"predictions": [text, ...]}` out.

Each instance is a generate instance (`inputs`, with only `max_new_tokens` and `seed` taken from `parameters`,
always sampling) or a chat request; all run side by side. As in TGI, no instances is a 422 and a failure during
generation is a 500 `Incomplete generation`; an instance's own mistake (a parameter out of range, a prompt too
long, a tool or template error) keeps its own 4xx answer, since bad input is never a 5xx.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request
from pydantic import BaseModel

from serving import messages
from serving.api.catalogue import Error
from serving.api.context import count_request, new_id, services
from serving.api.errors import ApiError, BodyError
from serving.api.feed import EventFeed
from serving.api.protocol.body import DESERIALIZE_PREFIX, deserialize, read_json
from serving.api.protocol.chat import ChatCompletionRequest
from serving.api.protocol.generate import STRICT, GenerateParameters, GenerateRequest
from serving.api.protocol.validation import Limits
from serving.api.wire import json_response

blueprint = Blueprint("vertex", __name__)


class GenerateInstance(BaseModel):
    """A generate instance: `inputs` and optional `parameters`."""

    model_config = STRICT

    inputs: str
    parameters: GenerateParameters | None = None

    def generate_request(self) -> GenerateRequest:
        """TGI's request for this instance: sampling, with only `max_new_tokens` and `seed` kept."""
        given = self.parameters or GenerateParameters()
        return GenerateRequest(inputs=self.inputs, parameters=GenerateParameters(
            do_sample=True, max_new_tokens=given.max_new_tokens, seed=given.seed))


class VertexRequest(BaseModel):
    """The body: a list of instances, each parsed on its own (TGI's untagged `VertexInstance`)."""

    model_config = STRICT

    instances: list[Any]


def _instance(data: Any, index: int) -> GenerateInstance | ChatCompletionRequest:
    """The first variant that `data` deserializes into, or TGI's untagged-enum error."""
    for model in (GenerateInstance, ChatCompletionRequest):
        try:
            return deserialize(model, data)
        except BodyError:
            continue
    raise BodyError(Error.WRONG_SHAPE, f"{DESERIALIZE_PREFIX}instances[{index}]: data did not match any variant of "
                                       "untagged enum VertexInstance")


def _engine_request(instance: GenerateInstance | ChatCompletionRequest, request_id: str,
                    limits: Limits) -> messages.GenerateRequest:
    """One engine request for an instance (a chat's first choice); a validation failure is its own 422."""
    if isinstance(instance, ChatCompletionRequest):
        return instance.to_engine_requests(request_id, limits)[0]
    return instance.generate_request().to_engine_requests(request_id, limits, streaming=False)[0]


def _incomplete() -> ApiError:
    """TGI's answer when any instance fails."""
    return ApiError(Error.VERTEX_INCOMPLETE, "Incomplete generation")


@blueprint.post("/vertex")
def vertex() -> Response:
    """Generate every instance and answer their texts in order."""
    context = services()
    data, _ = read_json(request, context.config.payload_limit)
    body = deserialize(VertexRequest, data)
    instances = [_instance(item, index) for index, item in enumerate(body.instances)]
    count_request()
    if not instances:
        raise ApiError(Error.VERTEX_VALIDATION, "Input validation error")
    limits = Limits.of(context.config, context.info())
    for instance in instances:
        if isinstance(instance, ChatCompletionRequest):
            instance.tool_plan(limits)  # a tool error keeps its own answer
    request_id = new_id()
    requests = [_engine_request(instance, f"{request_id}-{index}", limits)
                for index, instance in enumerate(instances)]
    context.metrics.request(len(requests))  # TGI counts each instance's generation too
    try:
        generations = EventFeed(context.client, requests).collect()
    except ApiError as error:
        if error.kind.users_mistake:  # a prompt too long, a template error: never a 5xx
            raise
        raise _incomplete() from None
    return json_response({"predictions": [generation.finished.generated_text for generation in generations]})
