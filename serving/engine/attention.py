"""Attention over block tables: each `AttentionGroup` of a step gathers its keys and values from the paged cache
by slot and runs one SDPA call; the outputs go back to the step's token order.

`PagedAttention` is the interface the forwards call; `GatheredSdpa` is its torch-only implementation, which runs
on the CPU (the flash kernel under SDPA) and on CUDA (SDPA's fused kernels) alike: the gather costs one copy of
the keys a group reads, far less than the projections on short contexts, and a later Triton kernel can read the
blocks in place behind the same interface. Decoding rows that share a long prefix of blocks (a system prompt)
read it once for all of them: their queries against the shared keys in one product, then each against its own
blocks, the two softmax parts merged by their maxima and sums (cascade attention); 16 rows after a 1,100-token
system prompt then read 1/16 of the keys they would read apart. Decode groups are cut by `row_windows`, so rows of similar context
lengths read few padding columns. `install` registers it with transformers' `AttentionInterface`, so a model
without a lean forward runs its own forward over the same cache (see `model_runner`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from serving.engine.batch import AttentionGroup, ForwardBatch
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

    in_place: bool  # whether it takes decode groups read over their block tables (`AttentionGroup.lengths`)
    prefill_in_place: bool  # whether it takes prompt chunks read over their block tables (`AttentionGroup.starts`)

    def __call__(self, q: Tensor, key_cache: Tensor, value_cache: Tensor, batch: ForwardBatch,
                 scale: float | None = None) -> Tensor:
        """Queries [tokens, heads, head_dim], one layer's cache [slots, kv_heads * head_dim] each; the output
        [tokens, heads, head_dim]."""
        ...


class GatheredSdpa:
    """`PagedAttention` in torch alone: gather each group's keys block by block, one SDPA call per group; rows
    that share leading blocks attend to them once together (`_cascade`). With `decode_kernel` (CPU only, once
    `cpu_kernels.load` succeeded), the other decoding rows are read in place by `torch.ops.serving.paged_decode`
    instead: no gather, no padding (0.13-0.5x the time of the gathered SDPA call on 8-64 rows of 5-1,200 keys),
    and so are a cascade's own blocks (`paged_decode_lse`, which also returns the log-sum-exps the merge needs):
    gathered and padded to the longest row, a multi-turn chat's own parts cost more than the shared part saved.
    With `prefill_kernel` (where it is also wide enough: `cpu_kernels.fast_prefill`), prompt chunks go to
    `torch.ops.serving.paged_prefill` in one group (`AttentionGroup.starts`): their keys read in place too, 1.5-2.5x
    faster than the flash kernel under SDPA on whole prompts and 1.3-2.1x on chunks after earlier keys, which it
    needed gathered under a mask (`python -m serving.bench.prompt_attention`)."""

    def __init__(self, decode_kernel: bool = False, prefill_kernel: bool = False) -> None:
        self.in_place = decode_kernel
        self.prefill_in_place = prefill_kernel

    def __call__(self, q: Tensor, key_cache: Tensor, value_cache: Tensor, batch: ForwardBatch,
                 scale: float | None = None) -> Tensor:
        tokens, heads, head_dim = q.shape
        blocks = batch.block_count
        block_size = key_cache.shape[0] // blocks
        key_blocks = key_cache.view(blocks, -1)  # [blocks, block_size * kv_heads * head_dim]
        value_blocks = value_cache.view(blocks, -1)
        kernel_scale = scale or head_dim ** -0.5  # the kernels and the cascade take it explicitly
        parts = []
        for group in batch.groups:
            queries = (q[group.query_start:group.query_start + group.rows * group.width] if group.query_index is None
                       else q.index_select(0, group.query_index)).view(group.rows, group.width, heads, head_dim)
            if group.shared_blocks is not None:
                parts.append(_cascade(queries[:, 0], key_cache, value_cache, group, key_blocks, value_blocks,
                                      kernel_scale))
                continue
            if group.starts is not None:  # prompt chunks, [rows, heads, head_dim], read over the block tables
                parts.append(torch.ops.serving.paged_prefill(
                    queries[:, 0], key_cache, value_cache, group.blocks, group.starts, group.counts, block_size,
                    kernel_scale))
                continue
            if group.lengths is not None:  # [rows, heads, head_dim], read over the block tables
                parts.append(torch.ops.serving.paged_decode(
                    queries[:, 0], key_cache, value_cache, group.blocks, group.lengths, block_size, kernel_scale))
                continue
            keys = key_blocks.index_select(0, group.blocks).view(group.rows, group.columns, -1, head_dim)
            values = value_blocks.index_select(0, group.blocks).view(group.rows, group.columns, -1, head_dim)
            out = F.scaled_dot_product_attention(  # [rows, heads, width, head_dim]
                queries.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=group.mask,
                is_causal=group.mask is None and group.width > 1, scale=scale, enable_gqa=True)
            out = out.transpose(1, 2).reshape(group.rows * group.width, heads, head_dim)
            parts.append(out if group.real is None else out.index_select(0, group.real))
        joined = parts[0] if len(parts) == 1 else torch.cat(parts)
        if batch.query_order is None:
            return joined
        return torch.empty_like(joined).index_copy_(0, batch.query_order, joined)


def _attend_with_lse(queries: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None, scale: float,
                     fused: bool | None = None) -> tuple[Tensor, Tensor]:
    """Attention of queries [batch, kv_heads, queries, head_dim] over keys and values [batch, kv_heads, columns,
    head_dim] (strided is fine) under an additive mask: the output and the log-sum-exp of each query's scores. On
    the CPU (`fused` by default there) the flash kernel under SDPA returns both; elsewhere a few ops compute them."""
    if fused if fused is not None else queries.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            queries, keys, values, 0.0, False, attn_mask=mask, scale=scale)
        return out, lse
    scores = torch.matmul(queries, keys.transpose(-1, -2)).float() * scale
    if mask is not None:
        scores = scores + mask
    lse = scores.logsumexp(dim=-1)
    weights = (scores - lse[..., None]).exp()
    return torch.matmul(weights.to(values.dtype), values), lse


def _cascade(queries: Tensor, key_cache: Tensor, value_cache: Tensor, group: AttentionGroup, key_blocks: Tensor,
             value_blocks: Tensor, scale: float) -> Tensor:
    """One-token rows over the blocks they share (read once: all their queries against them in one call) and then
    each over its own blocks (read in place by the decode kernel when the group has `lengths`, else gathered and
    padded), the two softmax parts merged by their log-sum-exps. Queries [rows, heads, head_dim], one layer's
    cache [slots, kv_heads * head_dim] and the same viewed by block; the output [rows, heads, head_dim]."""
    rows, heads, head_dim = queries.shape
    kv_heads = key_cache.shape[1] // head_dim
    per_kv = heads // kv_heads
    assert group.shared_blocks is not None
    if group.shared_span is not None:  # consecutive blocks: a view, no copy
        first, count = group.shared_span
        shared_keys, shared_values = key_blocks[first:first + count], value_blocks[first:first + count]
    else:
        shared_keys = key_blocks.index_select(0, group.shared_blocks)
        shared_values = value_blocks.index_select(0, group.shared_blocks)
    shared_keys = shared_keys.view(-1, kv_heads, head_dim).transpose(0, 1)  # [kv_heads, shared, head_dim]
    shared_values = shared_values.view(-1, kv_heads, head_dim).transpose(0, 1)
    own = queries.view(rows, kv_heads, per_kv, head_dim)
    stacked = own.transpose(0, 1).reshape(1, kv_heads, rows * per_kv, head_dim)  # every row's queries, per kv head
    shared_out, shared_lse = _attend_with_lse(stacked, shared_keys[None], shared_values[None], None, scale)
    shared_out = shared_out.view(kv_heads, rows, per_kv, head_dim).transpose(0, 1)  # [rows, kv, g, head_dim]
    shared_lse = shared_lse.view(kv_heads, rows, per_kv).transpose(0, 1)
    if group.lengths is not None:  # [rows, heads, head_dim] and [rows, heads]
        own_out, own_lse = torch.ops.serving.paged_decode_lse(
            queries, key_cache, value_cache, group.blocks, group.lengths, key_cache.shape[0] // key_blocks.shape[0],
            scale)
        own_out, own_lse = own_out.view(rows, kv_heads, per_kv, head_dim), own_lse.view(rows, kv_heads, per_kv)
    else:
        keys = key_blocks.index_select(0, group.blocks).view(rows, group.columns, kv_heads, head_dim)
        values = value_blocks.index_select(0, group.blocks).view(rows, group.columns, kv_heads, head_dim)
        own_out, own_lse = _attend_with_lse(own, keys.transpose(1, 2), values.transpose(1, 2), group.mask, scale)
    lse = torch.logaddexp(shared_lse, own_lse)
    out = shared_out * (shared_lse - lse).exp()[..., None] + own_out * (own_lse - lse).exp()[..., None]
    return out.to(queries.dtype).reshape(rows, heads, head_dim)


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
