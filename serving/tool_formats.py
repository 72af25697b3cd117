"""The model families' native tool-call formats, which one a chat template speaks, and where a prompt leaves a
reasoning model's thinking section (torch-free).

- `hermes` (Hermes 2 Pro, Qwen 2.5/3): `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, one block
  per call.
- `llama3_json` (Llama 3.1+): the whole answer is `{"name": ..., "parameters": {...}}`, calls joined by `; `.
- `mistral`: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.

A template that speaks none of them gets the `hermes` format through a system prompt (`serving.api.tools`).
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.messages import Thinking


@dataclass(frozen=True)
class ToolFormat:
    """How a family writes tool calls: each call is a JSON object `{"name": ..., <arguments_key>: {...}}`."""

    name: str
    marker: str  # what starts the calls ("" = the answer itself starts with the first call's `{`)
    open: str  # between the marker and the first call
    separator: str  # between two calls
    close: str  # after the last call
    arguments_key: str


FORMATS = {
    "hermes": ToolFormat("hermes", "<tool_call>", "\n", "\n</tool_call>\n<tool_call>\n", "\n</tool_call>",
                         "arguments"),
    "llama3_json": ToolFormat("llama3_json", "", "", "; ", "", "parameters"),
    "mistral": ToolFormat("mistral", "[TOOL_CALLS]", "[", ", ", "]", "arguments"),
}
FALLBACK = FORMATS["hermes"]
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"  # a reasoning model's thinking section


def detect(template: str | None) -> str | None:
    """The native format of a chat template (None when it shows no tool support)."""
    if not template:
        return None
    if "<tool_call>" in template:
        return "hermes"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "tools" in template and ("<|python_tag|>" in template or '"parameters"' in template
                                or "'parameters'" in template):
        return "llama3_json"
    return None


def has_thinking(template: str | None) -> bool:
    """Whether a chat template writes or expects a `<think>...</think>` section."""
    return bool(template) and THINK_CLOSE in template  # type: ignore[operator]


def prompt_thinking(prompt: str, continued: str | None = None) -> Thinking:
    """Where a rendered prompt leaves the thinking section: its last tag (`<think>` or `</think>`) counts when only
    whitespace follows it (a template that opens the section, or renders it empty, at the end of the generation
    prompt) or when it lies in `continued`, the text of an assistant message that the answer continues."""
    opened, closed = prompt.rfind(THINK_OPEN), prompt.rfind(THINK_CLOSE)
    tag, at = (THINK_OPEN, opened) if opened > closed else (THINK_CLOSE, closed)
    if at < 0 or (prompt[at + len(tag):].strip() and not (continued is not None and tag in continued)):
        return Thinking.UNOPENED
    return Thinking.OPEN if tag == THINK_OPEN else Thinking.CLOSED
