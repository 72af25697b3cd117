"""The inputs of one forward over the paged KV cache: the step's chunks flattened into one row of tokens.

A step feeds a chunk of each scheduled sequence (one token for a decoding sequence, up to the budget for a prompt
being prefilled), all in one forward: every projection runs on the `[tokens, hidden]` matrix of all chunks, with
no padding. Each token's keys and values are written to its slot (`slots`), then attention runs per
`AttentionGroup`: rows whose queries go in one SDPA call over keys gathered from the cache by slot. Decoding rows
are grouped by context length (longest first, cut by `attention.row_windows`, so a short row does not read a long
row's padding); prefilling rows by chunk length (`length_groups`). Every group's gather index and additive mask
are built once here and shared by every layer. Padding reads the null slot 0, which holds zeros, and is masked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from serving.engine.attention import row_windows
from serving.engine.sequence import Sequence

PAD_TOLERANCE = 1.25


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
    """Rows attending in one SDPA call: queries `[rows, width]`, keys `[rows, columns]` gathered by slot."""

    rows: int
    width: int
    columns: int
    query_index: Tensor  # [rows * width]: the step token of each query (padding repeats a real one)
    slots: Tensor  # [rows * columns]: the cache slot of each key column (padding: the null slot)
    mask: Tensor | None  # [rows, 1, width, columns] additive: 0 where visible, -inf elsewhere; None: all visible
    real: Tensor | None  # [queries]: positions in [rows * width] that are not padding (None: all are)


@dataclass(frozen=True)
class ForwardBatch:
    """Everything one forward needs, on the model's device."""

    chunks: list[Chunk]
    input_ids: Tensor  # [tokens]
    positions: Tensor  # [tokens]
    slots: Tensor  # [tokens]: where each token's keys and values are written
    groups: list[AttentionGroup]
    query_order: Tensor | None  # [tokens]: the step tokens of the groups' real queries, in order (None: 0, 1, ...)
    logits_index: Tensor  # [logit rows]: the step tokens whose logits are computed
    sample_rows: list[int]  # for each sampling chunk, its row in the logits
    prompt_rows: list[tuple[int, int]]  # for each chunk (in order): (first logits row, rows) of its scored positions

    @property
    def tokens(self) -> int:
        """Tokens fed."""
        return int(self.input_ids.shape[0])


def slot_table(tables: list[list[int]], lengths: list[int], block_size: int, columns: int) -> Tensor:
    """The slots of each row's first `lengths[row]` positions, padded with the null slot to `columns`: [rows,
    columns]."""
    width = -(-columns // block_size)
    padded = torch.tensor([table[:width] + [0] * (width - len(table[:width])) for table in tables], dtype=torch.long)
    slots = (padded[:, :, None] * block_size + torch.arange(block_size)).view(len(tables), -1)[:, :columns]
    return slots.masked_fill(torch.arange(columns)[None, :] >= torch.tensor(lengths)[:, None], 0)


def _additive(visible: Tensor, dtype: torch.dtype) -> Tensor:
    """0 where `visible`, -inf elsewhere."""
    return torch.zeros(visible.shape, dtype=dtype).masked_fill_(~visible, float("-inf"))


def _decode_groups(chunks: list[Chunk], rows: list[int], offsets: list[int], block_size: int,
                   dtype: torch.dtype) -> list[AttentionGroup]:
    """Groups of one-token rows, longest context first, each reading only its longest row's columns."""
    order = sorted(rows, key=lambda row: -(chunks[row].start + 1))
    lengths = [chunks[row].start + 1 for row in order]
    groups = []
    for begin, end, columns in row_windows(lengths):
        members = order[begin:end]
        slots = slot_table([chunks[row].sequence.block_table for row in members], lengths[begin:end], block_size,
                           columns)
        ragged = min(lengths[begin:end]) < columns
        visible = torch.arange(columns)[None, :] < torch.tensor(lengths[begin:end])[:, None]
        groups.append(AttentionGroup(
            rows=len(members), width=1, columns=columns,
            query_index=torch.tensor([offsets[row] for row in members], dtype=torch.long),
            slots=slots.reshape(-1), mask=_additive(visible[:, None, None, :], dtype) if ragged else None,
            real=None))
    return groups


def _prefill_group(chunks: list[Chunk], members: list[int], offsets: list[int], block_size: int,
                   dtype: torch.dtype) -> AttentionGroup:
    """One group of multi-token rows: queries padded to the longest chunk, keys to the longest context."""
    width = max(chunks[row].count for row in members)
    lengths = [chunks[row].start + chunks[row].count for row in members]
    columns = max(lengths)
    slots = slot_table([chunks[row].sequence.block_table for row in members], lengths, block_size, columns)
    counts = torch.tensor([chunks[row].count for row in members])
    starts = torch.tensor([chunks[row].start for row in members])
    query = torch.arange(width)
    real = query[None, :] < counts[:, None]  # [rows, width]
    first = torch.tensor([offsets[row] for row in members])
    query_index = first[:, None] + torch.minimum(query[None, :], counts[:, None] - 1)
    own = (starts[:, None] + query[None, :])[:, :, None]  # [rows, width, 1]: each query's position
    keys = torch.arange(columns)[None, None, :]
    visible = (keys <= own) & real[:, :, None] | (keys == 0) & ~real[:, :, None]  # padding queries see one key
    causal_only = len(members) == 1 and int(starts[0]) == 0
    return AttentionGroup(
        rows=len(members), width=width, columns=columns, query_index=query_index.reshape(-1),
        slots=slots.reshape(-1), mask=None if causal_only else _additive(visible[:, None], dtype),
        real=None if bool(real.all()) else real.reshape(-1).nonzero().squeeze(1))


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


def build(chunks: list[Chunk], block_size: int, dtype: torch.dtype, device: torch.device) -> ForwardBatch:
    """The forward inputs of a step's chunks (each sequence's `block_table` already covers its chunk)."""
    ids: list[int] = []
    positions: list[int] = []
    offsets: list[int] = []
    logits_index: list[int] = []
    sample_rows: list[int] = []
    prompt_rows: list[tuple[int, int]] = []
    tables: list[list[int]] = []
    for chunk in chunks:
        sequence = chunk.sequence
        offsets.append(len(ids))
        ids.extend(sequence.token_ids[chunk.start:chunk.start + chunk.count])
        positions.extend(range(chunk.start, chunk.start + chunk.count))
        tables.append(sequence.block_table)
        if chunk.scores_prompt:
            prompt_rows.append((len(logits_index), chunk.count))
            logits_index.extend(range(offsets[-1], offsets[-1] + chunk.count))
        else:
            prompt_rows.append((len(logits_index), 0))
            if chunk.samples:
                logits_index.append(offsets[-1] + chunk.count - 1)
        if chunk.samples:
            sample_rows.append(len(logits_index) - 1)
    position_tensor = torch.tensor(positions, dtype=torch.long)
    token_row = torch.repeat_interleave(torch.arange(len(chunks)), torch.tensor([c.count for c in chunks]))
    width = max(len(table) for table in tables)
    padded = torch.tensor([table + [0] * (width - len(table)) for table in tables], dtype=torch.long)
    slots = padded[token_row, position_tensor // block_size] * block_size + position_tensor % block_size
    decoding = [row for row, chunk in enumerate(chunks) if chunk.count == 1]
    prefilling = [row for row, chunk in enumerate(chunks) if chunk.count > 1]
    groups = _decode_groups(chunks, decoding, offsets, block_size, dtype) if decoding else []
    for members in length_groups([chunks[row].count for row in prefilling]):
        groups.append(_prefill_group(chunks, [prefilling[i] for i in members], offsets, block_size, dtype))
    order = torch.cat([g.query_index if g.real is None else g.query_index[g.real] for g in groups])
    in_order = bool(torch.equal(order, torch.arange(len(ids))))
    return ForwardBatch(
        chunks=chunks,
        input_ids=torch.tensor(ids, dtype=torch.long, device=device),
        positions=position_tensor.to(device),
        slots=slots.to(device),
        groups=[_on(group, device) for group in groups],
        query_order=None if in_order else order.to(device),
        logits_index=torch.tensor(logits_index, dtype=torch.long, device=device),
        sample_rows=sample_rows,
        prompt_rows=prompt_rows,
    )


def _on(group: AttentionGroup, device: torch.device) -> AttentionGroup:
    """The group with its tensors on `device`."""
    if device.type == "cpu":
        return group
    return AttentionGroup(group.rows, group.width, group.columns, group.query_index.to(device),
                          group.slots.to(device), None if group.mask is None else group.mask.to(device),
                          None if group.real is None else group.real.to(device))


def to_device(batch: ForwardBatch, device: torch.device) -> ForwardBatch:
    """The batch with its index tensors on another device (a layer of a model split over GPUs)."""
    return dataclasses.replace(
        batch, slots=batch.slots.to(device), groups=[_on(group, device) for group in batch.groups],
        query_order=None if batch.query_order is None else batch.query_order.to(device))
