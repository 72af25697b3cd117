"""The inputs of one forward over the paged KV cache: the step's chunks flattened into one row of tokens.

A step feeds a chunk of each scheduled sequence (one token for a decoding sequence, up to the budget for a prompt
being prefilled), all in one forward: every projection runs on the `[tokens, hidden]` matrix of all chunks, with no
padding. Each token's keys and values are written to its slot (`slots`), then attention runs per `AttentionGroup`:
rows whose queries attend together over keys gathered from the cache block by block (a gather of whole blocks copies
12x faster than one by slot on these CPUs). Decoding rows that share a long prefix of blocks (a system prompt)
attend to it once together (and to their own blocks after it in place, where the CPU decode kernel runs); the other
decoding rows are grouped by context length (longest first, cut by `attention.row_windows`, so a short row does not
read a long row's padding), or, where the CPU decode kernel runs, all in one group that it reads over their block
tables in place; prefilling rows by chunk length (`length_groups`), chunks from a prompt's start apart from later
ones (they need no mask), or, where the CPU prefill kernel runs (AVX2 or AVX-512), all in one group that it reads
over their block tables in place. Every group's block index and additive mask are built once here and shared by
every layer. Padding reads the null block, and the columns past a row's length are masked (a block's slots that
its first step does not write are zeroed when it is handed out, so that they hold finite numbers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from serving.engine.attention import row_windows
from serving.engine.sequence import Sequence

if TYPE_CHECKING:
    from serving.engine.lora import LoraStep

PAD_TOLERANCE = 1.25
CASCADE_BLOCKS = 4  # leading blocks that one-token rows must share to attend to them once together
# Decode rows gathered for one SDPA call, times their columns: a larger gather leaves the caches before SDPA reads
# it (32 rows x 736 tokens of the tiny model: 13.9 ms a layer in one call, 8.7 ms in calls of 8 rows).
GATHER_TOKENS = 4096


@dataclass(frozen=True)
class Chunk:
    """The tokens [start, start + count) of a sequence, fed in one step."""

    sequence: Sequence
    start: int
    count: int

    @property
    def samples(self) -> bool:
        """Whether it ends at the sequence's last token, so its last logits choose the next token."""
        return self.start + self.count == len(self.sequence.token_ids)

    @property
    def scores_prompt(self) -> bool:
        """Whether its positions score prompt tokens whose logprobs the request asked for and lacks."""
        logprobs = self.sequence.prompt_logprobs
        return logprobs is not None and len(logprobs) < self.sequence.input_length


@dataclass(frozen=True)
class AttentionGroup:
    """Rows attending together: queries `[rows, width]`, keys `[rows, columns]` gathered block by block (and,
    for rows that share leading blocks, those blocks gathered once for all rows)."""

    rows: int
    width: int
    columns: int  # a whole number of blocks
    query_index: Tensor | None  # [rows * width]: the step token of each query (padding repeats a real one); None
    # when the queries are the consecutive step tokens from `query_start`
    blocks: Tensor  # [rows * columns / block_size]: each row's blocks (after the shared ones; padding: null block)
    mask: Tensor | None  # [rows, 1, width, columns] additive: 0 where visible, -inf elsewhere; None: causal or all
    real: Tensor | None  # [queries]: positions in [rows * width] that are not padding (None: all are)
    shared_blocks: Tensor | None = None  # [blocks]: leading blocks every row attends to (one-token rows only)
    shared_span: tuple[int, int] | None = None  # (first, count) when the shared blocks are consecutive (no gather)
    query_start: int | None = None  # the first step token when the queries are consecutive ones (no gather)
    lengths: Tensor | None = None  # [rows] int32: keys per row when the rows are read in place by the decode
    # kernel (one-token rows; in a cascade, the keys after the shared blocks); `blocks` is then each row's block
    # table (after the shared blocks), int32 [rows, columns / block_size]
    starts: Tensor | None = None  # [chunks] int32: each prompt chunk's first position when the group's queries
    # (`rows` of them, one per token) are prompt chunks read in place by the prefill kernel; `blocks` is then each
    # chunk's block table, int32 [chunks, columns / block_size]
    counts: Tensor | None = None  # [chunks] int32: each of those chunks' tokens


@dataclass(frozen=True)
class ForwardBatch:
    """Everything one forward needs, on the model's device."""

    chunks: list[Chunk]
    input_ids: Tensor  # [tokens]
    positions: Tensor  # [tokens]
    slots: Tensor  # [tokens]: where each token's keys and values are written
    block_count: int  # blocks in the pool (the cache's rows when viewed block by block)
    groups: list[AttentionGroup]
    query_order: Tensor | None  # [tokens]: the step tokens of the groups' real queries, in order (None: 0, 1, ...)
    logits_index: Tensor  # [logit rows]: the step tokens whose logits are computed
    sample_rows: list[int]  # for each sampling chunk, its row in the logits
    prompt_rows: list[tuple[int, int]]  # for each chunk (in order): (first logits row, rows) of its scored positions
    lora: LoraStep | None = None  # the rows on LoRA adapters (None: every row is on the base model)

    @property
    def tokens(self) -> int:
        """Tokens fed."""
        return int(self.input_ids.shape[0])


def block_rows(tables: list[list[int]], first: int, count: int) -> Tensor:
    """Blocks [first, first + count) of each table, the null block past a table's end: [rows * count]."""
    return torch.tensor([(table[first:first + count] + [0] * count)[:count] for table in tables],
                        dtype=torch.long).reshape(-1)


def _additive(visible: Tensor, dtype: torch.dtype) -> Tensor:
    """0 where `visible`, -inf elsewhere."""
    return torch.zeros(visible.shape, dtype=dtype).masked_fill_(~visible, float("-inf"))


def _common_blocks(tables: list[list[int]], limit: int) -> int:
    """How many leading blocks all `tables` share (at most `limit`)."""
    count = 0
    while count < limit and all(table[count] == tables[0][count] for table in tables[1:]):
        count += 1
    return count


def _token_queries(tokens: list[int]) -> tuple[Tensor | None, int | None]:
    """`(query_index, query_start)` of queries at these step tokens: no index when they are consecutive."""
    if tokens == list(range(tokens[0], tokens[0] + len(tokens))):
        return None, tokens[0]
    return torch.tensor(tokens, dtype=torch.long), None


def _decode_group(chunks: list[Chunk], members: list[int], offsets: list[int], block_size: int,
                  dtype: torch.dtype, shared: int = 0, in_place: bool = False) -> AttentionGroup:
    """One-token rows attending together: each reads its blocks after the `shared` leading ones they all share
    (read once for all of them), padded to the longest row, or with `in_place` (a cascade's own blocks) read by
    the decode kernel over their block tables. Built from Python lists (a decode step builds these every step: a
    few tensors each, not a dozen ops)."""
    tables = [chunks[row].sequence.block_table for row in members]
    lengths = [chunks[row].start + 1 - shared * block_size for row in members]
    blocks = -(-max(lengths) // block_size)
    columns = blocks * block_size
    mask = None
    if min(lengths) < columns and not in_place:
        visible = torch.arange(columns)[None, :] < torch.tensor(lengths)[:, None]
        mask = _additive(visible[:, None, None, :], dtype)
    query_index, query_start = _token_queries([offsets[row] for row in members])
    lead = tables[0][:shared]
    own = block_rows(tables, shared, blocks)
    return AttentionGroup(
        rows=len(members), width=1, columns=columns, query_index=query_index,
        blocks=own.to(torch.int32).view(len(members), blocks) if in_place else own, mask=mask, real=None,
        shared_blocks=torch.tensor(lead, dtype=torch.long) if shared else None,
        shared_span=(lead[0], shared) if shared and lead == list(range(lead[0], lead[0] + shared)) else None,
        query_start=query_start, lengths=torch.tensor(lengths, dtype=torch.int32) if in_place else None)


def _decode_groups(chunks: list[Chunk], rows: list[int], offsets: list[int], block_size: int,
                   dtype: torch.dtype, in_place: bool) -> list[AttentionGroup]:
    """Groups of one-token rows. Rows that share at least `CASCADE_BLOCKS` leading blocks attend to them once
    together (a system prompt read once, not once per row); the others, `in_place`, in one group that the decode
    kernel reads over their block tables, else longest context first, in the windows of `row_windows`, each
    window reading only its longest row's blocks, cut into groups of `GATHER_TOKENS`."""
    by_first: dict[int, list[int]] = {}
    for row in rows:
        by_first.setdefault(chunks[row].sequence.block_table[0], []).append(row)
    groups, alone = [], []
    for members in by_first.values():
        limit = min(chunks[row].start for row in members) // block_size  # blocks before every row's own token
        shared = _common_blocks([chunks[row].sequence.block_table for row in members], limit) \
            if len(members) > 1 else 0
        if shared >= CASCADE_BLOCKS:
            groups.append(_decode_group(chunks, members, offsets, block_size, dtype, shared, in_place))
        else:
            alone.extend(members)
    if in_place and alone:
        return [*groups, _decode_group(chunks, sorted(alone), offsets, block_size, dtype, in_place=True)]
    order = sorted(alone, key=lambda row: -(chunks[row].start + 1))
    windows = row_windows([chunks[row].start + 1 for row in order])
    if len(windows) == 1:  # one group: the step's order, so that its queries need no gather
        windows, order = ((0, len(alone), windows[0][2]),), alone
    for begin, end, columns in windows:
        per_group = max(1, GATHER_TOKENS // max(columns, 1))  # so that its gathered keys stay in the caches
        for first in range(begin, end, per_group):
            groups.append(_decode_group(chunks, order[first:min(first + per_group, end)], offsets, block_size, dtype))
    return groups


def _prefill_group(chunks: list[Chunk], members: list[int], offsets: list[int], block_size: int,
                   dtype: torch.dtype) -> AttentionGroup:
    """One group of multi-token rows: queries padded to the longest chunk, keys to the longest context."""
    width = max(chunks[row].count for row in members)
    lengths = [chunks[row].start + chunks[row].count for row in members]
    blocks = -(-max(lengths) // block_size)
    columns = blocks * block_size
    counts = torch.tensor([chunks[row].count for row in members])
    starts = torch.tensor([chunks[row].start for row in members])
    query = torch.arange(width)
    real = query[None, :] < counts[:, None]  # [rows, width]
    first = torch.tensor([offsets[row] for row in members])
    query_index = first[:, None] + torch.minimum(query[None, :], counts[:, None] - 1)
    # rows of one width one after another in the step (`in_group_order`): their queries are a run, no gather
    run = all(offsets[row] == offsets[members[0]] + i * width and chunks[row].count == width
              for i, row in enumerate(members))
    # Rows that all start at position 0 need no mask: SDPA's causal one (top left) is right for every real query,
    # and lets the kernel skip the blocks above the diagonal (half the work); padding queries are dropped anyway.
    mask = None
    if bool(starts.any()):
        own = (starts[:, None] + query[None, :])[:, :, None]  # [rows, width, 1]: each query's position
        keys = torch.arange(columns)[None, None, :]
        visible = (keys <= own) & real[:, :, None] | (keys == 0) & ~real[:, :, None]  # padding queries see one key
        mask = _additive(visible[:, None], dtype)
    return AttentionGroup(
        rows=len(members), width=width, columns=columns,
        query_index=None if run else query_index.reshape(-1),
        blocks=block_rows([chunks[row].sequence.block_table for row in members], 0, blocks),
        mask=mask,
        real=None if bool(real.all()) else real.reshape(-1).nonzero().squeeze(1),
        query_start=offsets[members[0]] if run else None)


def _kernel_prefill_group(chunks: list[Chunk], members: list[int], offsets: list[int],
                          block_size: int) -> AttentionGroup:
    """Prompt chunks read in place by the CPU prefill kernel, all in one group of one-token query rows: no gather,
    no padding and no mask (each query sees the keys up to its own position)."""
    blocks = max(-(-(chunks[row].start + chunks[row].count) // block_size) for row in members)
    query_index, query_start = _token_queries([offsets[row] + i for row in members for i in range(chunks[row].count)])
    return AttentionGroup(
        rows=sum(chunks[row].count for row in members), width=1, columns=blocks * block_size,
        query_index=query_index,
        blocks=block_rows([chunks[row].sequence.block_table for row in members], 0, blocks).to(torch.int32).view(
            len(members), blocks),
        mask=None, real=None, query_start=query_start,
        starts=torch.tensor([chunks[row].start for row in members], dtype=torch.int32),
        counts=torch.tensor([chunks[row].count for row in members], dtype=torch.int32))


def length_groups(lengths: list[int], tolerance: float = PAD_TOLERANCE) -> list[list[int]]:
    """Row indices by increasing length, cut into groups whose padded tokens (rows x longest) stay within
    `tolerance` times their real tokens."""
    groups: list[list[int]] = []
    real = 0
    for row in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and lengths[row] * (len(groups[-1]) + 1) <= tolerance * (real + lengths[row]):
            groups[-1].append(row)
            real += lengths[row]
        else:
            groups.append([row])
            real = lengths[row]
    return groups


def _prefill_rows(chunks: list[Chunk]) -> list[list[int]]:
    """The rows of each prefill group: chunks from a prompt's start apart from later ones (they need no mask, see
    `_prefill_group`), each cut by `length_groups`."""
    groups = []
    for from_start in (True, False):
        prefilling = [row for row, chunk in enumerate(chunks) if chunk.count > 1 and (chunk.start == 0) == from_start]
        groups += [[prefilling[index] for index in members]
                   for members in length_groups([chunks[row].count for row in prefilling])]
    return groups


def in_group_order(chunks: list[Chunk]) -> list[Chunk]:
    """The chunks in the order `build` groups their rows: the decoding ones as given, then the prefill groups of
    `_prefill_rows`; a group of prefill chunks of one length is then one run of the step's tokens, so its queries
    need no gather and its outputs no reordering."""
    return [chunk for chunk in chunks if chunk.count == 1] + [chunks[row] for rows in _prefill_rows(chunks)
                                                              for row in rows]


def build(chunks: list[Chunk], block_size: int, block_count: int, dtype: torch.dtype,
          device: torch.device, in_place: bool = False, prefill_in_place: bool = False) -> ForwardBatch:
    """The forward inputs of a step's chunks (each sequence's `block_table` already covers its chunk); `in_place`:
    decoding rows outside a cascade go to the decode kernel (`AttentionGroup.lengths`); `prefill_in_place`: prompt
    chunks go to the prefill kernel (`AttentionGroup.starts`)."""
    ids: list[int] = []
    positions: list[int] = []
    offsets: list[int] = []
    logits_index: list[int] = []
    sample_rows: list[int] = []
    prompt_rows: list[tuple[int, int]] = []
    slots: list[int] = []
    for chunk in chunks:
        sequence = chunk.sequence
        table = sequence.block_table
        offsets.append(len(ids))
        ids.extend(sequence.token_ids[chunk.start:chunk.start + chunk.count])
        span = range(chunk.start, chunk.start + chunk.count)
        positions.extend(span)
        slots.extend(table[p // block_size] * block_size + p % block_size for p in span)
        if chunk.scores_prompt:
            prompt_rows.append((len(logits_index), chunk.count))
            logits_index.extend(range(offsets[-1], offsets[-1] + chunk.count))
        else:
            prompt_rows.append((len(logits_index), 0))
            if chunk.samples:
                logits_index.append(offsets[-1] + chunk.count - 1)
        if chunk.samples:
            sample_rows.append(len(logits_index) - 1)
    decoding = [row for row, chunk in enumerate(chunks) if chunk.count == 1]
    groups = _decode_groups(chunks, decoding, offsets, block_size, dtype, in_place) if decoding else []
    prefill_rows = _prefill_rows(chunks)
    if prefill_in_place and prefill_rows:
        groups.append(_kernel_prefill_group(chunks, [row for rows in prefill_rows for row in rows], offsets,
                                            block_size))
    else:
        groups += [_prefill_group(chunks, rows, offsets, block_size, dtype) for rows in prefill_rows]
    in_order, first = True, 0  # the groups' queries are the step's tokens in order, each group a run of them
    for group in groups:
        in_order = in_order and group.query_start == first and group.real is None
        first += group.rows * group.width
    order = None if in_order else torch.cat([_queries(g) if g.real is None else _queries(g)[g.real] for g in groups])
    tokens = torch.tensor([ids, positions, slots], dtype=torch.long, device=device)  # one copy for the three
    return ForwardBatch(
        chunks=chunks,
        input_ids=tokens[0],
        positions=tokens[1],
        slots=tokens[2],
        block_count=block_count,
        groups=[_on(group, device) for group in groups],
        query_order=None if order is None else order.to(device),
        logits_index=torch.tensor(logits_index, dtype=torch.long, device=device),
        sample_rows=sample_rows,
        prompt_rows=prompt_rows,
    )


def _queries(group: AttentionGroup) -> Tensor:
    """The step token of each of the group's queries."""
    if group.query_index is not None:
        return group.query_index
    assert group.query_start is not None
    return torch.arange(group.query_start, group.query_start + group.rows * group.width)


def _on(group: AttentionGroup, device: torch.device) -> AttentionGroup:
    """The group with its tensors on `device`."""
    if device.type == "cpu":
        return group
    move = lambda tensor: None if tensor is None else tensor.to(device)  # noqa: E731
    return dataclasses.replace(group, query_index=move(group.query_index), blocks=group.blocks.to(device),
                               mask=move(group.mask), real=move(group.real), shared_blocks=move(group.shared_blocks))


def to_device(batch: ForwardBatch, device: torch.device) -> ForwardBatch:
    """The batch with its index tensors on another device (a layer of a model split over GPUs)."""
    return dataclasses.replace(
        batch, slots=batch.slots.to(device), groups=[_on(group, device) for group in batch.groups],
        query_order=None if batch.query_order is None else batch.query_order.to(device))
