"""The paged KV cache's bookkeeping: fixed-size blocks, one block table per sequence, reference counts and the
prefix cache. Pure Python: no tensors, so it is tested without a model.

A sequence's token at position p lives in slot `block_table[p // block_size] * block_size + p % block_size`.
Blocks are taken as tokens are made (`allocate` covers the tokens a sequence has, `grow` the next one), never
reserved for `max_new_tokens`. Block 0 is the null block: never handed out, the slot that padding reads.

Prefix caching: a full block is named by a hash of its tokens chained with the hash of the block before it, so a
block whose tokens match but whose earlier prefix differs has another name. `allocate` walks a new prompt's full
blocks (all but the last token, which must be computed for the first logits) and shares every block already
known by name: its reference count goes up. A chain starts from a root: `ROOT` for the base model, a LoRA
adapter's own per registration (its keys and values differ), so that prompts share blocks only on the same weights. A missed block is registered under its name at once, before it is
computed, so that identical prompts arriving together share it too; a block is `ready` once a forward has written
it, and until then sharers wait for it (`Scheduler`) rather than compute it twice. A block whose last reference
goes keeps its name while it is ready, in least-recently-freed order, and is evicted (renamed) only when a fresh
block is needed and no clean one is left. The stored tokens are compared on every hit, so a hash collision never
shares a wrong block.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

NULL_BLOCK = 0
ROOT = 0  # the parent name of a first block


@dataclass(slots=True)
class Block:
    """One block of `block_size` slots: who uses it and, when full, its name and tokens."""

    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()
    ready: bool = False  # its slots hold computed keys and values for `token_ids`


@dataclass
class CacheStats:
    """Prefix-cache counters: prompt tokens looked up and found, since the start."""

    queried_tokens: int = 0
    hit_tokens: int = 0


@dataclass
class BlockManager:
    """A pool of `num_blocks` blocks (the null block included) of `block_size` tokens each."""

    num_blocks: int
    block_size: int
    prefix_caching: bool = True
    blocks: dict[int, Block] = field(init=False)  # every block handed out so far (made on first use)
    stats: CacheStats = field(default_factory=CacheStats)
    _unused: int = field(init=False)  # blocks from this id on were never handed out
    _clean: list[int] = field(init=False)  # free blocks without a name, handed out before
    _cached: OrderedDict[int, None] = field(init=False)  # free blocks with a name, least recently freed first
    _by_hash: dict[int, int] = field(init=False)
    _fresh_ids: list[int] = field(init=False)  # handed out since the last `take_fresh`

    def __post_init__(self) -> None:
        if self.num_blocks < 2:
            raise ValueError("a block pool needs at least one block besides the null block")
        self.blocks = {}
        self._unused = NULL_BLOCK + 1
        self._clean = []
        self._cached = OrderedDict()
        self._by_hash = {}
        self._fresh_ids = []

    @property
    def free_blocks(self) -> int:
        """Blocks no sequence uses (named ones included: they are reusable)."""
        return self.num_blocks - self._unused + len(self._clean) + len(self._cached)

    @property
    def used_blocks(self) -> int:
        """Blocks some sequence uses."""
        return self.num_blocks - 1 - self.free_blocks

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold `tokens` tokens."""
        return -(-tokens // self.block_size)

    @staticmethod
    def chain_hash(parent: int, tokens: tuple[int, ...]) -> int:
        """The name of a full block of `tokens` after the block named `parent` (`ROOT` for the first block); ints
        and tuples of ints hash the same in every process."""
        return hash((parent, tokens))

    def cached_blocks(self, token_ids: list[int], root: int = ROOT) -> int:
        """How many of the leading full blocks of `token_ids` (all but the last token) the cache holds now."""
        return len(self._hits(token_ids, root))

    def _hits(self, token_ids: list[int], root: int) -> list[int]:
        """The blocks that `allocate` would share for `token_ids` chained from `root`."""
        if not self.prefix_caching:
            return []
        parent, hits = root, []
        for start in range(0, len(token_ids) - self.block_size, self.block_size):
            tokens = tuple(token_ids[start:start + self.block_size])
            parent = self.chain_hash(parent, tokens)
            block_id = self._by_hash.get(parent)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
        return hits

    def can_allocate(self, token_ids: list[int], reserve: int = 0, use_cache: bool = True,
                     root: int = ROOT) -> bool:
        """Whether `allocate` would find blocks for `token_ids` and leave `reserve` free ones (a shared block
        that nobody uses counts as taken from the free ones too)."""
        hits = self._hits(token_ids, root) if use_cache else []
        revived = sum(1 for block_id in hits if self.blocks[block_id].ref_count == 0)
        return self.blocks_for(len(token_ids)) - len(hits) + revived + reserve <= self.free_blocks

    def allocate(self, token_ids: list[int], use_cache: bool = True, root: int = ROOT) -> tuple[list[int], int]:
        """A block table for `token_ids` (shared blocks first) and how many leading tokens it shares, chained from
        `root`; each full block is named (shared or registered). `use_cache` False computes every token (its
        blocks are still named for others)."""
        table: list[int] = []
        parent = root
        shared = 0
        sharing = use_cache and self.prefix_caching
        for index in range(self.blocks_for(len(token_ids))):
            start = index * self.block_size
            tokens = tuple(token_ids[start:start + self.block_size])
            full = len(tokens) == self.block_size
            block_id = None
            if full and self.prefix_caching:
                parent = self.chain_hash(parent, tokens)
                hit = self._by_hash.get(parent)
                if sharing and start + self.block_size < len(token_ids) and hit is not None \
                        and self.blocks[hit].token_ids == tokens:
                    block_id = self._take(hit)
                    shared += self.block_size
                else:
                    sharing = False
            if block_id is None:
                block_id = self._fresh()
                if full and self.prefix_caching and parent not in self._by_hash:
                    self._name(block_id, parent, tokens)
            table.append(block_id)
        if use_cache and self.prefix_caching:
            self.stats.queried_tokens += len(token_ids)
            self.stats.hit_tokens += shared
        return table, shared

    def can_grow(self, table: list[int], tokens: int) -> bool:
        """Whether a sequence with `table` can hold `tokens` tokens (at most one block more is needed)."""
        return self.blocks_for(tokens) <= len(table) or self.free_blocks > 0

    def grow(self, table: list[int], tokens: int) -> None:
        """Add blocks to `table` until it holds `tokens` tokens (call `can_grow` first)."""
        while len(table) * self.block_size < tokens:
            table.append(self._fresh())

    def take_fresh(self) -> list[int]:
        """The blocks handed out unnamed since the last call (their slots hold what an earlier owner wrote)."""
        fresh, self._fresh_ids = self._fresh_ids, []
        return fresh

    def is_ready(self, block_id: int) -> bool:
        """Whether the block's slots are computed."""
        return self.blocks[block_id].ready

    def mark_computed(self, table: list[int], token_ids: list[int], before: int, after: int,
                      root: int = ROOT) -> None:
        """A forward wrote the slots of positions [before, after): the blocks it completed are ready, and named
        (when they were not yet: blocks filled while decoding) so that later prompts can share them."""
        size = self.block_size
        for index in range(before // size, after // size):
            block = self.blocks[table[index]]
            if block.ready:
                continue
            block.ready = True
            if block.hash is None and self.prefix_caching:
                tokens = tuple(token_ids[index * size:(index + 1) * size])
                parent = self.blocks[table[index - 1]].hash if index else root
                if parent is None:
                    continue  # the chain is broken (a block whose name was taken): nothing after it is named
                name = self.chain_hash(parent, tokens)
                if name not in self._by_hash:
                    self._name(block.block_id, name, tokens)

    def free(self, table: list[int]) -> None:
        """Drop a sequence's references; a block nobody uses stays cached when it is named and ready."""
        for block_id in reversed(table):  # the table's tail is evicted first
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count > 0:
                continue
            if block.hash is not None and block.ready:
                self._cached[block_id] = None
            else:
                self._forget(block)
                self._clean.append(block_id)
        table.clear()

    def _take(self, block_id: int) -> int:
        """Share a named block: one reference more (a cached free block comes back into use)."""
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self._cached[block_id]
        block.ref_count += 1
        return block_id

    def _fresh(self) -> int:
        """An unnamed block with one reference: a clean one (freed, else never used), else the least recently freed
        cached one."""
        if self._clean:
            block_id = self._clean.pop()
        elif self._unused < self.num_blocks:
            block_id = self._unused
            self._unused += 1
            self.blocks[block_id] = Block(block_id)
        else:
            block_id, _ = self._cached.popitem(last=False)
            self._forget(self.blocks[block_id])
        block = self.blocks[block_id]
        block.ref_count, block.ready = 1, False
        self._fresh_ids.append(block_id)
        return block_id

    def _name(self, block_id: int, name: int, tokens: tuple[int, ...]) -> None:
        """Register a block under its chain hash."""
        block = self.blocks[block_id]
        block.hash, block.token_ids = name, tokens
        self._by_hash[name] = block_id

    def _forget(self, block: Block) -> None:
        """Drop a block's name and contents."""
        if block.hash is not None and self._by_hash.get(block.hash) == block.block_id:
            del self._by_hash[block.hash]
        block.hash, block.token_ids, block.ready = None, (), False
