"""Reading an assistant's tokens into reasoning, content and tool calls, token by token and whole."""

from __future__ import annotations

import json

import pytest

from serving.api.protocol.assistant import AssistantReader
from serving.api.protocol.tools import CallScanner, ToolPlan, value_end
from serving.messages import Thinking
from serving.tool_formats import prompt_thinking

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def plan(tool_format: str | None = None) -> ToolPlan:
    """The plan of an `auto` request offering `f`."""
    result = ToolPlan.of(TOOLS, "auto", None, tool_format)
    assert result is not None
    return result


def read(reader: AssistantReader, pieces: list[str | tuple[str, bool]]) -> list[dict]:
    """Feed the pieces (text, or (text, special)); every non-empty delta, the final one included."""
    deltas = []
    for piece in pieces:
        text, special = piece if isinstance(piece, tuple) else (piece, False)
        delta = reader.feed(text, special)
        if delta:
            deltas.append(delta)
    final = reader.finish()
    return deltas + ([final] if final else [])


def joined(deltas: list[dict], key: str) -> str:
    return "".join(d.get(key) or "" for d in deltas)


def arguments(deltas: list[dict], index: int = 0) -> str:
    return "".join(entry["function"]["arguments"] for d in deltas for entry in d.get("tool_calls", [])
                   if entry["index"] == index)


def test_hermes_marker_split_over_tokens_is_held_back_and_the_call_streams():
    reader = AssistantReader(plan("hermes"), reasoning=False)
    pieces = ["Let me", " check <", "tool", "_call>\n{\"na", "me\": \"f\", \"argu", "ments\":", " {\"a\": [1, ",
              "\"}\"]}}\n</tool_call>", ("</s>", True)]
    deltas = read(reader, pieces)
    assert joined(deltas, "content") == "Let me check "
    headers = [e for d in deltas for e in d.get("tool_calls", []) if "id" in e]
    assert [(h["index"], h["function"]["name"], h["function"]["arguments"]) for h in headers] == [(0, "f", "")]
    assert json.loads(arguments(deltas)) == {"a": [1, "}"]}
    message = reader.message()
    assert message["content"] == "Let me check "
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a": [1, "}"]}'}
    assert reader.called()


def test_text_that_only_looks_like_a_marker_is_content():
    reader = AssistantReader(plan("hermes"), reasoning=False)
    deltas = read(reader, ["a <tool", " box> b <", "t"])
    assert joined(deltas, "content") == "a <tool box> b <t"
    assert reader.message() == {"role": "assistant", "content": "a <tool box> b <t"}
    assert not reader.called()


def test_mistral_special_marker_and_parallel_calls():
    reader = AssistantReader(plan("mistral"), reasoning=False)
    deltas = read(reader, [("[TOOL_CALLS]", True), '[{"name": "f", "arguments": {}}, ',
                           '{"name": "f", "arguments": {"x": 1}}]', ("</s>", True)])
    calls = reader.message()["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == ["{}", '{"x": 1}']
    assert len({c["id"] for c in calls}) == 2 and arguments(deltas, 1) == '{"x": 1}'
    assert reader.message()["content"] is None


def test_llama3_json_answer_starting_with_a_brace_is_a_call_else_text():
    reader = AssistantReader(plan("llama3_json"), reasoning=False)
    read(reader, [" {\"name\": \"f\", ", "\"parameters\": {\"q\": \"a;b\"}}; {\"name\": \"f\", \"parameters\": {}}"])
    assert [c["function"]["arguments"] for c in reader.message()["tool_calls"]] == ['{"q": "a;b"}', "{}"]
    text = AssistantReader(plan("llama3_json"), reasoning=False)
    read(text, ["It is {warm}"])
    assert text.message() == {"role": "assistant", "content": "It is {warm}"}
    answer = AssistantReader(plan("llama3_json"), reasoning=False)  # `response_format`'s object beside the tools
    deltas = read(answer, ['{"na', 'me": "fig"}'])
    assert deltas == [{"content": '{"name": "fig"}'}] and answer.message()["content"] == '{"name": "fig"}'


def test_a_call_cut_short_keeps_the_arguments_it_has():
    reader = AssistantReader(plan(), reasoning=False)
    read(reader, ['<tool_call>\n{"name": "f", "arguments": {"city": "Pa'])
    assert reader.message()["tool_calls"][0]["function"]["arguments"] == '{"city": "Pa'


def test_thinking_section_is_reasoning_content_streamed_and_whole():
    reader = AssistantReader(None, reasoning=True)
    deltas = read(reader, [("<think>", True), "I ", "think", ("</think>", True), "\n\n", "Yes."])
    assert joined(deltas, "reasoning_content") == "I think" and joined(deltas, "content") == "Yes."
    assert reader.message() == {"role": "assistant", "content": "Yes.", "reasoning_content": "I think"}
    plain = AssistantReader(None, reasoning=True)
    read(plain, ["No thinking <think> here"])
    assert plain.message() == {"role": "assistant", "content": "No thinking <think> here"}


def test_a_prompt_that_opens_the_section_makes_the_answer_reasoning_until_it_closes():
    reader = AssistantReader(plan(), reasoning=True, thinking=Thinking.OPEN)
    deltas = read(reader, ["\nMaybe <tool", "_call> later", ("</think>", True), "\n\n",
                           '<tool_call>\n{"name": "f", "arguments": {"city": "Oslo"}}\n</tool_call>'])
    assert joined(deltas, "reasoning_content") == "\nMaybe <tool_call> later" and joined(deltas, "content") == ""
    message = reader.message()
    assert message["content"] is None and message["reasoning_content"] == "\nMaybe <tool_call> later"
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"city": "Oslo"}'}
    cut = AssistantReader(None, reasoning=True, thinking=Thinking.OPEN)
    read(cut, ["Still thinking"])
    assert cut.message() == {"role": "assistant", "content": "", "reasoning_content": "Still thinking"}


def test_a_prompt_that_closed_the_section_leaves_the_answer_as_it_is():
    reader = AssistantReader(None, reasoning=True, thinking=Thinking.CLOSED)
    read(reader, [("<think>", True), "x", ("</think>", True), "Yes."])
    assert reader.message() == {"role": "assistant", "content": "<think>x</think>Yes."}


@pytest.mark.parametrize("prompt, continued, thinking", [
    ("<|im_start|>assistant\n<think>\n", None, Thinking.OPEN),
    ("<|im_start|>assistant\n<think>\n\n</think>\n\n", None, Thinking.CLOSED),
    ("<|im_start|>assistant\n", None, Thinking.UNOPENED),
    ("<|user|>\nWhat is <think>?<|end|>\n<|assistant|>\n", None, Thinking.UNOPENED),
    ("<|assistant|>\n<think>\nFirst,", "<think>\nFirst,", Thinking.OPEN),
    ("<|assistant|>\n<think>x</think>So", "<think>x</think>So", Thinking.CLOSED),
    ("<|user|>\n<think>\n<|assistant|>\nSo", "So", Thinking.UNOPENED),
])
def test_where_a_prompt_leaves_the_thinking_section(prompt, continued, thinking):
    assert prompt_thinking(prompt, continued) is thinking


@pytest.mark.parametrize("text, end", [
    ('{"a": "}"} tail', 10), ("[1, [2]], x", 8), ('"a\\"b" x', 6), ("12, 3", 2), ("true}", 4),
    ('{"a": ', None), ("  ", None), ("123", None),
])
def test_value_end(text, end):
    assert value_end(text) == end


def test_scanner_skips_what_lies_between_calls():
    scanner = CallScanner("arguments")
    scanner.feed('junk {"name": "a", "arguments": {}} ; ]')
    scanner.feed('[{"name": "b", "arguments": {"k": "v"}}')
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in scanner.tool_calls()] == [
        ("a", "{}"), ("b", '{"k": "v"}')]
