"""Windowed decode attention: row groups, and the same logits as one SDPA call over the padded batch."""

from __future__ import annotations

import torch

from serving.engine.attention import MAX_GROUPS, row_windows, windowed_sdpa


def test_row_windows_cover_every_row_with_its_group_longest():
    assert row_windows([]) == ()
    assert row_windows([10]) == ((0, 1, 10),)
    assert row_windows([100, 98, 90, 40, 39, 5]) == ((0, 3, 100), (3, 5, 40), (5, 6, 5))
    assert row_windows([50, 60, 10]) == ((0, 2, 60), (2, 3, 10))  # an out-of-order row widens its group
    lengths = list(range(400, 0, -7))
    windows = row_windows(lengths)
    assert len(windows) <= MAX_GROUPS
    assert windows[0][0] == 0 and windows[-1][1] == len(lengths)
    for (start, stop, columns), following in zip(windows, windows[1:] + ((len(lengths), None, None),)):
        assert stop == following[0] and all(lengths[row] <= columns for row in range(start, stop))


class _Module:
    num_key_value_groups = 2
    is_causal = True


def test_windowed_attention_equals_one_padded_call():
    torch.manual_seed(0)
    lengths = [12, 11, 5, 2]
    width = 12
    query = torch.randn(4, 4, 1, 8)
    key, value = torch.randn(4, 2, width, 8), torch.randn(4, 2, width, 8)
    mask = (torch.arange(width)[None, :] >= (width - torch.tensor(lengths))[:, None])[:, None, None, :]
    whole, _ = windowed_sdpa(_Module(), query, key, value, mask, scaling=8 ** -0.5)
    windows = row_windows(lengths)
    assert len(windows) > 1
    parts, _ = windowed_sdpa(_Module(), query, key, value, mask, row_windows=windows, scaling=8 ** -0.5)
    assert torch.allclose(whole, parts, atol=1e-6)
