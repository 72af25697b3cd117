"""TGI's `grammar` and `response_format` (TGI's forms and OpenAI's) turned into one checked `Grammar`.

Any valid JSON Schema is accepted (TGI insists on a top-level `properties`; arrays, enums and scalars at the top
are fine here). Schemas are normalised as TGI's library reads them: an object schema with `properties` and no
`type` is an object, and one without `additionalProperties` gets `false` (its keys are the listed ones). The
grammar is checked with the engine's own compiler before anything is queued; its message is the 422's.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import msgspec.structs

from flask import has_app_context

from serving.api.context import services
from serving.api.errors import ApiError
from serving.constraints import GRAMMAR_INVALID, grammar_error, json_schema_grammar, thinking_grammar
from serving.messages import Grammar, GrammarKind, Thinking

JSON_OBJECT: dict[str, Any] = {"type": "object"}
SCHEMA_KEYWORDS_WITH_SCHEMAS = ("items", "additionalItems", "contains", "not", "if", "then", "else",
                                "propertyNames", "unevaluatedItems", "unevaluatedProperties")
SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")


def invalid(message: str) -> ApiError:
    """TGI's 422 for a grammar that cannot be used (counted in `/metrics`)."""
    if has_app_context():
        services().metrics.grammar_failure()
    return ApiError.validation(f"{GRAMMAR_INVALID}{message}")


def closed(schema: Any) -> Any:
    """`schema` with every object that lists `properties` closed (`additionalProperties: false` unless given) and
    typed (`type: object` unless given), throughout its subschemas; key order is kept."""
    if not isinstance(schema, dict):
        return schema
    result = {key: _closed_child(key, value) for key, value in schema.items()}
    if "properties" in result:
        result.setdefault("type", "object")
        result.setdefault("additionalProperties", False)
    return result


def _closed_child(key: str, value: Any) -> Any:
    """A keyword's value with the schemas it holds closed."""
    if key in SCHEMA_MAPS and isinstance(value, dict):
        return {name: closed(sub) for name, sub in value.items()}
    if key in SCHEMA_LISTS and isinstance(value, list):
        return [closed(sub) for sub in value]
    if key in SCHEMA_KEYWORDS_WITH_SCHEMAS or key == "additionalProperties":
        return closed(value)
    return value


def _schema_value(value: Any) -> Any:
    """A schema given as an object or as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise invalid(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(value, (dict, bool)):
        raise ApiError.validation("grammar is not supported")
    return value


def checked(grammar: Grammar, max_bytes: int) -> Grammar:
    """`grammar` once it is within the size cap and compiles."""
    size = len(grammar.value.encode("utf-8"))
    if size > max_bytes:
        raise invalid(f"the grammar is {size} bytes long, more than the {max_bytes} allowed (GRAMMAR_MAX_BYTES)")
    error = grammar_error(grammar)
    if error is not None:
        raise invalid(error)
    return grammar


def schema_grammar(schema: Any, max_bytes: int) -> Grammar:
    """The checked grammar of a JSON Schema."""
    return checked(json_schema_grammar(closed(schema)), max_bytes)


def after_thinking(grammar: Grammar, added_tokens: Mapping[str, int], max_bytes: int) -> Grammar:
    """A reasoning model's answer grammar, marked for the engine, which puts the thinking section that the rendered
    prompt calls for in front of it; checked here with the largest (an optional section)."""
    checked(thinking_grammar(grammar, added_tokens, Thinking.UNOPENED), max_bytes)
    return msgspec.structs.replace(grammar, after_thinking=True)


def tgi_grammar(spec: dict[str, Any], max_bytes: int) -> Grammar:
    """TGI's `{"type": "json" | "json_object" | "json_schema" | "regex", "value": ...}`."""
    kind, value = spec.get("type"), spec.get("value")
    if kind in ("json", "json_object"):
        return schema_grammar(_schema_value(value), max_bytes)
    if kind == "json_schema":
        if not isinstance(value, dict) or "schema" not in value:
            raise invalid("`json_schema` needs a `value` object with a `schema`")
        return schema_grammar(_schema_value(value["schema"]), max_bytes)
    if kind == "regex":
        if not isinstance(value, str):
            raise invalid("a `regex` grammar's `value` must be a string")
        return checked(Grammar(kind=GrammarKind.REGEX, value=value), max_bytes)
    raise invalid(f"unknown grammar type {kind!r}: expected json, json_object, json_schema or regex")


def response_format_grammar(spec: dict[str, Any], max_bytes: int) -> Grammar | None:
    """OpenAI's `response_format` (`text`, `json_object`, `json_schema` with `json_schema.schema`) or TGI's own
    forms (with `value`); None for plain text."""
    kind = spec.get("type")
    if "value" in spec or kind in ("json", "regex"):
        return tgi_grammar(spec, max_bytes)
    if kind == "text":
        return None
    if kind == "json_object":
        return schema_grammar(JSON_OBJECT, max_bytes)
    if kind == "json_schema":
        inner = spec.get("json_schema")
        if not isinstance(inner, dict):
            raise invalid("`response_format.json_schema` must be an object with `name` and `schema`")
        return schema_grammar(_schema_value(inner.get("schema", JSON_OBJECT)), max_bytes)
    raise invalid(f"unknown response_format type {kind!r}: expected text, json_object or json_schema")
