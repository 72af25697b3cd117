"""Incremental detokenization: each new token's text, never a broken UTF-8 character, one batched decode per step.

TGI's `decode_token` scheme: a sequence keeps a prefix offset and a read offset into its ids (prompt then output).
The new text of a step is `decode(ids[prefix:]) - decode(ids[prefix:read])`; while that ends in U+FFFD (an
incomplete UTF-8 sequence, e.g. the first byte tokens of an emoji) it is held back as "" and the offsets stay, so
the next token carries the whole character; but after `MAX_HELD_TOKENS` tokens it goes out as it is (a model
emitting bytes that never form a character would otherwise make every step decode an ever longer window, and
its stream would carry nothing). Decoding starts with up to five prompt tokens as context, so that
tokenizers which drop a leading space at the start of a text (SentencePiece) decode the first token correctly.
Streaming text keeps special tokens; the final `generated_text` skips them. Neither cleans up tokenization spaces,
so the concatenated deltas equal the final decode when no special token is generated.

The step's decode runs on the engine thread: with `TOKENIZERS_PARALLELISM` unset, the Rust backend hands a batch's
windows (two of a few tokens per row) to its rayon thread pool, whose threads then compete for the cores with the
forward's OpenMP threads and the grammar process. Measured on the 2-core development machine (16 rows of the
tiny benchmark model): 0.38-0.43 ms a step with the pool, 0.16-0.18 ms without, and 0.68-0.76 against 0.25-0.27 ms
beside the grammar-mask thread that the grammar process replaced (docs/performance.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

CONTEXT_TOKENS = 5
MAX_HELD_TOKENS = 16  # a UTF-8 character spans at most four byte tokens; a run this long is not one character
REPLACEMENT_CHARACTER = "\ufffd"


@dataclass
class DecodeState:
    """Offsets into a sequence's ids: text up to `read_offset` was emitted, decoding restarts at `prefix_offset`."""

    prefix_offset: int
    read_offset: int

    @classmethod
    def start(cls, input_length: int) -> DecodeState:
        """The state before the first generated token: the last prompt tokens as context."""
        return cls(max(input_length - CONTEXT_TOKENS, 0), input_length)


class Detokenizer:
    """Decodes with the tokenizer's Rust backend (one call per step for the whole batch) or its Python `decode`."""

    def __init__(self, tokenizer: Any) -> None:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # decode on this thread (see the module docstring)
        self._tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._decode_batch: Callable[[list[list[int]], bool], list[str]]
        if backend is not None:
            self._decode_batch = lambda batch, skip: backend.decode_batch(batch, skip_special_tokens=skip)
        else:
            self._decode_batch = lambda batch, skip: [
                tokenizer.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False) for ids in batch
            ]
        self.special_ids = frozenset(tokenizer.all_special_ids)
        self._token_texts: dict[int, str] = {}

    def step(self, sequences: Sequence[tuple[list[int], DecodeState]]) -> list[str]:
        """The new text of each `(ids, state)` whose last id was just appended; advances the states."""
        windows: list[list[int]] = []
        for ids, state in sequences:
            windows.append(ids[state.prefix_offset:state.read_offset])
            windows.append(ids[state.prefix_offset:])
        decoded = self._decode_batch(windows, False)
        texts = []
        for i, (ids, state) in enumerate(sequences):
            prefix_text, full_text = decoded[2 * i], decoded[2 * i + 1]
            complete = not full_text.endswith(REPLACEMENT_CHARACTER) or len(ids) - state.read_offset >= MAX_HELD_TOKENS
            if len(full_text) > len(prefix_text) and complete:
                texts.append(full_text[len(prefix_text):])
                state.prefix_offset, state.read_offset = state.read_offset, len(ids)
            else:
                texts.append("")
        return texts

    def flush(self, ids: list[int], state: DecodeState) -> str:
        """Whatever text is still held back at the end of a sequence, an incomplete character included, so
        that the concatenated deltas of a finished sequence equal its decode."""
        prefix_text, full_text = self._decode_batch(
            [ids[state.prefix_offset:state.read_offset], ids[state.prefix_offset:]], False)
        state.prefix_offset = state.read_offset = len(ids)
        return full_text[len(prefix_text):]

    def token_texts(self, token_ids: Sequence[int]) -> list[str]:
        """Each token decoded on its own with special tokens kept (memoised: alternatives repeat a lot)."""
        missing = sorted({t for t in token_ids if t not in self._token_texts})
        if missing:
            self._token_texts.update(zip(missing, self._decode_batch([[t] for t in missing], False)))
        return [self._token_texts[t] for t in token_ids]

    def final_text(self, token_ids: list[int]) -> str:
        """The whole generated text with special tokens skipped."""
        return self._decode_batch([token_ids], True)[0]
