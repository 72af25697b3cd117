"""Per-request logits processing and sampling, vectorised over the batch.

Each batch builds one `SamplingState` when its rows change: every parameter becomes a column tensor, and a stage
runs only when some row needs it, so an all-greedy batch without penalties costs one argmax, plus one logsumexp
when some row's logprobs are read (TGI's routes always show them; OpenAI's only when asked).
Order, per row: repetition penalty (transformers' rule, over prompt and generated tokens), frequency and presence
penalties (OpenAI's rule, over generated tokens), logit bias, EOS suppression before `min_new_tokens` (not for
`ignore_eos` rows, for which EOS ends nothing: vLLM's rule for `min_tokens`), the grammar mask (constrained rows
only: `engine/grammar.py`), temperature.
The reported logprobs (chosen token and `top_n_tokens` alternatives) come from the log-softmax of those scores.
Sampling rows then go through top-k, top-p and typical-p (transformers' warpers, in that order) and draw by
inverse CDF with one uniform number from the row's own `torch.Generator`; greedy rows take the argmax.

A row's draw depends only on its own scores and generator, so a seeded request samples the same tokens alone or
in any batch, as far as the model's forward gives the same logits for a row whatever the batch (on CPU they agree
to about 1e-6, which changes a draw only when its uniform number falls that close to a CDF boundary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence as Seq

import torch
from torch import Tensor

from serving.engine.grammar import GrammarMasks
from serving.engine.sequence import Sequence

NEG_INF = float("-inf")
EXP_FLOOR = -80.0  # e^-80 is still a normal float32


@dataclass
class SampleOutput:
    """The chosen token of each row, its logprob and, when asked for, the best alternatives."""

    ids: Tensor
    logprobs: Tensor | None  # None when no row of the batch reads them
    top_ids: Tensor | None = None
    top_logprobs: Tensor | None = None


@dataclass
class SamplingState:
    """One batch's sampling parameters as tensors; each optional stage is None when no row uses it."""

    sample_rows: Tensor | None
    generators: list[torch.Generator]
    temperature: Tensor | None = None
    top_k: Tensor | None = None
    top_p: Tensor | None = None
    typical_p: Tensor | None = None
    repetition_penalty: Tensor | None = None
    seen: Tensor | None = None
    frequency_penalty: Tensor | None = None
    presence_penalty: Tensor | None = None
    counts: Tensor | None = None
    logit_bias: Tensor | None = None
    min_new_tokens: Tensor | None = None
    generated: Tensor | None = None
    eos_ids: Tensor | None = None
    grammar: GrammarMasks | None = None
    max_top_n: int = 0
    logprobs: bool = True

    @classmethod
    def build(cls, sequences: Seq[Sequence], vocab_size: int, eos_ids: Collection[int],
              device: torch.device | str = "cpu") -> SamplingState:
        """The state of a batch whose rows are `sequences`, in order."""
        params = [s.sampling for s in sequences]
        rows = [i for i, s in enumerate(sequences) if s.generator is not None]
        picked = [params[i] for i in rows]

        def column(values: list[float] | list[int], dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        state = cls(
            sample_rows=column(rows, torch.long) if rows else None,
            generators=[sequences[i].generator for i in rows],
            max_top_n=max((p.top_n_tokens for p in params), default=0),
            logprobs=any(p.logprobs for p in params),
        )
        sampled = set(rows)
        if any(p.temperature != 1.0 for p in picked):
            state.temperature = column([p.temperature if i in sampled else 1.0 for i, p in enumerate(params)])[:, None]
        if any(p.top_k > 0 for p in picked):
            state.top_k = column([p.top_k for p in picked], torch.long)
        if any(p.top_p < 1.0 for p in picked):
            state.top_p = column([p.top_p for p in picked])
        if any(p.typical_p < 1.0 for p in picked):
            state.typical_p = column([p.typical_p for p in picked])
        if any(p.repetition_penalty != 1.0 for p in params):
            state.repetition_penalty = column([p.repetition_penalty for p in params])[:, None]
            state.seen = token_counts([s.token_ids for s in sequences], vocab_size, device) > 0
        if any(p.frequency_penalty != 0.0 or p.presence_penalty != 0.0 for p in params):
            state.frequency_penalty = column([p.frequency_penalty for p in params])[:, None]
            state.presence_penalty = column([p.presence_penalty for p in params])[:, None]
            state.counts = token_counts([s.output_ids for s in sequences], vocab_size, device)
        if any(p.logit_bias for p in params):
            state.logit_bias = torch.zeros(len(params), vocab_size, device=device)
            for i, p in enumerate(params):
                for token, bias in p.logit_bias.items():
                    if 0 <= token < vocab_size:
                        state.logit_bias[i, token] = bias
        minimums = [s.stop.min_new_tokens if s.stop.eos_ids else 0 for s in sequences]  # ignore_eos: EOS is a token
        if eos_ids and any(minimums):
            state.min_new_tokens = column(minimums, torch.long)
            state.generated = column([s.generated for s in sequences], torch.long)
            state.eos_ids = column(sorted(eos_ids), torch.long)
        state.grammar = GrammarMasks.build([s.constraint for s in sequences])
        return state

    def record(self, ids: Tensor) -> None:
        """Count the tokens just chosen (one per row) in the statistics the penalties read; advance the grammars."""
        rows = torch.arange(ids.shape[0], device=ids.device)
        if self.seen is not None:
            self.seen[rows, ids] = True
        if self.counts is not None:
            self.counts[rows, ids] += 1
        if self.generated is not None:
            self.generated += 1
        if self.grammar is not None:
            self.grammar.consume(ids)


def token_counts(rows: list[list[int]], vocab_size: int, device: torch.device | str = "cpu") -> Tensor:
    """A [rows, vocab] float matrix counting each token id of each row."""
    counts = torch.zeros(len(rows), vocab_size, device=device)
    flat = [t for row in rows for t in row]
    if flat:
        row_index = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor([len(r) for r in rows]))
        counts.index_put_((row_index.to(device), torch.tensor(flat, device=device)),
                          torch.ones(len(flat), device=device), accumulate=True)
    return counts


def apply_repetition_penalty(scores: Tensor, penalty: Tensor, seen: Tensor) -> Tensor:
    """transformers' rule on seen tokens: positive scores are divided by the penalty, negative ones multiplied."""
    penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalized, scores)


def top_k_filter(scores: Tensor, top_k: Tensor) -> Tensor:
    """Keep each row's `top_k` best scores (ties with the k-th kept too); 0 keeps everything."""
    k_max = min(int(top_k.max()), scores.shape[-1])
    kth = scores.topk(k_max, dim=-1).values.gather(1, (top_k.clamp(1, k_max) - 1)[:, None])
    kth = torch.where(top_k[:, None] > 0, kth, NEG_INF)
    return scores.masked_fill(scores < kth, NEG_INF)


def top_p_filter(scores: Tensor, top_p: Tensor) -> Tensor:
    """Keep the smallest set of best tokens whose probability reaches `top_p` (always at least one)."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    probs = sorted_scores.softmax(dim=-1)
    remove = ((probs.cumsum(dim=-1) - probs) >= top_p[:, None]) & (top_p[:, None] < 1.0)
    return scores.masked_fill(remove.scatter(1, order, remove), NEG_INF)


def typical_p_filter(scores: Tensor, typical_p: Tensor) -> Tensor:
    """transformers' locally typical sampling: keep the tokens closest to the entropy up to `typical_p` mass."""
    log_probs = scores.log_softmax(dim=-1)
    entropy = -(log_probs * log_probs.exp()).nansum(dim=-1, keepdim=True)
    distance, order = (-log_probs - entropy).abs().sort(dim=-1)
    cumulative = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < typical_p[:, None]).sum(dim=1).clamp(max=scores.shape[-1] - 1)
    remove = (distance > distance.gather(1, last[:, None])) & (typical_p[:, None] < 1.0)
    remove[:, 0] = False
    return scores.masked_fill(remove.scatter(1, order, remove), NEG_INF)


def log_normalizer(scores: Tensor) -> Tensor:
    """Each row's logsumexp, with every term more than `EXP_FLOOR` below the row's best counted at that floor:
    `exp` of -inf (masked tokens) or of an underflowing value takes the CPU's slow path (6-20x), and the error is
    at most vocab * e^-80 ~ 1e-30."""
    best = scores.amax(dim=-1, keepdim=True)
    total = (scores - best).clamp_(min=EXP_FLOOR).exp_().sum(dim=-1).log_() + best.squeeze(1)
    return torch.where(best.squeeze(1).isfinite(), total, best.squeeze(1))


def draw(probs: Tensor, generators: list[torch.Generator]) -> Tensor:
    """One token per row by inverse CDF, with one uniform number in (0, 1] from that row's generator."""
    uniform = torch.tensor([1.0 - float(torch.rand((), generator=g)) for g in generators],
                           dtype=probs.dtype, device=probs.device)
    cdf = probs.cumsum(dim=-1)
    picked = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None]).squeeze(1)
    return picked.clamp(max=probs.shape[-1] - 1)


def process(logits: Tensor, state: SamplingState) -> Tensor:
    """The scores that logprobs are reported from: penalties, bias, EOS suppression, the grammar mask and
    temperature applied. The grammar mask may be written into `logits` itself (the engine's are its own)."""
    scores = logits.float()
    if state.seen is not None and state.repetition_penalty is not None:
        scores = apply_repetition_penalty(scores, state.repetition_penalty, state.seen)
    if state.counts is not None:
        scores = scores - state.counts * state.frequency_penalty - (state.counts > 0) * state.presence_penalty
    if state.logit_bias is not None:
        scores = scores + state.logit_bias
    if state.min_new_tokens is not None:
        suppress = (state.generated < state.min_new_tokens)[:, None]
        scores = _suppress(scores, state.eos_ids, suppress)
    if state.grammar is not None:
        state.grammar.apply_(scores)
    if state.temperature is not None:
        scores = scores / state.temperature
    return scores


def _suppress(scores: Tensor, columns: Tensor, rows: Tensor) -> Tensor:
    """`scores` with `columns` set to -inf in the rows where `rows` [B, 1] is true."""
    scores = scores.clone()
    scores[:, columns] = scores[:, columns].masked_fill(rows, NEG_INF)
    return scores


def sample(logits: Tensor, state: SamplingState) -> SampleOutput:
    """Choose the next token of every row of `logits` [B, V] (which a grammar's mask may overwrite)."""
    scores = process(logits, state)
    ids = scores.argmax(dim=-1)
    if state.sample_rows is not None:
        warped = scores[state.sample_rows]
        if state.top_k is not None:
            warped = top_k_filter(warped, state.top_k)
        if state.top_p is not None:
            warped = top_p_filter(warped, state.top_p)
        if state.typical_p is not None:
            warped = typical_p_filter(warped, state.typical_p)
        ids[state.sample_rows] = draw(warped.softmax(dim=-1), state.generators)
    if not state.logprobs and not state.max_top_n:
        return SampleOutput(ids, None)
    normalizer = log_normalizer(scores)
    output = SampleOutput(ids, scores.gather(1, ids[:, None]).squeeze(1) - normalizer)
    if state.max_top_n:
        values, output.top_ids = scores.topk(min(state.max_top_n, scores.shape[-1]), dim=-1)
        output.top_logprobs = values - normalizer[:, None]
    return output
