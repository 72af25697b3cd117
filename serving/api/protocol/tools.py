"""OpenAI tools on the model's own tool-call format: the offered tools, their grammar, their prompt, their parsing.

`tool_choice` decides the grammar (a Lark grammar, `serving.constraints`):
- `required` / a named function: the answer is the format's marker, then one call (or several, with
  `parallel_tool_calls`) whose `{"name", <arguments key>}` object validates against the chosen tool's parameters.
- `auto`: free text, or the marker and calls. The call grammar is triggered lazily by the model's own marker
  (llguidance's lazy lexeme, or the marker's special token), so a model that answers in text is not constrained
  and a model that calls is held to valid calls, in one generation. With `response_format` too, the text
  alternative is that schema's JSON.
- Llama 3.1's JSON format has no marker: an answer that starts with `{` is a call, any other answer is text.

Templates that know tools get them as `tools` (and assistant `tool_calls` and `tool` messages as structured
fields); other templates get a system message listing the tools and the `hermes` format (`tool_prompt` replaces
its instruction). `CallScanner` reads the calls back, incrementally, for streams and whole answers alike.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping

from serving.api.catalogue import Error
from serving.api.errors import ApiError
from serving.api.protocol.structured import checked, closed
from serving.constraints import JSON_OPTIONS, lark_items, lark_json
from serving.messages import Grammar, GrammarKind
from serving.tool_formats import FALLBACK, FORMATS, ToolFormat

DEFAULT_TOOL_PROMPT = ("To call a tool, answer with <tool_call>\n{\"name\": <the tool's name>, \"arguments\": "
                       "<its arguments as a JSON object>}\n</tool_call>, one such block per call. Otherwise answer "
                       "in plain text.")
_NAME = re.compile(r'\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")')


def tool_error(message: str) -> ApiError:
    """TGI's 422 `tool_error`."""
    return ApiError(Error.TOOL, f"Tool error: {message}")


def _function(tool: Any) -> dict[str, Any]:
    """A tool's `function` object (`{"type": "function", "function": {...}}`), checked."""
    if not (isinstance(tool, dict) and isinstance(tool.get("function"), dict)
            and isinstance(tool["function"].get("name"), str)):
        raise tool_error("each tool must be {\"type\": \"function\", \"function\": {\"name\": ..., ...}}")
    return tool["function"]


@dataclass(frozen=True)
class ToolPlan:
    """The tools a request offers, how the model must use them, and the model's format for them."""

    tools: list[dict[str, Any]]
    required: bool  # `required` or a named function: the answer must be calls
    parallel: bool
    format: ToolFormat  # the template's own, else the fallback (`serving.tool_formats`)

    @classmethod
    def of(cls, tools: list[Any] | None, choice: Any, parallel: bool | None, tool_format: str | None) -> ToolPlan | None:
        """The plan of a request, None when it uses no tools (none offered, or `tool_choice: "none"`)."""
        if not tools or choice == "none":
            return None
        functions = [_function(tool) for tool in tools]
        offered = [{"type": "function", "function": function} for function in functions]
        name = _chosen_name(choice)
        if name is not None:
            offered = [tool for tool in offered if tool["function"]["name"] == name]
            if not offered:
                raise tool_error(f"Tool with name {name} not found")
        elif choice not in (None, "auto", "required"):
            raise tool_error(f"invalid tool_choice {choice!r}")
        return cls(offered, choice == "required" or name is not None, parallel is not False and name is None,
                   FORMATS.get(tool_format or "", FALLBACK))

    def call_openings(self) -> tuple[str, ...]:
        """How each call begins as the grammar writes it (compact JSON, the name first): for a format without a
        marker, what tells a call from an answer that is itself a JSON object."""
        key = json.dumps(self.format.arguments_key)
        return tuple(f'{{"name": {json.dumps(tool["function"]["name"], ensure_ascii=False)}, {key}: '
                     for tool in self.tools)

    def call_schema(self) -> dict[str, Any]:
        """The JSON Schema of one call: `{"name": <one tool>, <arguments key>: <its parameters>}`."""
        key = self.format.arguments_key
        variants = [{
            "type": "object",
            "properties": {"name": {"const": tool["function"]["name"]},
                           key: closed(tool["function"].get("parameters") or {"type": "object"})},
            "required": ["name", key],
            "additionalProperties": False,
        } for tool in self.tools]
        schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
        return {**schema, "x-guidance": JSON_OPTIONS}

    def grammar(self, added_tokens: Mapping[str, int], answer_schema: Any | None, max_bytes: int) -> Grammar:
        """The checked Lark grammar of the answer (`answer_schema`: `response_format`'s schema, the alternative
        to calls under `auto`)."""
        fmt = self.format
        lit = partial(lark_items, added_tokens)

        more = f'({lit(fmt.separator)} call)*' if self.parallel else ""
        body = f"{lit(fmt.open)} call {more} {lit(fmt.close)}"
        lines = ["%llguidance {}", f"call: %json {json.dumps(self.call_schema())}"]
        if answer_schema is not None:
            lines.append(f"answer: {lark_json(closed(answer_schema))}")
        if self.required:
            lines.append(f"start: {lit(fmt.marker)} {body}")
        elif answer_schema is not None:
            lines.append(f"start: answer | {lit(fmt.marker)} {body}")
        elif not fmt.marker:
            lines += [f"start: TEXT | {body}", r"TEXT: /([^{](.|\n)*)?/"]
        elif fmt.marker in added_tokens:
            lines += [f"start: TEXT | TEXT {lit(fmt.marker)} {body}", r"TEXT: /(.|\n)*/"]
        else:
            lines += [f"start: TEXT | trigger {body}", f"trigger[lazy]: TEXT {lit(fmt.marker)}", r"TEXT: /(.|\n)*/"]
        return checked(Grammar(kind=GrammarKind.LARK, value="\n".join(lines) + "\n"), max_bytes)

    def system_prompt(self, tool_prompt: str | None) -> str:
        """The fallback prompt for a template that does not know tools: the tools and how to call them."""
        listing = json.dumps([tool["function"] for tool in self.tools], ensure_ascii=False)
        return f"You can call these tools:\n{listing}\n{tool_prompt or DEFAULT_TOOL_PROMPT}"


def render_calls(fmt: ToolFormat, tool_calls: list[dict[str, Any]]) -> str:
    """An earlier assistant turn's calls written in a format, for a template that does not know tools."""
    objects = [json.dumps({"name": call.get("function", {}).get("name"),
                           fmt.arguments_key: arguments_object(call.get("function", {}).get("arguments"))},
                          ensure_ascii=False)
               for call in tool_calls]
    return fmt.marker + fmt.open + fmt.separator.join(objects) + fmt.close


def _chosen_name(choice: Any) -> str | None:
    """The function `tool_choice` names, if it names one (a string other than auto/required/none, or an object)."""
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return choice["function"].get("name")
    if isinstance(choice, str) and choice not in ("auto", "required", "none"):
        return choice
    return None


def arguments_object(arguments: Any) -> Any:
    """A call's arguments as the template wants them: a JSON string parsed (kept as is when it is not JSON)."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def value_end(text: str) -> int | None:
    """Where the JSON value at the start of `text` (after whitespace) ends, or None while it is incomplete."""
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return None
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if depth == 0:
                    return index + 1
        elif depth == 0 and index > start and char in ", \n}]":
            return index  # the end of a number, true, false or null
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


@dataclass
class ScannedCall:
    """One call as read so far: its id, name and the arguments text (and how much of it was sent)."""

    id: str
    name: str | None = None
    arguments_start: int | None = None
    arguments: str = ""
    sent: int = 0


@dataclass
class CallScanner:
    """Reads `{"name": ..., <key>: {...}}` objects out of the text after a tool marker, incrementally; whatever lies
    between objects (separators, closing tags, array brackets) is skipped."""

    arguments_key: str
    calls: list[ScannedCall] = field(default_factory=list)
    _buffer: str = ""
    _open: ScannedCall | None = None

    def feed(self, text: str) -> list[dict[str, Any]]:
        """OpenAI's `tool_calls` delta entries for the new text: the id and name first, then argument fragments."""
        self._buffer += text
        deltas: list[dict[str, Any]] = []
        while True:
            if self._open is None:
                start = self._buffer.find("{")
                if start < 0:
                    self._buffer = ""
                    return deltas
                self._buffer = self._buffer[start:]
                self._open = ScannedCall(id=f"call_{uuid.uuid4().hex[:24]}")
                self.calls.append(self._open)
            call, index = self._open, len(self.calls) - 1
            if call.name is None and (match := _NAME.match(self._buffer)):
                call.name = json.loads(match.group(1))
                rest = re.compile(r'\s*,\s*"' + re.escape(self.arguments_key) + r'"\s*:\s*')
                deltas.append({"index": index, "id": call.id, "type": "function",
                               "function": {"name": call.name, "arguments": ""}})
                after = rest.match(self._buffer, match.end())
                call.arguments_start = after.end() if after else None
            elif call.name is not None and call.arguments_start is None:
                after = re.compile(r'\s*,\s*"' + re.escape(self.arguments_key) + r'"\s*:\s*').search(self._buffer)
                call.arguments_start = after.end() if after else None
            if call.arguments_start is not None:
                pending = self._buffer[call.arguments_start:].lstrip()
                end = value_end(pending)
                call.arguments = pending if end is None else pending[:end]
                if len(call.arguments) > call.sent:
                    deltas.append({"index": index, "function": {"arguments": call.arguments[call.sent:]}})
                    call.sent = len(call.arguments)
            end = value_end(self._buffer)
            if end is None:
                return deltas
            self._buffer = self._buffer[end:]
            self._open = None

    def tool_calls(self) -> list[dict[str, Any]]:
        """The calls read, in OpenAI's `message.tool_calls` shape (a cut call keeps the arguments it has)."""
        return [{"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in self.calls if call.name is not None]
