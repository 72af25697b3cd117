"""The batch of sequences that run together: left-padded rows sharing one `GrowingCache` (a `DynamicCache`).

Each row's real tokens are the rightmost `lengths[row]` columns of the cache (rows only ever grow on the right and
are padded on the left), so the 2-D attention mask over the cache is derived from `lengths` instead of stored.
`next_ids` holds the token each row feeds at its next forward: sampled, not yet in the cache.
Rows leave with `select` (the kept rows, less the leading columns that are padding in every row, in one copy)
and a newly prefilled batch joins with `merge` (layer by layer: both caches left-padded to the same width and
stacked along the batch dimension, in one copy). The cache is a `GrowingCache`, whose layers append each step's
keys and values in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from serving.engine.kv_cache import GrowingCache
from serving.engine.sampling import SamplingState
from serving.engine.sequence import Sequence


@dataclass(eq=False)
class Batch:
    """Rows in order, their cache, real token counts and pending tokens; `sampling` is rebuilt when rows change."""

    sequences: list[Sequence]
    cache: GrowingCache
    lengths: Tensor
    next_ids: Tensor
    sampling: SamplingState | None = None

    @classmethod
    def new(cls, sequences: list[Sequence], device: torch.device) -> Batch:
        """A batch of `sequences` with an empty cache (an empty batch when `sequences` is empty)."""
        zeros = torch.zeros(len(sequences), dtype=torch.long, device=device)
        return cls(list(sequences), GrowingCache(), zeros, zeros.clone())

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def width(self) -> int:
        """Columns in the cache, padding included."""
        return self.cache.get_seq_length()

    def cache_mask(self) -> Tensor:
        """The [rows, width] attention mask over the cache: true on each row's real tokens."""
        width = self.width
        columns = torch.arange(width, device=self.lengths.device)
        return columns[None, :] >= (width - self.lengths)[:, None]

    def select(self, keep: list[int]) -> None:
        """Keep only the rows at `keep` (in that order) and cut the columns no remaining row uses."""
        if keep == list(range(len(self.sequences))):
            return
        if not keep:
            self.adopt(Batch.new([], self.lengths.device))
            return
        index = torch.tensor(keep, dtype=torch.long)  # on the CPU: layers may live on different GPUs
        self.sequences = [self.sequences[i] for i in keep]
        self.lengths = self.lengths[index.to(self.lengths.device)]
        self.next_ids = self.next_ids[index.to(self.next_ids.device)]
        self.sampling = None
        unused = self.width - int(self.lengths.max())
        for layer in self.cache.layers:
            layer.select(index, unused)

    def merge(self, other: Batch) -> None:
        """Add the rows of `other` (whose cache is discarded); all rows end up sorted by length, longest first
        (see `attention.row_windows`), which costs nothing more: merging copies every row anyway."""
        if not other.sequences:
            return
        if not self.sequences:
            self.adopt(other)
            self.select(_longest_first(self.lengths))
            return
        width = max(self.width, other.width)
        lengths = torch.cat([self.lengths, other.lengths])
        order = _longest_first(lengths)
        index = torch.tensor(order, dtype=torch.long)
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.merge(theirs, width, index)
        sequences = self.sequences + other.sequences
        self.sequences = [sequences[i] for i in order]
        self.lengths = lengths[index.to(lengths.device)]
        self.next_ids = torch.cat([self.next_ids, other.next_ids])[index.to(lengths.device)]
        self.sampling = None

    def adopt(self, other: Batch) -> None:
        """Become `other`: its rows, cache and tensors."""
        self.sequences, self.cache, self.lengths, self.next_ids = (
            other.sequences, other.cache, other.lengths, other.next_ids)
        self.sampling = None


def _longest_first(lengths: Tensor) -> list[int]:
    """Row indices by decreasing length (ties keep their order)."""
    values = lengths.tolist()
    return sorted(range(len(values)), key=lambda row: -values[row])
