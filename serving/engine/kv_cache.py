"""A `DynamicCache` whose layers grow in place: no per-step concatenation of the whole cache.

transformers' `DynamicLayer` appends each step's keys and values with `torch.cat`, which copies the whole cache of
every layer at every step: at 64 rows of ~300 columns that was 14% of a decode step on the tiny model. A
`GrowingLayer` keeps its keys and values in buffers with free columns on the right; `keys`/`values` are views of
the used columns, an update writes the new columns in place, and a full buffer is reallocated with headroom
(a quarter of its width, at least `MIN_HEADROOM` columns), so the copying is amortised to a few columns a step.
Rows leave (`select`) and newly prefilled rows join (`merge`, in any row order) through the layer's own methods,
which copy once into a fresh buffer with headroom. Attention reads the views directly (SDPA takes strided
keys and values).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_HEADROOM = 32


def _capacity(width: int) -> int:
    """Buffer columns for `width` used ones."""
    return width + max(MIN_HEADROOM, width // 4)


class GrowingLayer(DynamicLayer):
    """A cache layer with spare columns on the right; `keys`/`values` are views [batch, heads, width, dim]."""

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer: Tensor | None = None
        self._value_buffer: Tensor | None = None

    def _adopt(self, keys: Tensor, values: Tensor, extra: int = 0) -> None:
        """Copy `keys`/`values` into fresh buffers with room for `extra` more columns plus headroom."""
        batch, heads, width, dim = keys.shape
        capacity = _capacity(width + extra)
        self._key_buffer = keys.new_empty(batch, heads, capacity, dim)
        self._value_buffer = values.new_empty(batch, values.shape[1], capacity, values.shape[3])
        self._key_buffer[:, :, :width].copy_(keys)
        self._value_buffer[:, :, :width].copy_(values)
        self.keys = self._key_buffer[:, :, :width]
        self.values = self._value_buffer[:, :, :width]

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Write the new columns after the used ones (reallocating when full); the views of all used columns."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        width = self.get_seq_length()
        new = key_states.shape[-2]
        buffer = self._key_buffer
        if width == 0:
            self._adopt(key_states, value_states)
            return self.keys, self.values
        if buffer is None or buffer.shape[0] != key_states.shape[0] or width + new > buffer.shape[-2] \
                or self.keys.data_ptr() != buffer.data_ptr():  # keys were replaced from outside: adopt them
            self._adopt(self.keys, self.values, new)
        self._key_buffer[:, :, width:width + new].copy_(key_states)
        self._value_buffer[:, :, width:width + new].copy_(value_states)
        self.keys = self._key_buffer[:, :, :width + new]
        self.values = self._value_buffer[:, :, :width + new]
        return self.keys, self.values

    def select(self, index: Tensor, drop_left: int) -> None:
        """Keep the rows at `index` and drop the `drop_left` leading columns (one copy)."""
        if self.get_seq_length() == 0:
            return
        index = index.to(self.keys.device)
        self._adopt(self.keys.index_select(0, index)[:, :, drop_left:],
                    self.values.index_select(0, index)[:, :, drop_left:])

    def batch_select_indices(self, indices: Tensor) -> None:
        self.select(indices, 0)

    def merge(self, other: DynamicLayer, width: int, order: Tensor | None = None) -> None:
        """Add `other`'s rows after these, both left-padded with zeros to `width` columns (one copy); with
        `order`, new row i is row `order[i]` of that concatenation."""
        mine, theirs = self.keys.shape[0], other.keys.shape[0]
        rows = mine + theirs
        capacity = _capacity(width)
        keys = self.keys.new_zeros(rows, self.keys.shape[1], capacity, self.keys.shape[3])
        values = self.values.new_zeros(rows, self.values.shape[1], capacity, self.values.shape[3])
        position = torch.empty(rows, dtype=torch.long)
        position[order if order is not None else torch.arange(rows)] = torch.arange(rows)
        position = position.to(keys.device)
        for source, where in ((self, position[:mine]), (other, position[mine:])):
            columns = source.keys.shape[-2]
            keys[:, :, width - columns:width].index_copy_(0, where, source.keys)
            values[:, :, width - columns:width].index_copy_(0, where, source.values)
        self._key_buffer, self._value_buffer = keys, values
        self.keys, self.values = keys[:, :, :width], values[:, :, :width]


class GrowingCache(DynamicCache):
    """A `DynamicCache` of `GrowingLayer`s (created lazily, one per model layer, as `DynamicCache` does)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer_class_to_replicate = GrowingLayer
