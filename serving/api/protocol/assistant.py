"""What an assistant's generated tokens mean: a thinking section, text content, and tool calls.

`AssistantReader` takes the tokens one at a time (special tokens included, since markers may be special tokens)
and returns OpenAI delta fields: `reasoning_content` for a `<think>...</think>` section the answer starts with, or
for the answer up to `</think>` when the prompt opened the section (reasoning models only), `content` for text,
`tool_calls` entries once the tool format's marker appears (or, for Llama 3.1's format, when the answer itself
starts as a call does: `{"name": <a tool>, "parameters": `). Text that may be the start of a marker is held back
until it is known not to be one. A whole answer is read the same way, so streams and non-streaming responses agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serving.api.protocol.tools import CallScanner, ToolPlan
from serving.messages import Thinking
from serving.tool_formats import THINK_CLOSE, THINK_OPEN


@dataclass
class AssistantReader:
    """One choice's reading state (`thinking`: where the prompt left the thinking section)."""

    plan: ToolPlan | None
    reasoning: bool
    thinking: Thinking = Thinking.UNOPENED
    scanner: CallScanner | None = None
    _pending: str = ""
    _phase: str = "start"  # start -> (thinking -> start ->) content -> calls
    _thought: bool = False  # a thinking section was read
    reasoning_text: list[str] = field(default_factory=list)
    content_text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.reasoning and self.thinking is Thinking.OPEN:
            self._phase = "thinking"

    def _markers(self) -> tuple[str, ...]:
        """The strings whose appearance changes the phase now."""
        if self._phase == "thinking":
            return (THINK_CLOSE,)
        if self.plan is not None and self.plan.format.marker and self._phase == "content":
            return (self.plan.format.marker,)
        return ()

    def feed(self, text: str, special: bool) -> dict[str, Any]:
        """The delta fields for one token (empty when all of it is held back or is a special token)."""
        if special and text not in (THINK_OPEN, THINK_CLOSE) and not self._is_marker(text):
            return {}
        self._pending += text
        delta: dict[str, Any] = {}
        while self._pending:
            if self._phase == "start":
                stripped = self._pending.lstrip()
                if not stripped:
                    return delta
                if self._may_think() and (stripped.startswith(THINK_OPEN)
                                          or THINK_OPEN.startswith(stripped)):
                    if len(stripped) < len(THINK_OPEN):
                        return delta
                    self._pending, self._phase = stripped[len(THINK_OPEN):], "thinking"
                elif self.plan is not None and not self.plan.format.marker and stripped.startswith("{"):
                    openings = self.plan.call_openings()
                    if any(opening.startswith(stripped) and opening != stripped for opening in openings):
                        return delta  # a call's opening so far: held back until it is known
                    if any(stripped.startswith(opening) for opening in openings):
                        self._phase = "calls"
                        self._pending = stripped
                    else:
                        self._phase = "content"  # an answer that is a JSON object (`response_format`)
                else:
                    self._phase = "content"
                    if self._thought:  # the answer after a thinking section starts at its first visible character
                        self._pending = stripped
                continue
            if self._phase == "calls":
                return self._calls(delta, self._pending)
            markers = self._markers()
            found = [(self._pending.find(m), m) for m in markers if m in self._pending]
            if found:
                at, marker = min(found)
                self._emit(delta, self._pending[:at])
                rest = self._pending[at + len(marker):]
                self._pending = ""
                if self._phase == "thinking":
                    self._phase, self._pending, self._thought = "start", rest, True  # the answer starts afresh
                else:
                    self._phase = "calls"
                    return self._calls(delta, rest)
                continue
            keep = max((len(m) - 1 for m in markers), default=0)
            held = next((n for n in range(min(keep, len(self._pending)), 0, -1)
                         if any(m.startswith(self._pending[-n:]) for m in markers)), 0)
            self._emit(delta, self._pending[:len(self._pending) - held])
            self._pending = self._pending[len(self._pending) - held:]
            return delta
        return delta

    def _may_think(self) -> bool:
        """Whether a `<think>` now opens a thinking section: at the start of an answer whose prompt did not."""
        return self.reasoning and self.thinking is Thinking.UNOPENED and not self._thought

    def _is_marker(self, text: str) -> bool:
        """Whether a special token is the tool format's marker."""
        return self.plan is not None and text == self.plan.format.marker

    def _emit(self, delta: dict[str, Any], text: str) -> None:
        """Add text to the delta's field for the current phase."""
        if not text:
            return
        key = "reasoning_content" if self._phase == "thinking" else "content"
        delta[key] = delta.get(key, "") + text
        (self.reasoning_text if key == "reasoning_content" else self.content_text).append(text)

    def _calls(self, delta: dict[str, Any], text: str) -> dict[str, Any]:
        """Feed the call scanner and add its entries to the delta."""
        assert self.plan is not None
        self._pending = ""
        if self.scanner is None:
            self.scanner = CallScanner(self.plan.format.arguments_key)
        entries = self.scanner.feed(text)
        if entries:
            delta["tool_calls"] = entries
        return delta

    def finish(self) -> dict[str, Any]:
        """The delta fields of whatever was held back, once the answer has ended."""
        delta: dict[str, Any] = {}
        if self._phase != "calls":
            self._emit(delta, self._pending)
        self._pending = ""
        return delta

    def message(self) -> dict[str, Any]:
        """The whole answer as OpenAI's message fields (`content` null when the answer is only calls)."""
        calls = self.scanner.tool_calls() if self.scanner is not None else []
        content = "".join(self.content_text)
        message: dict[str, Any] = {"role": "assistant", "content": None if calls and not content.strip() else content}
        if calls:
            message["tool_calls"] = calls
        if self._thought or self.reasoning_text or self._phase == "thinking":
            message["reasoning_content"] = "".join(self.reasoning_text)
        return message

    def called(self) -> bool:
        """Whether the answer made tool calls."""
        return self.scanner is not None and bool(self.scanner.tool_calls())
