"""The block pool with no model: allocation as tokens come, sharing, the hash chain, eviction and freeing."""

from __future__ import annotations

import pytest

from serving.engine.block_manager import NULL_BLOCK, BlockManager


def computed(manager: BlockManager, table: list[int], tokens: list[int]) -> None:
    """A forward wrote every token of `tokens`."""
    manager.mark_computed(table, tokens, 0, len(tokens))


def test_allocate_covers_the_tokens_and_free_returns_the_blocks():
    manager = BlockManager(num_blocks=10, block_size=4, prefix_caching=False)
    assert (manager.free_blocks, manager.used_blocks) == (9, 0)  # the null block is never handed out
    table, shared = manager.allocate(list(range(10)))
    assert len(table) == 3 and shared == 0 and NULL_BLOCK not in table
    assert (manager.free_blocks, manager.used_blocks) == (6, 3)
    manager.grow(table, 12)
    assert len(table) == 3  # position 11 still fits the third block
    manager.grow(table, 13)
    assert len(table) == 4 and manager.used_blocks == 4
    manager.free(table)
    assert table == [] and (manager.free_blocks, manager.used_blocks) == (9, 0)


def test_can_allocate_and_can_grow_respect_the_pool():
    manager = BlockManager(num_blocks=4, block_size=4, prefix_caching=False)
    assert manager.can_allocate(list(range(12))) and not manager.can_allocate(list(range(13)))
    assert not manager.can_allocate(list(range(8)), reserve=2)
    table, _ = manager.allocate(list(range(12)))
    assert manager.can_grow(table, 12) and not manager.can_grow(table, 13)
    with pytest.raises(ValueError):
        BlockManager(num_blocks=1, block_size=4)


def test_a_computed_prefix_is_shared_and_the_last_token_is_always_computed():
    manager = BlockManager(num_blocks=20, block_size=4)
    prompt = list(range(100, 110))  # two full blocks and two tokens
    first, shared = manager.allocate(prompt)
    assert shared == 0
    computed(manager, first, prompt)
    second, shared = manager.allocate(prompt + [7, 8])
    assert shared == 8 and second[:2] == first[:2] and second[2] != first[2]
    assert manager.blocks[first[0]].ref_count == 2
    exact, shared = manager.allocate(list(range(100, 108)))  # 8 tokens: the second block holds the last token
    assert shared == 4 and exact[0] == first[0] and exact[1] != first[1]
    assert (manager.stats.queried_tokens, manager.stats.hit_tokens) == (10 + 12 + 8, 8 + 4)


def test_a_block_after_a_different_prefix_never_hits():
    manager = BlockManager(num_blocks=20, block_size=4)
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    table, _ = manager.allocate(prompt)
    computed(manager, table, prompt)
    other = [0, 2, 3, 4, 5, 6, 7, 8, 9]  # the second block's tokens match, the first's do not
    assert manager.cached_blocks(prompt) == 2 and manager.cached_blocks(other) == 0
    other_table, shared = manager.allocate(other)
    assert shared == 0 and not set(other_table) & set(table)


def test_blocks_being_computed_are_shared_but_not_ready():
    manager = BlockManager(num_blocks=20, block_size=4)
    prompt = list(range(9))
    first, _ = manager.allocate(prompt)
    second, shared = manager.allocate(prompt)  # arrives before the first one's forward
    assert shared == 8 and second[:2] == first[:2]
    assert not manager.is_ready(first[0])
    manager.mark_computed(first, prompt, 0, 6)
    assert manager.is_ready(first[0]) and not manager.is_ready(first[1])


def test_freed_blocks_stay_cached_and_are_evicted_least_recently_freed_first():
    manager = BlockManager(num_blocks=5, block_size=2)  # four usable blocks
    a, b = [1, 2, 3], [4, 5, 6]
    table_a, _ = manager.allocate(a)
    computed(manager, table_a, a)
    table_b, _ = manager.allocate(b)
    computed(manager, table_b, b)
    manager.free(table_a)
    manager.free(table_b)
    assert manager.free_blocks == 4 and manager.cached_blocks(a) == 1 and manager.cached_blocks(b) == 1
    revived, shared = manager.allocate(a)  # a's full block comes back into use
    assert shared == 2 and manager.used_blocks == 2
    manager.free(revived)
    fresh, _ = manager.allocate([9, 9, 9, 9, 9, 9, 9])  # four blocks: the clean ones, then the cached ones
    assert len(fresh) == 4 and manager.cached_blocks(a) == 0 and manager.cached_blocks(b) == 0


def test_a_block_freed_before_it_was_computed_loses_its_name():
    manager = BlockManager(num_blocks=10, block_size=4)
    prompt = list(range(9))
    table, _ = manager.allocate(prompt)
    manager.free(table)  # preempted or aborted before its forward
    assert manager.cached_blocks(prompt) == 0
    _, shared = manager.allocate(prompt)
    assert shared == 0


def test_blocks_filled_while_decoding_are_named_for_later_prompts():
    manager = BlockManager(num_blocks=10, block_size=4)
    tokens = [1, 2, 3]
    table, _ = manager.allocate(tokens)
    computed(manager, table, tokens)
    for token in (4, 5, 6):  # decode: each step writes the token before the newest
        tokens.append(token)
        manager.grow(table, len(tokens))
        manager.mark_computed(table, tokens, len(tokens) - 2, len(tokens) - 1)
    assert manager.cached_blocks(tokens + [0]) == 1  # [1, 2, 3, 4] is computed and named
    _, shared = manager.allocate([1, 2, 3, 4, 5])
    assert shared == 4


def test_prefix_caching_off_shares_nothing():
    manager = BlockManager(num_blocks=10, block_size=4, prefix_caching=False)
    prompt = list(range(9))
    table, _ = manager.allocate(prompt)
    computed(manager, table, prompt)
    _, shared = manager.allocate(prompt)
    assert shared == 0 and manager.stats.queried_tokens == 0
