"""How many prompt tokens a step may add to the running decodes without stalling their streams.

A long prompt prefilled in one step delays every running stream's next token by the whole prefill (a 2,000-token
prompt took 320 ms on the tiny benchmark model, against 4-8 ms for a decode step). The pacer keeps moving
averages of a decode-only step's time, of a decoding row's share of it and of the time one prompt token adds to a
step. A step's decode part (what its decoding rows cost) then lies between two estimates: a decode-only step's time
and the step's rows times a row's share; the smaller one serves where too much would stall the streams, the
larger one where too little would starve the prompts (a step's fixed costs make a row's share of a step of few rows
large, so neither estimate is right for every row count). While sequences are decoding the pacer lets a step carry
the prompt tokens that cost about `SHARE` of the (smaller) decode part per prompt in line times the prompts in line
(k^2 decode steps' worth for k: one arriving prompt costs the streams about one more decode step per step, and a
queue drains faster the longer it is, since every prompt in it waits), at least a block's worth, so that a prompt
always progresses. Before it has measured both, and when nothing decodes, only MAX_BATCH_PREFILL_TOKENS bounds a
step.

Under a steady load of prompts the streams already go through steps that carry many prompt tokens: a step as long
as those makes their inter-token latency no worse, and pacing it only delays the prompts' first tokens. So a step
may also take as long as the slowest steps the streams went through recently (the 99th percentile of the last
`RECENT_STEPS` steps with decodes that the pacer did not bound; bounded steps are left out, so the allowance cannot
feed on itself). With nothing but decodes before a prompt arrives, that percentile is about a decode step, and the
pacing is as above.

Either way a step with decodes carries at most `CEILING` times its (larger) decode part in prompt tokens. A prompt's
first token comes at the end of the step that computes its last chunk, and every request that arrives meanwhile
waits for that step to end: in one step of a full budget (2,048 tokens took 220-300 ms on the tiny model in the
server), each prompt of a queue waits for all of them. Steps of about ten times their decode part end sooner, while
the running rows, which every step computes again, stay about a tenth of each step: at 16 streams of the
benchmark's 8/700-word mix that is about 1,000 tokens a step (one long prompt), at 64 about the full budget. This
estimate counts the step's own rows: a long queue leaves no decode-only steps to measure, and a bound from the last
one, made with few rows, shrank as the queue grew.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

SHARE = 1.0  # prompt-token time a step may add per prompt in line squared, in decode parts
WEIGHT = 0.2  # of the newest measurement in the moving averages
MIN_MEASURED_TOKENS = 32  # prompt tokens a step needs for its per-token cost to count
RECENT_STEPS = 256  # unbounded steps with decodes whose durations say what the streams went through recently
RECENT_QUANTILE = 0.99
CEILING = 10.0  # the most prompt-token time a step with decodes may carry, in decode parts


@dataclass
class StepPacer:
    """Moving averages of step costs, and the prompt tokens a step with decodes may carry."""

    decode_seconds: float | None = None  # a decode-only step
    row_seconds: float | None = None  # a decoding row's share of a decode-only step
    token_seconds: float | None = None  # what one prompt token adds to a step
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_STEPS))  # unbounded steps' seconds

    def record(self, decodes: int, prompt_tokens: int, seconds: float, bounded: bool = False) -> None:
        """A step of `decodes` decoding rows and `prompt_tokens` prompt tokens took `seconds`; `bounded`: the
        pacer lowered its prompt tokens."""
        if decodes and not bounded:
            self.recent.append(seconds)
        if prompt_tokens == 0 and decodes:
            self.decode_seconds = _average(self.decode_seconds, seconds)
            self.row_seconds = _average(self.row_seconds, seconds / decodes)
        elif prompt_tokens >= MIN_MEASURED_TOKENS:
            base = self._decode_part(decodes)[0] if decodes else 0.0
            self.token_seconds = _average(self.token_seconds, max(seconds - base, 0.0) / prompt_tokens)

    def prompt_tokens(self, decodes: int, prompts: int) -> int | None:
        """The prompt tokens a step of `decodes` decoding rows may carry now, with `prompts` in line (waiting or
        prefilling; None: no bound from the pacer yet)."""
        if self.row_seconds is None or not self.token_seconds:
            return None
        low, high = self._decode_part(decodes)
        slowest = sorted(self.recent)[int(RECENT_QUANTILE * (len(self.recent) - 1))] if self.recent else 0.0
        allowed = max(SHARE * low * max(1, prompts) ** 2, slowest - low)
        return int(min(allowed, CEILING * high) / self.token_seconds)

    def _decode_part(self, decodes: int) -> tuple[float, float]:
        """The low and high estimates of what `decodes` decoding rows add to a step (0 before a decode-only step
        was measured)."""
        if self.decode_seconds is None or self.row_seconds is None:
            return 0.0, 0.0
        estimates = decodes * self.row_seconds, self.decode_seconds
        return min(estimates), max(estimates)


def _average(current: float | None, value: float) -> float:
    """The exponential moving average with `value` added."""
    return value if current is None else (1 - WEIGHT) * current + WEIGHT * value
