"""Grammars as llguidance reads them, torch-free: the API layer checks them with this, the engine compiles them.

A `messages.Grammar` names its kind (a JSON Schema, a regular expression or a Lark grammar) and holds its text;
`llguidance_grammar` turns it into llguidance's serialised grammar, with compact JSON whitespace (`, ` and `: `
between items, nothing else: a weak model cannot run away in spaces), and `grammar_error` runs llguidance's own
compiler over it without a tokenizer, so a bad schema or regex is refused before anything is queued.
`thinking_grammar` puts a reasoning model's thinking section, unconstrained, in front of an answer's grammar.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import msgspec.structs

from llguidance import LLMatcher

from serving.messages import Grammar, GrammarKind, Thinking
from serving.tool_formats import THINK_CLOSE, THINK_OPEN

GRAMMAR_WITH_MIN_TOKENS = ("a grammar (`grammar`, `response_format` or `tools`) cannot be combined with "
                           "`min_tokens` or `ignore_eos`: the grammar ends the text with EOS once it is complete")
GRAMMAR_INVALID = "grammar is not valid: "  # after TGI's validation prefix, before the compiler's message
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}


def llguidance_grammar(grammar: Grammar) -> str:
    """llguidance's serialised grammar for `grammar` (raises `ValueError` when a schema is not a JSON object)."""
    if grammar.kind is GrammarKind.JSON_SCHEMA:
        return LLMatcher.grammar_from_json_schema(grammar.value, defaults=JSON_OPTIONS)
    if grammar.kind is GrammarKind.REGEX:
        return LLMatcher.grammar_from_regex(grammar.value)
    return LLMatcher.grammar_from_lark(grammar.value)


def grammar_error(grammar: Grammar) -> str | None:
    """The compiler's message when `grammar` cannot be compiled, else None."""
    try:
        error = LLMatcher.validate_grammar(llguidance_grammar(grammar))
    except ValueError as exc:
        return str(exc)
    return clean(error) or None


def clean(message: str) -> str:
    """A compiler message on one line, without the source excerpts and caret lines it quotes."""
    lines = [line.strip() for line in message.splitlines()]
    return " ".join(line for line in lines if line and set(line) != {"^"} and not re.match(r"\d+ \|", line))


def json_schema_grammar(schema: object) -> Grammar:
    """A grammar for the JSON values that validate against `schema` (compact JSON text, key order kept)."""
    return Grammar(kind=GrammarKind.JSON_SCHEMA, value=json.dumps(schema, separators=(",", ":"), ensure_ascii=False))


def lark_items(added_tokens: Mapping[str, int], text: str) -> str:
    """`text` as Lark items: the tokenizer's added tokens by id (`<[id]>`), the rest as string literals."""
    markers = [token for token in added_tokens if token in text]
    parts = re.split("(" + "|".join(map(re.escape, markers)) + ")", text) if markers else [text]
    return " ".join(f"<[{added_tokens[part]}]>" if part in added_tokens else json.dumps(part)
                    for part in parts if part)


def lark_json(schema: Any) -> str:
    """A Lark rule's body that matches JSON valid against `schema`, written compactly (`JSON_OPTIONS`)."""
    return f"%json {json.dumps({**schema, 'x-guidance': JSON_OPTIONS})}"


def thinking_grammar(grammar: Grammar, added_tokens: Mapping[str, int], thinking: Thinking) -> Grammar:
    """A reasoning model's grammar: the answer's `grammar` after the thinking section, free text up to `</think>`,
    that the prompt calls for: an optional `<think>...</think>` (UNOPENED), the rest of one the prompt opened
    (OPEN), or none (CLOSED: the prompt holds it already)."""
    answer = msgspec.structs.replace(grammar, after_thinking=False)
    if thinking is Thinking.CLOSED:
        return answer
    close_tag = lark_items(added_tokens, THINK_CLOSE)
    lazy = "" if THINK_CLOSE in added_tokens else "[lazy]"  # a text tag ends the section at its first occurrence
    opening = "" if thinking is Thinking.OPEN else lark_items(added_tokens, THINK_OPEN) + " "
    optional = "" if thinking is Thinking.OPEN else "?"
    lines = ["%llguidance {}", f"start: think{optional} constrained", 'think: section "\\n"*',
             f"section{lazy}: {opening}/(.|\\n)*/ {close_tag}"]
    if answer.kind is GrammarKind.JSON_SCHEMA:
        lines.append(f"constrained: {lark_json(json.loads(answer.value))}")
    elif answer.kind is GrammarKind.REGEX:
        lines.append("constrained: /" + answer.value.replace("/", "\\/") + "/")
    else:
        body = answer.value.replace("%llguidance {}\n", "")
        lines.append(re.sub(r"^start:", "constrained:", body, count=1, flags=re.MULTILINE))
    return Grammar(kind=GrammarKind.LARK, value="\n".join(lines) + "\n")
