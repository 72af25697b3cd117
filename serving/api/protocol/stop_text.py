"""OpenAI's stop strings: the text ends before the stop string, and a stream never sends what could become one.

The engine ends a sequence right after the first stop string to end in its text (TGI's routes show it). The OpenAI
routes take that stop string off; while streaming they hold back the end of the text that could still grow into a
stop string, and send it once it no longer can (or when the sequence ends for another reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from serving.messages import FinishReason


def without_stop(text: str, reason: FinishReason, stops: Sequence[str]) -> str:
    """The text without the stop string that ended it (the longest one it ends with)."""
    if reason is not FinishReason.STOP_SEQUENCE:
        return text
    matched = max((stop for stop in stops if stop and text.endswith(stop)), key=len, default="")
    return text[:len(text) - len(matched)]


@dataclass
class StopHoldback:
    """One streamed choice's text that is not sent yet because a stop string may still start in it."""

    stops: tuple[str, ...]
    held: str = field(default="")

    def release(self, text: str, reason: FinishReason | None) -> str:
        """What to send now of the held text followed by the new `text` (`reason`: the sequence ended)."""
        pending = self.held + text
        if reason is not None:
            self.held = ""
            return without_stop(pending, reason, self.stops)
        keep = max((size for stop in self.stops for size in range(min(len(stop) - 1, len(pending)), 0, -1)
                    if pending.endswith(stop[:size])), default=0)
        self.held = pending[len(pending) - keep:] if keep else ""
        return pending[:len(pending) - keep]
