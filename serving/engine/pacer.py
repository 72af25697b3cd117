"""How many prompt tokens a step may add to the running decodes without stalling their streams.

A long prompt prefilled in one step delays every running stream's next token by the whole prefill (a 2,000-token
prompt took 320 ms on the tiny benchmark model, against 4-8 ms for a decode step). The pacer keeps moving
averages of a decode-only step's time and of the time one prompt token adds to a step, and while sequences are
decoding it lets a step carry the prompt tokens that cost about `SHARE` of a decode step, so that no step takes
more than about twice a decode step (at least a block's worth, so a prompt always progresses). Before it has
measured both, and when nothing decodes, only MAX_BATCH_PREFILL_TOKENS bounds a step.

Under a steady load of prompts the streams already go through steps that carry a full prefill budget (the pacer
lets a queue of k prompts have k^2 times its share, see `scheduler`): a step as long as those makes their inter-token
latency no worse, and pacing it only delays the prompts' first tokens. So a step may also take as long as the
slowest steps the streams went through recently: the 99th percentile of the last `RECENT_STEPS` steps with decodes
that the pacer did not bound (bounded steps are left out, so the allowance cannot feed on itself). With nothing but
decodes before a prompt arrives, that percentile is about a decode step, and the pacing is as above.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

SHARE = 1.0  # prompt-token time a step may add, in decode steps
WEIGHT = 0.2  # of the newest measurement in the moving averages
MIN_MEASURED_TOKENS = 32  # prompt tokens a step needs for its per-token cost to count
RECENT_STEPS = 256  # unbounded steps with decodes whose durations say what the streams went through recently
RECENT_QUANTILE = 0.99


@dataclass
class StepPacer:
    """Moving averages of step costs, and the prompt tokens a step with decodes may carry."""

    decode_seconds: float | None = None  # a decode-only step
    token_seconds: float | None = None  # what one prompt token adds to a step
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_STEPS))  # unbounded steps' seconds

    def record(self, decodes: int, prompt_tokens: int, seconds: float, bounded: bool = False) -> None:
        """A step of `decodes` decoding rows and `prompt_tokens` prompt tokens took `seconds`; `bounded`: the
        pacer lowered its prompt tokens."""
        if decodes and not bounded:
            self.recent.append(seconds)
        if prompt_tokens == 0 and decodes:
            self.decode_seconds = _average(self.decode_seconds, seconds)
        elif prompt_tokens >= MIN_MEASURED_TOKENS:
            base = self.decode_seconds if decodes and self.decode_seconds is not None else 0.0
            self.token_seconds = _average(self.token_seconds, max(seconds - base, 0.0) / prompt_tokens)

    def prompt_tokens(self) -> int | None:
        """The prompt tokens a step with decodes may carry now (None: no bound from the pacer yet)."""
        if self.decode_seconds is None or not self.token_seconds:
            return None
        slowest = sorted(self.recent)[int(RECENT_QUANTILE * (len(self.recent) - 1))] if self.recent else 0.0
        return int(max(SHARE * self.decode_seconds, slowest - self.decode_seconds) / self.token_seconds)


def _average(current: float | None, value: float) -> float:
    """The exponential moving average with `value` added."""
    return value if current is None else (1 - WEIGHT) * current + WEIGHT * value
