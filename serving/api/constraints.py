"""The checks the generation routes make beyond the body's shape, written into the OpenAPI schemas.

pydantic's schemas say what a body must look like to be read; the routes then check ranges and limits with TGI's
own messages (`protocol.validation`), and those checks belong in the document too, with this server's limits.
The shape-only schemas stay for the routes that only read a body (`/tokenize`, `/chat_tokenize`); each generation
route gets a checked copy. Only what depends on the tokenizer (a prompt's length in tokens against the context)
cannot be written as a schema: the operations say so. schemathesis, run against the live server in the tests,
holds this module and the routes to each other.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from serving.api.protocol.adapter import base_model_names
from serving.api.protocol.validation import Limits

SchemaMap = dict[str, Any]
REF = "#/components/schemas/{name}"
NULL = {"type": "null"}
CONTEXT_NOTE = ("A prompt longer than the model's context (`max_input_tokens` tokens, or `max_total_tokens` with the "
                "tokens to generate) is refused too: the only check that needs the tokenizer.")


GRAMMAR_NOTE = ("The schema or regular expression must compile (any valid JSON Schema; objects listing `properties` "
                "are closed), else 422 `grammar is not valid: <the compiler's message>`.")
TGI_GRAMMAR = {"type": "object", "required": ["type", "value"], "description": GRAMMAR_NOTE, "properties": {
    "type": {"enum": ["json", "json_object", "json_schema", "regex"]},
    "value": {"anyOf": [{"type": "object"}, {"type": "string"}],
              "description": "json/json_object: a JSON Schema or its JSON text; json_schema: {name, schema}; regex"},
}}
RESPONSE_FORMAT = {"anyOf": [
    {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["text", "json_object"]}}},
    {"type": "object", "required": ["type", "json_schema"], "properties": {
        "type": {"const": "json_schema"},
        "json_schema": {"type": "object", "properties": {"name": {"type": "string"}, "schema": {"type": "object"},
                                                         "strict": {"type": ["boolean", "null"]}}}}},
    TGI_GRAMMAR,
], "description": "OpenAI's response_format, or TGI's grammar shape. " + GRAMMAR_NOTE}
TOOL_CHOICE = {"anyOf": [
    {"enum": ["none", "auto", "required"]},
    {"type": "object", "required": ["type", "function"], "properties": {
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}},
    {"type": "string", "description": "a function's name (TGI's form)"},
    NULL,
]}


def _ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": REF.format(name=name)}


def _narrow(schema: SchemaMap, **rules: Any) -> None:
    """Add `rules` to a property's schema, to its non-null branches when it is nullable."""
    branches = [branch for branch in schema.get("anyOf", [schema]) if branch != NULL]
    for branch in branches:
        branch.update(rules)


@dataclass(frozen=True)
class Served:
    """What a request may name: the served model's id and the LoRA adapters registered now."""

    model_id: str
    adapters: tuple[str, ...]

    def adapter_id(self) -> SchemaMap:
        """TGI's `adapter_id`: a registered adapter, or none (null or empty) for the base model."""
        return {"anyOf": [{"enum": ["", *self.adapters]}, NULL],
                "description": "A registered LoRA adapter (GET /adapters); null or empty: the base model"}

    def narrow_model(self, fields: SchemaMap) -> None:
        """OpenAI's `model`: anything while no adapter is registered, else the base model's names or an adapter."""
        if self.adapters:
            names = ["", *sorted(base_model_names(self.model_id)), *self.adapters]
            fields["model"] = {"anyOf": [{"enum": names}, NULL],
                               "description": "The base model (null, empty, `tgi`, its id) or a registered LoRA adapter"}


def _checked_parameters(shape: SchemaMap, limits: Limits, streaming: bool, served: Served) -> SchemaMap:
    """TGI's `parameters` with `Knobs.check`'s rules (and a stream's: one sequence, no prompt details)."""
    schema = copy.deepcopy(shape)
    fields = schema["properties"]
    fields["adapter_id"] = served.adapter_id()
    _narrow(fields["best_of"], minimum=0, maximum=1 if streaming else limits.max_best_of)
    _narrow(fields["temperature"], exclusiveMinimum=0)
    _narrow(fields["repetition_penalty"], exclusiveMinimum=0)
    _narrow(fields["frequency_penalty"], minimum=-2, maximum=2)
    _narrow(fields["top_k"], minimum=1)
    _narrow(fields["top_p"], exclusiveMinimum=0, maximum=1)
    _narrow(fields["typical_p"], exclusiveMinimum=0, exclusiveMaximum=1)
    _narrow(fields["max_new_tokens"], minimum=1)
    _narrow(fields["stop"], maxItems=limits.max_stop_sequences)
    _narrow(fields["truncate"], minimum=1, maximum=limits.max_input_tokens)
    _narrow(fields["top_n_tokens"], maximum=limits.max_top_n_tokens)
    fields["grammar"] = {"anyOf": [TGI_GRAMMAR, NULL]}
    if streaming:
        fields["decoder_input_details"] = {"const": False, "default": False}
    elif limits.max_best_of > 1:
        sampling = [{"required": ["do_sample"], "properties": {"do_sample": {"const": True}}}] + [
            {"required": [name], "properties": {name: {"not": NULL}}}
            for name in ("temperature", "top_k", "top_p", "typical_p")]
        schema["if"] = {"required": ["best_of"], "properties": {"best_of": {"type": "integer", "minimum": 2}}}
        schema["then"] = {"anyOf": sampling, "properties": {"seed": NULL}}
    return schema


def _checked_generate(shape: SchemaMap, parameters: str) -> SchemaMap:
    """A generate body (`inputs`, `parameters`) whose inputs may not be empty."""
    schema = copy.deepcopy(shape)
    _narrow(schema["properties"]["inputs"], minLength=1)
    schema["properties"]["parameters"] = _ref(parameters)
    return schema


def _logit_bias(fields: SchemaMap) -> None:
    """OpenAI's map of token ids to biases in [-100, 100] (TGI's array of floats is taken and unused)."""
    fields["logit_bias"]["anyOf"][0] = {"type": "object", "propertyNames": {"pattern": "^[0-9]+$"},
                                        "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}}


def _openai_knobs(fields: SchemaMap, limits: Limits) -> None:
    """The rules the chat and completions bodies share (temperature 0 is greedy decoding there)."""
    _narrow(fields["temperature"], minimum=0)
    _narrow(fields["top_p"], exclusiveMinimum=0, maximum=1)
    _narrow(fields["frequency_penalty"], minimum=-2, maximum=2)
    _narrow(fields["presence_penalty"], minimum=-2, maximum=2)
    _narrow(fields["max_tokens"], minimum=1)
    _narrow(fields["n"], minimum=1, maximum=limits.max_client_batch_size)
    fields["stop"]["anyOf"][1]["maxItems"] = limits.max_stop_sequences
    _logit_bias(fields)


def _checked_chat(shape: SchemaMap, limits: Limits, served: Served) -> SchemaMap:
    """The chat body with its checks: `response_format` in OpenAI's or TGI's shape, `tool_choice` one of OpenAI's
    (a named function must be one of `tools`: a check the schema cannot state)."""
    schema = copy.deepcopy(shape)
    fields = schema["properties"]
    _openai_knobs(fields, limits)
    _narrow(fields["max_completion_tokens"], minimum=1)
    _narrow(fields["top_logprobs"], maximum=limits.max_top_n_tokens)
    fields["response_format"] = {"anyOf": [RESPONSE_FORMAT, NULL]}
    fields["tool_choice"] = TOOL_CHOICE
    served.narrow_model(fields)
    return schema


def _checked_completion(shape: SchemaMap, limits: Limits, vocab_size: int, served: Served) -> SchemaMap:
    """The completions body with its checks: prompts within the batch size and the vocabulary, no suffix."""
    schema = copy.deepcopy(shape)
    fields = schema["properties"]
    _openai_knobs(fields, limits)
    _narrow(fields["repetition_penalty"], exclusiveMinimum=0)
    _narrow(fields["logprobs"], maximum=limits.max_top_n_tokens)
    served.narrow_model(fields)
    fields["suffix"] = {**NULL, "description": "Not supported: anything but null is refused"}
    token_id = {"type": "integer", "minimum": 0, "maximum": vocab_size - 1}
    ids = {"type": "array", "items": token_id, "minItems": 1}
    fields["prompt"] = {"anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
         "maxItems": limits.max_client_batch_size},
        ids,
        {"type": "array", "items": ids, "minItems": 1, "maxItems": limits.max_client_batch_size},
    ]}
    return schema


def _vertex_instance(shape: SchemaMap) -> SchemaMap:
    """A Vertex generate instance: only `max_new_tokens` and `seed` of its parameters are used (and checked)."""
    schema = copy.deepcopy(shape)
    _narrow(schema["properties"]["inputs"], minLength=1)
    schema["properties"]["parameters"] = {"anyOf": [_ref("VertexParameters"), NULL]}
    return schema


def check_schemas(schemas: SchemaMap, limits: Limits, vocab_size: int, served: Served) -> None:
    """Replace the generation bodies' schemas by checked ones and add the shape-only ones the reading routes use."""
    parameters = schemas["GenerateParameters"]
    schemas["TokenizeParameters"] = copy.deepcopy(parameters)
    schemas["TokenizeRequest"] = {**copy.deepcopy(schemas["GenerateRequest"]), "title": "TokenizeRequest",
                                  "description": "The body of `/tokenize`: only `inputs` is used"}
    schemas["TokenizeRequest"]["properties"]["parameters"] = _ref("TokenizeParameters")
    schemas["ChatTokenizeRequest"] = {**copy.deepcopy(schemas["ChatCompletionRequest"]),
                                      "title": "ChatTokenizeRequest",
                                      "description": "The body of `/chat_tokenize`: only `messages` is used"}
    vertex = copy.deepcopy(parameters)
    _narrow(vertex["properties"]["max_new_tokens"], minimum=1)
    schemas["VertexParameters"] = {**vertex, "title": "VertexParameters"}
    schemas["GenerateInstance"] = _vertex_instance(schemas["GenerateInstance"])
    schemas["GenerateParameters"] = _checked_parameters(parameters, limits, streaming=False, served=served)
    schemas["GenerateStreamParameters"] = {**_checked_parameters(parameters, limits, streaming=True, served=served),
                                           "title": "GenerateStreamParameters"}
    generate = schemas["GenerateRequest"]
    schemas["GenerateRequest"] = _checked_generate(generate, "GenerateParameters")
    schemas["GenerateStreamRequest"] = {**_checked_generate(generate, "GenerateStreamParameters"),
                                        "title": "GenerateStreamRequest"}
    compat = _checked_generate(schemas["CompatGenerateRequest"], "GenerateParameters")
    compat["if"] = {"required": ["stream"], "properties": {"stream": {"const": True}}}
    compat["then"] = {"properties": {"parameters": _ref("GenerateStreamParameters")}}
    schemas["CompatGenerateRequest"] = compat
    schemas["ChatCompletionRequest"] = _checked_chat(schemas["ChatCompletionRequest"], limits, served)
    schemas["CompletionRequest"] = _checked_completion(schemas["CompletionRequest"], limits, vocab_size, served)
