"""schemathesis hooks of the contract run: a generated body asks for a few tokens at most, and a body meant to be
valid carries grammars that compile.

A schema-valid body may ask for up to 2**32 tokens, or leave the length open (the rest of the context); the tiny
model would take minutes over such a run. Lowering the length keeps every body as valid or invalid as it was.
Whether a grammar compiles (a random string as a regex, a random object as a JSON Schema) is the compiler's
check, which no schema can state: in the positive phase a generated grammar, `response_format` or tool schema is
replaced by one that compiles, and a named `tool_choice` by `required` (the negative phase keeps them as they are:
anything off the document's shapes is refused).
"""

from __future__ import annotations

from typing import Any

import schemathesis

MAX_TOKENS = 4
LENGTH_FIELDS = ("max_tokens", "max_completion_tokens", "max_new_tokens")


def _short(body: Any) -> Any:
    """`body` with every length field (at any depth) at most MAX_TOKENS, and set where a request left it open."""
    if isinstance(body, list):
        return [_short(item) for item in body]
    if not isinstance(body, dict):
        return body
    short = {key: _short(value) for key, value in body.items()}
    for field in LENGTH_FIELDS:
        value = short.get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_TOKENS:
            short[field] = MAX_TOKENS
    if "messages" in short or "prompt" in short:
        if short.get("max_tokens") is None and short.get("max_completion_tokens") is None:
            short["max_tokens"] = MAX_TOKENS
    if "inputs" in short:
        parameters = short.setdefault("parameters", {"do_sample": True})
        if isinstance(parameters, dict) and parameters.get("max_new_tokens") is None:
            parameters["max_new_tokens"] = MAX_TOKENS
    return short


VALID_GRAMMAR = {"type": "regex", "value": "[a-z]{1,3}"}
PARAMETERS = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}}}


def _compiling(body: Any) -> Any:
    """`body` with its grammar-bearing fields replaced by ones that compile (and nothing that forbids their EOS)."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if isinstance(body.get("instances"), list):  # /vertex: each instance is a body of its own
        body["instances"] = [_compiling(instance) for instance in body["instances"]]
    parameters = body.get("parameters")
    if isinstance(parameters, dict) and parameters.get("grammar") is not None:
        body["parameters"] = {**parameters, "grammar": VALID_GRAMMAR}
    if body.get("response_format") is not None:
        body["response_format"] = {"type": "json_object"}
    if isinstance(body.get("tools"), list):
        body["tools"] = [{**tool, "function": {**tool["function"], "parameters": PARAMETERS}}
                         if isinstance(tool, dict) and isinstance(tool.get("function"), dict) else tool
                         for tool in body["tools"]]
        if body.get("tool_choice") not in (None, "none", "auto", "required"):
            body["tool_choice"] = "required"
    if body.get("response_format") is not None or (body.get("tools") and body.get("tool_choice") != "none"):
        body.pop("min_tokens", None)
        body.pop("ignore_eos", None)
    return body


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Every body sent, in every phase, asks for at most MAX_TOKENS tokens; a positive one's grammars compile."""
    case.body = _short(case.body)
    mode = getattr(getattr(getattr(case, "meta", None), "generation", None), "mode", None)
    if getattr(mode, "value", None) == "positive":
        case.body = _compiling(case.body)
