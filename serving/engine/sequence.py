"""One request inside the engine: its token ids, parameters, random generator, decoding state, timings, its LoRA
adapter and its place in the paged KV cache (block table, tokens computed)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from enum import Enum

import torch

from serving.engine.adapter_registry import Adapter
from serving.engine.block_manager import ROOT
from serving.engine.detokenizer import DecodeState
from serving.engine.grammar import Constraint
from serving.engine.stopping import StopCriteria
from serving.messages import SamplingParams


class SequenceStatus(Enum):
    """Lifecycle: WAITING -> RUNNING -> FINISHED (ended normally or failed), or ABORTED by the client at any time."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


def is_sampling(params: SamplingParams) -> bool:
    """TGI's rule (any non-neutral warper samples); a temperature of 0 or less means greedy."""
    return params.sampling and params.temperature > 0


@dataclass(eq=False)
class Sequence:
    """A request's state; `token_ids` holds the prompt followed by every generated token.

    `prompt_logprobs` is None unless the request asked for its prompt's logprobs; the prefill then fills it with
    one value per prompt token (None for the first, which nothing predicts).
    """

    request_id: str
    token_ids: list[int]
    input_length: int
    sampling: SamplingParams
    stop: StopCriteria
    seed: int | None
    generator: torch.Generator | None
    decode: DecodeState
    arrival: float = field(default_factory=time.monotonic)
    status: SequenceStatus = SequenceStatus.WAITING
    scheduled_at: float | None = None
    prompt_logprobs: list[float | None] | None = None
    block_table: list[int] = field(default_factory=list)  # the KV cache blocks of its tokens, in order
    computed: int = 0  # leading tokens whose keys and values are in the cache
    constraint: Constraint | None = None  # the request's grammar, when it has one
    adapter: Adapter | None = None  # the LoRA adapter it runs on (None: the base model), held until it ends
    cache_root: int = ROOT  # where its prompt's block hash chain starts: the adapter's own root, or the base's

    @classmethod
    def create(cls, request_id: str, prompt_ids: list[int], sampling: SamplingParams, stop: StopCriteria,
               prompt_logprobs: bool = False) -> Sequence:
        """A waiting sequence; a sampling one gets a generator seeded with its seed (random 64 bits when unset)."""
        seed = generator = None
        if is_sampling(sampling):
            seed = sampling.seed if sampling.seed is not None else random.getrandbits(64)
            generator = torch.Generator().manual_seed(seed)
        return cls(request_id, list(prompt_ids), len(prompt_ids), sampling, stop, seed, generator,
                   DecodeState.start(len(prompt_ids)), prompt_logprobs=[] if prompt_logprobs else None)

    @property
    def prompt_ids(self) -> list[int]:
        """The (possibly truncated) prompt."""
        return self.token_ids[:self.input_length]

    @property
    def output_ids(self) -> list[int]:
        """The tokens generated so far."""
        return self.token_ids[self.input_length:]

    @property
    def generated(self) -> int:
        """How many tokens were generated so far."""
        return len(self.token_ids) - self.input_length

    @property
    def uncomputed(self) -> int:
        """Tokens still to feed before the next one can be sampled (1 while decoding)."""
        return len(self.token_ids) - self.computed

    @property
    def uses_prefix_cache(self) -> bool:
        """Whether its prompt may skip cached blocks: not while prompt logprobs are still to be computed."""
        return self.prompt_logprobs is None or len(self.prompt_logprobs) >= self.input_length

    def mark_scheduled(self) -> None:
        """The sequence left the queue for its prefill (the first time counts for its timings)."""
        self.status = SequenceStatus.RUNNING
        if self.scheduled_at is None:
            self.scheduled_at = time.monotonic()
