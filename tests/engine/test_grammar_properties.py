"""Property test: generated JSON Schemas and regexes, decoded by the random-weight model in one mixed batch (with
an unconstrained row and different sampling settings). At least 90% end by themselves within the token limit, and
every one that does parses and validates."""

from __future__ import annotations

import json
import re

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_helpers import drain, engine_config, request
from serving.constraints import json_schema_grammar
from serving.engine.engine import LLMEngine
from serving.messages import Finished, FinishReason, Grammar, GrammarKind

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)
MAX_NEW_TOKENS = 400


@st.composite
def integers(draw) -> dict:
    low = draw(st.integers(-50, 50))
    return {"type": "integer", "minimum": low, "maximum": low + draw(st.integers(0, 500))}


@st.composite
def strings(draw) -> dict:
    longest = draw(st.integers(0, 8))
    return {"type": "string", "minLength": draw(st.integers(0, longest)), "maxLength": longest}


LEAVES = st.one_of(
    integers(), strings(), st.just({"type": "boolean"}), st.just({"type": "null"}),
    st.lists(st.text(alphabet="xyz é", min_size=1, max_size=4), min_size=1, max_size=4, unique=True).map(
        lambda values: {"enum": values}),
)


def _containers(children: st.SearchStrategy) -> st.SearchStrategy:
    """Arrays and objects over `children`, bounded in size."""
    arrays = st.builds(lambda items, most: {"type": "array", "items": items, "maxItems": most},
                       children, st.integers(0, 3))
    objects = st.dictionaries(NAMES, children, min_size=1, max_size=3).flatmap(
        lambda properties: st.sets(st.sampled_from(sorted(properties))).map(
            lambda required: {"type": "object", "properties": properties, "required": sorted(required)}))
    return st.one_of(arrays, objects)


SCHEMAS = st.recursive(LEAVES, _containers, max_leaves=6)
REGEXES = st.lists(st.sampled_from([r"[a-c]{1,4}", r"(ab|cd)", r"[0-9]{2}", r"x?", r"(é|ü)", r"-"]),
                   min_size=1, max_size=4).map("".join)


def closed(schema: dict) -> dict:
    """What the API sends: objects without extra keys (as `serving.api.protocol.structured.closed`)."""
    if schema.get("type") == "object":
        return {**schema, "properties": {k: closed(v) for k, v in schema["properties"].items()},
                "additionalProperties": False}
    if schema.get("type") == "array":
        return {**schema, "items": closed(schema["items"])}
    return schema


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(schemas=st.lists(SCHEMAS, min_size=4, max_size=6), regexes=st.lists(REGEXES, min_size=1, max_size=2),
       seed=st.integers(0, 2**16))
def test_generated_grammars_in_a_mixed_batch(loaded, model_dir, schemas, regexes, seed):
    engine = LLMEngine(loaded, engine_config(model_dir))
    grammars = [json_schema_grammar(closed(schema)) for schema in schemas]
    grammars += [Grammar(kind=GrammarKind.REGEX, value=regex) for regex in regexes]
    for index, grammar in enumerate(grammars):
        sampling = {"do_sample": True, "seed": seed + index, "temperature": 0.6 + 0.2 * (index % 3)}
        if index % 2:
            sampling["top_k"] = 20
        engine.add_request(request(f"g{index}", "Hello world", MAX_NEW_TOKENS, grammar=grammar, **sampling))
    engine.add_request(request("free", "Hello world", 20))
    events = drain(engine, max_steps=5000)
    ended = 0
    for index, grammar in enumerate(grammars):
        done = events[f"g{index}"][-1]
        assert isinstance(done, Finished), done
        if done.finish_reason is not FinishReason.EOS_TOKEN:
            continue
        ended += 1
        if grammar.kind is GrammarKind.REGEX:
            assert re.fullmatch(grammar.value, done.generated_text), (grammar.value, done.generated_text)
        else:
            jsonschema.validate(json.loads(done.generated_text), json.loads(grammar.value))
    assert ended >= 0.9 * len(grammars)
    assert isinstance(events["free"][-1], Finished)
