"""Decode attention in row windows: each group of rows attends only to the cache columns its longest row uses.

The running batch is left-padded to its longest row, so one SDPA call over the whole batch also reads every
shorter row's padding: with mixed prompt lengths that was most of the attention work. The batch keeps its rows
sorted by length, longest first (`Batch.merge` sorts, `Batch.select` keeps the order, and every row grows by one
column a step), so rows of similar lengths are neighbours. `row_windows` cuts them into a few contiguous groups
(a new group where the length falls below a ratio of its group's longest) and the `serving_sdpa` attention,
registered with transformers' `AttentionInterface`, runs SDPA once per group on the keys' last `columns` columns.
Prefill, and any call without windows, is plain SDPA.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

Windows = tuple[tuple[int, int, int], ...]  # (start, stop, columns) per group of rows
NAME = "serving_sdpa"
MAX_GROUPS = 4
GROUP_RATIO = 0.75


def windowed_sdpa(module: Any, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                  row_windows: Windows | None = None, **kwargs: Any
                  ) -> tuple[Tensor, None]:
    """SDPA per `(start, stop, columns)` window of rows for a one-token step; plain SDPA otherwise."""
    if row_windows is None or query.shape[2] != 1 or len(row_windows) < 2:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return sdpa_attention_forward(module, q, k, v, mask, **kwargs)[0]

    return in_windows(attend, query, key, value, attention_mask, row_windows), None


def in_windows(attend: Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor], query: Tensor, key: Tensor,
               value: Tensor, mask: Tensor | None, windows: Windows) -> Tensor:
    """`attend(query, key, value, mask)` once per `(start, stop, columns)` window of rows, on the last `columns`
    cache columns only; the outputs stacked back in row order."""
    return torch.cat([attend(query[start:stop], key[start:stop, :, -columns:], value[start:stop, :, -columns:],
                             None if mask is None else mask[start:stop, ..., -columns:])
                      for start, stop, columns in windows])


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


def install(model: Any) -> bool:
    """Switch a model that runs transformers' SDPA attention to `serving_sdpa`; whether it did."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, windowed_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    try:
        model.set_attn_implementation(NAME)
    except Exception:  # a model that refuses custom attention keeps SDPA
        return False
    return getattr(model.config, "_attn_implementation", None) == NAME
