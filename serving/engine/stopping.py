"""When a sequence ends, with TGI's precedence per step: length, then EOS, then a stop sequence.

- Length: `generated == max_new_tokens`, where `max_new_tokens` is already capped at `max_total_tokens - input_length`
  (so a generation that fills the context also ends with `length`). It wins over everything: when the last allowed
  token is EOS the reason is `length`.
- EOS: the token is one of the model's EOS ids, unless `ignore_eos`, and only once more than `min_new_tokens` tokens
  have been generated (the sampler also suppresses EOS before that, as transformers' `min_new_tokens` does).
- Stop sequence: a stop string occurs in the generated text (special tokens kept, as TGI streams it). Unlike TGI's
  end-anchored regex, a stop string anywhere in the newest text counts, also when the token that completes it
  carries more text after it. The text ends right after the stop string (the first to end, when several do): the
  stop string stays (TGI's routes show it; the OpenAI routes take it off) and the rest of that token's text is
  cut (`excess`), so no text after a stop string is ever returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from serving.messages import FinishReason, StoppingParams


@dataclass
class StopCriteria:
    """One sequence's stopping rules and the tail of its text that a stop string may still complete."""

    max_new_tokens: int
    eos_ids: frozenset[int]
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    tail: str = field(default="", repr=False)
    excess: int = 0  # characters of the last token's text after the stop string that ended the sequence

    @classmethod
    def build(cls, params: StoppingParams, input_length: int, max_total_tokens: int,
              eos_ids: frozenset[int]) -> StopCriteria:
        """The criteria of one request: `max_new_tokens` capped by the context, no EOS ids when `ignore_eos`."""
        room = max_total_tokens - input_length
        max_new = room if params.max_new_tokens is None else min(params.max_new_tokens, room)
        return cls(
            max_new_tokens=max_new,
            eos_ids=frozenset() if params.ignore_eos else eos_ids,
            min_new_tokens=params.min_new_tokens,
            stop=tuple(s for s in params.stop if s),
        )

    def check(self, token_id: int, generated: int, text: str) -> FinishReason | None:
        """The reason to stop after `token_id` (the `generated`-th token, whose new text is `text`), or None."""
        if generated >= self.max_new_tokens:
            return FinishReason.LENGTH
        if token_id in self.eos_ids and generated > self.min_new_tokens:
            return FinishReason.EOS_TOKEN
        if self.stop and text:
            window = self.tail + text
            ends = [window.find(s) + len(s) for s in self.stop if s in window]
            if ends:
                self.excess = len(window) - min(ends)
                return FinishReason.STOP_SEQUENCE
            keep = max(map(len, self.stop)) - 1
            self.tail = window[-keep:] if keep else ""
        return None


    def cut(self, text: str) -> str:
        """`text` (the last token's, or the whole output) without what followed the stop string that ended it."""
        return text[:len(text) - self.excess]


def eos_token_ids(tokenizer: Any, generation_config: Any) -> frozenset[int]:
    """The tokenizer's EOS id together with every EOS id of the model's generation config."""
    ids: set[int] = set()
    for value in (getattr(tokenizer, "eos_token_id", None), getattr(generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, Iterable):
            ids.update(int(v) for v in value)
    return frozenset(ids)
