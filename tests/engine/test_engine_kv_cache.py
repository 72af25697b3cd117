"""`GrowingCache`: in-place appends, reallocation with headroom, and row select/merge that keep every row exact."""

from __future__ import annotations

import torch

from serving.engine.kv_cache import MIN_HEADROOM, GrowingCache, GrowingLayer


def states(batch: int, columns: int, start: float = 0.0) -> torch.Tensor:
    values = torch.arange(batch * 2 * columns * 4, dtype=torch.float32) + start
    return values.reshape(batch, 2, columns, 4)


def test_updates_append_in_place_until_the_buffer_is_full():
    cache = GrowingCache()
    keys = states(3, 5)
    cache.update(keys, -keys, 0)
    layer = cache.layers[0]
    assert isinstance(layer, GrowingLayer)
    buffer = layer._key_buffer.data_ptr()
    written = [keys]
    for step in range(MIN_HEADROOM + 10):
        column = states(3, 1, start=1000.0 * (step + 1))
        all_keys, all_values = cache.update(column, -column, 0)
        written.append(column)
        if step < MIN_HEADROOM - 1:
            assert layer._key_buffer.data_ptr() == buffer  # no copy while there is room
    expected = torch.cat(written, dim=-2)
    assert torch.equal(all_keys, expected) and torch.equal(all_values, -expected)
    assert cache.get_seq_length() == 5 + MIN_HEADROOM + 10
    assert layer._key_buffer.data_ptr() != buffer  # it grew once it was full


def test_select_keeps_rows_and_drops_leading_columns():
    cache = GrowingCache()
    keys = states(3, 6)
    cache.update(keys, keys + 1, 0)
    layer = cache.layers[0]
    layer.select(torch.tensor([2, 0]), 2)
    assert torch.equal(layer.keys, keys[[2, 0], :, 2:]) and torch.equal(layer.values, keys[[2, 0], :, 2:] + 1)
    column = states(2, 1, start=-500.0)
    all_keys, _ = cache.update(column, column, 0)
    assert torch.equal(all_keys, torch.cat([keys[[2, 0], :, 2:], column], dim=-2))


def test_merge_left_pads_both_sides_to_the_wider_width():
    mine, theirs = GrowingCache(), GrowingCache()
    a, b = states(1, 3), states(2, 5, start=100.0)
    mine.update(a, a, 0)
    theirs.update(b, b, 0)
    mine.layers[0].merge(theirs.layers[0], 5)
    keys = mine.layers[0].keys
    assert keys.shape == (3, 2, 5, 4)
    assert torch.equal(keys[0, :, 2:], a[0]) and torch.equal(keys[0, :, :2], torch.zeros(2, 2, 4))
    assert torch.equal(keys[1:], b)
    column = states(3, 1, start=7.0)
    all_keys, _ = mine.update(column, column, 0)
    assert torch.equal(all_keys[:, :, 5:], column) and torch.equal(all_keys[1:, :, :5], b)
