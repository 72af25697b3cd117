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

A chunk that continues a prompt (or follows a cached prefix) also reads the keys before it: its attention spans
them (and the torch path gathers them from their blocks). On the tiny benchmark model a 16-token chunk 1,300 tokens
into a prompt added 5-7 ms to a 7-9 ms decode step with the gather, against 3.5 ms for 48 tokens 500 tokens in (the
CPU prefill kernel, which reads them in place, made the first about 2.5 ms): a per-token cost
alone, learnt on the early chunks, let the later ones overrun, and one slow step, charged to its few tokens, pinned
the chunks at a block for the rest of the prompt. So a step's prompt cost is its tokens times `token_seconds` plus
the keys its chunks read before their starts times `context_seconds`, each learnt from what the other leaves of a
measured step, and the scheduler passes the context of the chunk it is about to plan.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

SHARE = 1.0  # prompt-token time a step may add per prompt in line squared, in decode parts
WEIGHT = 0.2  # of the newest measurement in the moving averages
MIN_MEASURED_TOKENS = 32  # prompt tokens a step needs for its per-token cost to count
MIN_MEASURED_CONTEXT = 256  # keys before its chunks a step needs for its per-key cost to count
RECENT_STEPS = 256  # unbounded steps with decodes whose durations say what the streams went through recently
RECENT_QUANTILE = 0.99
CEILING = 10.0  # the most prompt-token time a step with decodes may carry, in decode parts


@dataclass
class StepPacer:
    """Moving averages of step costs, and the prompt tokens a step with decodes may carry."""

    decode_seconds: float | None = None  # a decode-only step
    row_seconds: float | None = None  # a decoding row's share of a decode-only step
    token_seconds: float | None = None  # what one prompt token adds to a step
    context_seconds: float | None = None  # what one key before a chunk's start adds to a step
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_STEPS))  # unbounded steps' seconds

    def record(self, decodes: int, prompt_tokens: int, seconds: float, bounded: bool = False,
               context: int = 0) -> None:
        """A step of `decodes` decoding rows and `prompt_tokens` prompt tokens, whose chunks read `context` keys
        before their starts, took `seconds`; `bounded`: the pacer lowered its prompt tokens."""
        if decodes and not bounded:
            self.recent.append(seconds)
        if prompt_tokens == 0 and decodes:
            self.decode_seconds = _average(self.decode_seconds, seconds)
            self.row_seconds = _average(self.row_seconds, seconds / decodes)
            return
        prompt_seconds = max(seconds - (self._decode_part(decodes)[0] if decodes else 0.0), 0.0)
        # each cost learns what the other leaves of the step (where steps' keys grow with their tokens, as when
        # every chunk follows the same cached prefix, the split between them drifts, but their sum fits the steps)
        if prompt_tokens >= MIN_MEASURED_TOKENS:
            spent = max(prompt_seconds - context * (self.context_seconds or 0.0), 0.0)
            self.token_seconds = _average(self.token_seconds, spent / prompt_tokens)
        if context >= MIN_MEASURED_CONTEXT and self.token_seconds:
            per_key = max(prompt_seconds - prompt_tokens * self.token_seconds, 0.0) / context
            self.context_seconds = _average(self.context_seconds, per_key)

    def prompt_tokens(self, decodes: int, prompts: int, context: int = 0) -> int | None:
        """The prompt tokens a step of `decodes` decoding rows may carry now, with `prompts` in line (waiting or
        prefilling) and its chunk reading `context` keys before its start (None: no bound from the pacer yet)."""
        if self.row_seconds is None or not self.token_seconds:
            return None
        low, high = self._decode_part(decodes)
        slowest = sorted(self.recent)[int(RECENT_QUANTILE * (len(self.recent) - 1))] if self.recent else 0.0
        allowed = max(SHARE * low * max(1, prompts) ** 2, slowest - low)
        spare = min(allowed, CEILING * high) - context * (self.context_seconds or 0.0)
        return int(max(spare, 0.0) / self.token_seconds)

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
