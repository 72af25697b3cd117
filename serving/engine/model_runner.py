"""Forward passes over a `Batch`: prefill of new prompts (chunked when alone and long) and one decode step.

Every forward gets the 2-D attention mask (cache columns plus the new ones), explicit position ids (each row
counts only its real tokens) and the batch's `DynamicCache`, and keeps only the last position's logits when the
model supports `logits_to_keep`, except for a prefill in which some row asked for its prompt's logprobs: that
forward keeps every position, and each asking row's logprobs are gathered from its raw logits (position i scores
prompt token i + 1, so a chunk's last position scores the first token of the next chunk). Callers hold
`torch.inference_mode()`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache

from serving.engine import attention
from serving.engine.batch import Batch
from serving.engine.lean_forward import LeanForward


class ModelRunner:
    """Runs the model for the engine; knows nothing about requests beyond their token ids."""

    def __init__(self, model: Any, pad_id: int, lean: bool = True) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device: torch.device = model.get_input_embeddings().weight.device
        parameters = inspect.signature(model.forward).parameters
        self._last_only: dict[str, int] = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"  # remote code: older name
        self.lean = LeanForward.build(model) if lean else None  # Llama-family models: the same forward, fewer ops
        # decode attention per group of similar-length rows (the lean forward does it itself)
        self._windowed = self.lean is not None or attention.install(model)

    def prefill(self, batch: Batch, budget: int) -> Tensor | None:
        """Feed the next prompt tokens of a batch being prefilled; the last logits once all prompts are in.

        Several prompts go in one left-padded forward (the engine groups prompts of similar lengths, since
        padding is wasted work, and the scheduler kept them within `budget`); a single prompt goes `budget`
        tokens per call, continuing from what its cache already holds.
        """
        prompts = [s.token_ids for s in batch.sequences]  # a retried sequence resumes
        done = batch.width
        start = 0 if len(prompts) > 1 else done
        chunks = prompts if len(prompts) > 1 else [prompts[0][done:done + budget]]
        width = max(map(len, chunks))
        input_ids = torch.tensor([[self.pad_id] * (width - len(c)) + c for c in chunks], device=self.device)
        new_mask = torch.tensor([[False] * (width - len(c)) + [True] * len(c) for c in chunks], device=self.device)
        asking = any(s.prompt_logprobs is not None for s in batch.sequences)
        logits = self._forward(batch, input_ids, new_mask, every_position=asking)
        if asking:
            self._record_prompt_logprobs(batch, logits, start, [len(c) for c in chunks])
        complete = len(prompts) > 1 or done + len(chunks[0]) == len(prompts[0])
        return logits[:, -1, :] if complete else None

    def decode(self, batch: Batch) -> Tensor:
        """One step for every row: feed its pending token, return the next logits [rows, vocab]."""
        new_mask = torch.ones(len(batch), 1, dtype=torch.bool, device=self.device)
        extra = {"row_windows": attention.row_windows([n + 1 for n in batch.lengths.tolist()])} \
            if self._windowed else {}
        return self._forward(batch, batch.next_ids[:, None], new_mask, **extra)[:, -1, :]

    def _forward(self, batch: Batch, input_ids: Tensor, new_mask: Tensor, every_position: bool = False,
                 **extra: Any) -> Tensor:
        """Append `input_ids` (real where `new_mask`) to the batch's cache; the logits [rows, columns, vocab] of the
        last column only, or of every column when `every_position`."""
        attention_mask = torch.cat([batch.cache_mask(), new_mask], dim=1)
        position_ids = (batch.lengths[:, None] + new_mask.cumsum(dim=1) - 1).clamp(min=0)
        if self.lean is not None:
            logits = self.lean(input_ids, attention_mask, position_ids, batch.cache, every_position, **extra)
        else:
            keep = {"logits_to_keep": 0} if every_position and self._last_only else self._last_only
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                use_cache=True, **{self._cache_argument: batch.cache}, **keep, **extra).logits
        batch.lengths = batch.lengths + new_mask.sum(dim=1)
        return logits

    @staticmethod
    def _record_prompt_logprobs(batch: Batch, logits: Tensor, start: int, lengths: list[int]) -> None:
        """Append to each asking row's `prompt_logprobs` the logprobs of the prompt tokens its chunk's positions
        predict; `start` is where the chunks begin in their prompts, `lengths` their real token counts."""
        width = logits.shape[1]
        for row, (sequence, length) in enumerate(zip(batch.sequences, lengths)):
            if sequence.prompt_logprobs is None:
                continue
            targets = sequence.prompt_ids[start + 1:start + length + 1]
            if start == 0:
                sequence.prompt_logprobs.append(None)
            if not targets:
                continue
            scores = logits[row, width - length:width - length + len(targets)].float()
            index = torch.tensor(targets, device=scores.device)[:, None]
            values = scores.gather(1, index).squeeze(1) - scores.logsumexp(dim=-1)
            sequence.prompt_logprobs.extend(values.tolist())

    def warmup(self) -> None:
        """One forward of a single token, which proves the model runs and primes its kernels."""
        input_ids = torch.tensor([[self.pad_id]], device=self.device)
        if self.lean is not None:
            mask = torch.ones_like(input_ids, dtype=torch.bool)
            self.lean(input_ids, mask, torch.zeros_like(input_ids), DynamicCache())
        else:
            self.model(input_ids=input_ids, use_cache=True, **{self._cache_argument: DynamicCache()},
                       **self._last_only)
