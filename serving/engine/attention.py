"""Attention over block tables: each `AttentionGroup` of a step gathers its keys and values from the paged cache
by slot and runs one SDPA call; the outputs go back to the step's token order.

`PagedAttention` is the interface the forwards call; `GatheredSdpa` is its torch-only implementation, which runs
on the CPU (oneDNN's flash kernel under SDPA) and on CUDA (SDPA's fused kernels) alike: the gather costs one copy
of the keys a group reads, far less than the projections on short contexts, and a later Triton kernel can read
the blocks in place behind the same interface. Decode groups are cut by `row_windows`, so rows of similar context
lengths read few padding columns. `install` registers it with transformers' `AttentionInterface`, so a model
without a lean forward runs its own forward over the same cache (see `model_runner`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from serving.engine.batch import ForwardBatch
    from serving.engine.kv_cache import PagedKVCache

Windows = tuple[tuple[int, int, int], ...]  # (start, stop, columns) per group of rows
NAME = "serving_paged"
MAX_GROUPS = 4
GROUP_RATIO = 0.75


def row_windows(lengths: list[int]) -> Windows:
    """Contiguous row groups `(start, stop, columns)` over `lengths` (longest first); `columns` covers the
    longest row of its group. At most `MAX_GROUPS` groups; a group is cut where a row is shorter than
    `GROUP_RATIO` (or a smaller ratio that keeps the count within the maximum) times its group's first row."""
    if not lengths:
        return ()
    ratio = min(GROUP_RATIO, (max(min(lengths), 1) / max(max(lengths), 1)) ** (1 / MAX_GROUPS))
    windows = []
    start, columns = 0, lengths[0]
    for row, length in enumerate(lengths):
        if length > columns:  # out of order: the group must cover it
            columns = length
        elif length < ratio * columns and len(windows) < MAX_GROUPS - 1:
            windows.append((start, row, columns))
            start, columns = row, length
    windows.append((start, len(lengths), columns))
    return tuple(windows)


class PagedAttention(Protocol):
    """Attention of a step's queries over the paged cache (after the step's own keys were written)."""

    def __call__(self, q: Tensor, key_cache: Tensor, value_cache: Tensor, batch: ForwardBatch,
                 scale: float | None = None) -> Tensor:
        """Queries [tokens, heads, head_dim], one layer's cache [slots, kv_heads * head_dim] each; the output
        [tokens, heads, head_dim]."""
        ...


class GatheredSdpa:
    """`PagedAttention` in torch alone: gather each group's keys by slot, one SDPA call per group."""

    def __call__(self, q: Tensor, key_cache: Tensor, value_cache: Tensor, batch: ForwardBatch,
                 scale: float | None = None) -> Tensor:
        tokens, heads, head_dim = q.shape
        parts = []
        for group in batch.groups:
            queries = q.index_select(0, group.query_index).view(group.rows, group.width, heads, head_dim)
            keys = key_cache.index_select(0, group.slots).view(group.rows, group.columns, -1, head_dim)
            values = value_cache.index_select(0, group.slots).view(group.rows, group.columns, -1, head_dim)
            out = F.scaled_dot_product_attention(  # [rows, heads, width, head_dim]
                queries.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=group.mask,
                is_causal=group.mask is None and group.width > 1, scale=scale, enable_gqa=True)
            out = out.transpose(1, 2).reshape(group.rows * group.width, heads, head_dim)
            parts.append(out if group.real is None else out.index_select(0, group.real))
        joined = parts[0] if len(parts) == 1 else torch.cat(parts)
        if batch.query_order is None:
            return joined
        return torch.empty_like(joined).index_copy_(0, batch.query_order, joined)


def paged_attention_forward(module: Any, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                            scaling: float | None = None, serving_step: tuple[ForwardBatch, PagedKVCache] | None = None,
                            **kwargs: Any) -> tuple[Tensor, None]:
    """transformers' attention-function signature over the paged cache: query [1, heads, tokens, head_dim], key
    and value [1, kv_heads, tokens, head_dim] of the step's tokens; the output [1, tokens, heads, head_dim]."""
    if serving_step is None:
        raise RuntimeError("the serving_paged attention runs only inside the engine's forward")
    batch, cache = serving_step
    layer = module.layer_idx
    cache.write(layer, batch, key[0].transpose(0, 1), value[0].transpose(0, 1))
    out = cache.attention(query[0].transpose(0, 1), cache.key_cache[layer], cache.value_cache[layer],
                          cache.on_device(batch, query.device), scale=scaling)
    return out[None], None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    """The mask function of `serving_paged`: masks are the step's (`AttentionGroup.mask`)."""
    return None


def install(model: Any) -> None:
    """Make `model`'s own forward attend through `paged_attention_forward` (raises when it refuses)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(NAME, paged_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, _no_mask)
    model.set_attn_implementation(NAME)
    if getattr(model.config, "_attn_implementation", None) != NAME:
        raise ValueError("the model does not take a custom attention function")
