"""Attention over block tables: row windows, and the same output as SDPA over each sequence's contiguous keys."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from serving.engine import cpu_kernels, model_runner
from serving.engine.attention import MAX_GROUPS, GatheredSdpa, _attend_with_lse, row_windows
from serving.engine import batch as batch_module
from serving.engine.batch import Chunk
from serving.engine.block_manager import BlockManager
from serving.engine.kv_cache import PagedKVCache
from serving.engine.sequence import Sequence
from serving.engine.stopping import StopCriteria
from serving.messages import SamplingParams
from engine_helpers import finished, generate_alone, request

HEADS, KV_HEADS, DIM = 4, 2, 8


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


@pytest.fixture(scope="module")
def kernel() -> None:
    """The CPU decode kernel, built (or found in the cache) and loaded."""
    reason = cpu_kernels.load()
    assert reason is None, reason


@pytest.mark.parametrize("in_place", [False, True], ids=["gathered", "decode-kernel"])
def test_paged_attention_equals_sdpa_over_each_sequence_alone(in_place: bool, request: pytest.FixtureRequest):
    """Decode rows of very different lengths and prefill chunks (one from the start, one after cached tokens)
    in one step, over block tables that interleave in the pool: decode rows gathered in windows, or read in place
    by the decode kernel. Every block held NaN before (a freed block keeps what its last sequence wrote): the
    slots the step leaves unwritten, which attention reads under the mask, are zeroed."""
    if in_place:
        request.getfixturevalue("kernel")
    torch.manual_seed(0)
    blocks = BlockManager(num_blocks=40, block_size=4)
    cache = PagedKVCache([torch.device("cpu")], KV_HEADS, DIM, torch.float32, blocks, GatheredSdpa(in_place, in_place))
    for store in (*cache.key_cache, *cache.value_cache):
        store[blocks.block_size:] = float("nan")
    stop = StopCriteria(max_new_tokens=10, eos_ids=frozenset())
    lengths = [30, 3, 17, 12, 9]  # tokens in each sequence
    sequences = [Sequence.create(str(i), list(range(n)), SamplingParams(), stop) for i, n in enumerate(lengths)]
    for position in range(max(lengths)):  # grow the tables in turns: each one's blocks are scattered
        for sequence in sequences:
            if position < len(sequence.token_ids):
                blocks.grow(sequence.block_table, position + 1)
    keys = [torch.randn(n, KV_HEADS, DIM) for n in lengths]
    values = [torch.randn(n, KV_HEADS, DIM) for n in lengths]
    chunks = [Chunk(sequences[0], 29, 1), Chunk(sequences[1], 2, 1), Chunk(sequences[2], 0, 17),
              Chunk(sequences[3], 11, 1), Chunk(sequences[4], 4, 5)]
    batch = cache.prepare(chunks)
    cached = [list(range(chunk.start)) for chunk in chunks]
    for chunk, key, value, earlier in zip(chunks, keys, values, cached):
        if earlier:  # what earlier steps wrote
            slots = torch.tensor([chunk.sequence.block_table[p // 4] * 4 + p % 4 for p in earlier])
            cache.key_cache[0][slots] = key[:chunk.start].reshape(chunk.start, -1)
            cache.value_cache[0][slots] = value[:chunk.start].reshape(chunk.start, -1)
    step_keys = torch.cat([k[c.start:c.start + c.count] for c, k in zip(chunks, keys)])
    step_values = torch.cat([v[c.start:c.start + c.count] for c, v in zip(chunks, values)])
    cache.write(0, batch, step_keys, step_values)
    out, expected = _outputs(cache, batch, chunks, keys, values)
    decoding = [group for group in batch.groups if group.width == 1 and group.starts is None]
    if in_place:  # the three decode rows in one group, in step order, the two prompt chunks in one: both kernels
        assert [(group.rows, group.lengths.tolist()) for group in decoding] == [(3, [30, 3, 12])]
        prefill = [(group.rows, group.starts.tolist(), group.counts.tolist()) for group in batch.groups
                   if group.starts is not None]
        assert prefill == [(22, [0, 4], [17, 5])]
    else:
        assert len(decoding) > 1 and all(group.lengths is None and group.starts is None for group in batch.groups)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def _outputs(cache: PagedKVCache, batch, chunks: list[Chunk], keys: list[torch.Tensor],
             values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The paged attention of random queries for the chunks (their keys written), and SDPA's over each
    sequence's contiguous keys."""
    queries = [torch.randn(c.count, HEADS, DIM) for c in chunks]
    out = cache.attention(torch.cat(queries), cache.key_cache[0], cache.value_cache[0], batch)
    expected = []
    for chunk, query, key, value in zip(chunks, queries, keys, values):
        length = chunk.start + chunk.count
        mask = torch.arange(length)[None, :] <= torch.arange(chunk.start, length)[:, None]
        expected.append(F.scaled_dot_product_attention(
            query.transpose(0, 1), key[:length].transpose(0, 1), value[:length].transpose(0, 1), attn_mask=mask,
            enable_gqa=True).transpose(0, 1))
    return out, torch.cat(expected)


def test_prompts_from_their_start_attend_together_under_the_causal_mask():
    """Whole prompts of different lengths in one group need no mask of their own, and a later chunk of a prompt
    of about their length goes in a masked group apart: the same output as each alone."""
    torch.manual_seed(0)
    blocks = BlockManager(num_blocks=40, block_size=4)
    cache = PagedKVCache([torch.device("cpu")], KV_HEADS, DIM, torch.float32, blocks)
    stop = StopCriteria(max_new_tokens=10, eos_ids=frozenset())
    lengths = [17, 15, 14, 20]
    sequences = [Sequence.create(str(i), list(range(n)), SamplingParams(), stop) for i, n in enumerate(lengths)]
    for sequence in sequences:
        sequence.block_table, _ = blocks.allocate(sequence.token_ids, use_cache=False)
    chunks = [Chunk(sequence, 0, n) for sequence, n in zip(sequences[:3], lengths)] + [Chunk(sequences[3], 4, 16)]
    batch = cache.prepare(chunks)
    keys = [torch.randn(n, KV_HEADS, DIM) for n in lengths]
    values = [torch.randn(n, KV_HEADS, DIM) for n in lengths]
    earlier = torch.tensor([sequences[3].block_table[p // 4] * 4 + p % 4 for p in range(4)])  # a step before
    cache.key_cache[0][earlier] = keys[3][:4].reshape(4, -1)
    cache.value_cache[0][earlier] = values[3][:4].reshape(4, -1)
    cache.write(0, batch, torch.cat([keys[0], keys[1], keys[2], keys[3][4:]]),
                torch.cat([values[0], values[1], values[2], values[3][4:]]))
    out, expected = _outputs(cache, batch, chunks, keys, values)
    assert [(g.rows, g.mask is None) for g in batch.groups] == [(3, True), (1, False)]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_prompts_of_one_length_in_group_order_are_one_run_of_queries():
    """Two 12-token prompts from their start with a 3-token one between them: `in_group_order` puts the two
    together, so their group reads its queries as a run of the step's tokens and its outputs need no reordering,
    with the same output as each alone."""
    torch.manual_seed(2)
    blocks = BlockManager(num_blocks=40, block_size=4)
    cache = PagedKVCache([torch.device("cpu")], KV_HEADS, DIM, torch.float32, blocks)
    stop = StopCriteria(max_new_tokens=10, eos_ids=frozenset())
    sequences = [Sequence.create(str(i), list(range(n)), SamplingParams(), stop) for i, n in enumerate([12, 3, 12])]
    for sequence in sequences:
        sequence.block_table, _ = blocks.allocate(sequence.token_ids, use_cache=False)
    chunks = batch_module.in_group_order([Chunk(sequence, 0, len(sequence.token_ids)) for sequence in sequences])
    assert [chunk.sequence.request_id for chunk in chunks] == ["1", "0", "2"]
    batch = cache.prepare(chunks)
    assert [(g.rows, g.query_start, g.query_index) for g in batch.groups] == [(1, 0, None), (2, 3, None)]
    assert batch.query_order is None
    keys = [torch.randn(len(c.sequence.token_ids), KV_HEADS, DIM) for c in chunks]
    values = [torch.randn(len(c.sequence.token_ids), KV_HEADS, DIM) for c in chunks]
    cache.write(0, batch, torch.cat(keys), torch.cat(values))
    out, expected = _outputs(cache, batch, chunks, keys, values)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

@pytest.mark.parametrize("in_place", [False, True], ids=["gathered", "decode-kernel"])
def test_rows_sharing_leading_blocks_attend_to_them_once_with_the_same_output(in_place: bool,
                                                                              request: pytest.FixtureRequest):
    """Decode rows after a shared prefix of blocks (cascade: one product for all rows over the shared keys, merged
    with each row's own part, gathered or read in place by the decode kernel) give what SDPA gives each row over
    its whole context."""
    if in_place:
        request.getfixturevalue("kernel")
    torch.manual_seed(1)
    blocks = BlockManager(num_blocks=60, block_size=4)
    cache = PagedKVCache([torch.device("cpu")], KV_HEADS, DIM, torch.float32, blocks, GatheredSdpa(in_place, in_place))
    stop = StopCriteria(max_new_tokens=10, eos_ids=frozenset())
    shared = blocks.allocate(list(range(24)))[0][:5]  # five full blocks every row starts with
    lengths = [27, 23, 33, 21]
    sequences = []
    for i, length in enumerate(lengths):
        sequence = Sequence.create(str(i), list(range(length)), SamplingParams(), stop)
        sequence.block_table = list(shared)
        blocks.grow(sequence.block_table, length)
        sequences.append(sequence)
    chunks = [Chunk(sequence, length - 1, 1) for sequence, length in zip(sequences, lengths)]
    batch = cache.prepare(chunks)
    assert [g.shared_blocks.tolist() for g in batch.groups if g.shared_blocks is not None] == [shared]
    assert all((g.lengths is not None) == in_place and (g.mask is None or not in_place) for g in batch.groups)
    prefix_keys, prefix_values = torch.randn(20, KV_HEADS, DIM), torch.randn(20, KV_HEADS, DIM)
    keys = [torch.cat([prefix_keys, torch.randn(n - 20, KV_HEADS, DIM)]) for n in lengths]
    values = [torch.cat([prefix_values, torch.randn(n - 20, KV_HEADS, DIM)]) for n in lengths]
    for sequence, key, value in zip(sequences, keys, values):
        slots = torch.tensor([sequence.block_table[p // 4] * 4 + p % 4 for p in range(len(key) - 1)])
        cache.key_cache[0][slots] = key[:-1].reshape(len(key) - 1, -1)
        cache.value_cache[0][slots] = value[:-1].reshape(len(key) - 1, -1)
    cache.write(0, batch, torch.stack([k[-1] for k in keys]), torch.stack([v[-1] for v in values]))
    queries = torch.randn(len(lengths), HEADS, DIM)
    out = cache.attention(queries, cache.key_cache[0], cache.value_cache[0], batch)
    expected = torch.cat([F.scaled_dot_product_attention(
        query[:, None], key.transpose(0, 1), value.transpose(0, 1), enable_gqa=True).transpose(0, 1)
        for query, key, value in zip(queries, keys, values)])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_attention_with_log_sum_exp_is_the_same_fused_and_in_plain_ops():
    torch.manual_seed(2)
    queries, keys, values = torch.randn(3, 2, 4, DIM), torch.randn(3, 2, 9, DIM), torch.randn(3, 2, 9, DIM)
    mask = torch.zeros(3, 1, 1, 9)
    mask[1, ..., 5:] = float("-inf")
    fused = _attend_with_lse(queries, keys, values, mask, 0.3, fused=True)
    plain = _attend_with_lse(queries, keys, values, mask, 0.3, fused=False)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    expected = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=0.3)
    torch.testing.assert_close(plain[0], expected, rtol=1e-5, atol=1e-5)


def test_a_window_of_long_decode_rows_is_gathered_a_few_rows_at_a_time(monkeypatch):
    """Each group's gathered keys stay within `GATHER_TOKENS`; the output is the same as each row alone."""
    monkeypatch.setattr(batch_module, "GATHER_TOKENS", 64)
    torch.manual_seed(0)
    blocks = BlockManager(num_blocks=60, block_size=4)
    cache = PagedKVCache([torch.device("cpu")], KV_HEADS, DIM, torch.float32, blocks)
    stop = StopCriteria(max_new_tokens=10, eos_ids=frozenset())
    lengths = [30, 29, 28, 27, 26, 25]
    sequences = [Sequence.create(str(i), list(range(n)), SamplingParams(), stop) for i, n in enumerate(lengths)]
    for sequence in sequences:
        sequence.block_table, _ = blocks.allocate(sequence.token_ids, use_cache=False)
    chunks = [Chunk(sequence, n - 1, 1) for sequence, n in zip(sequences, lengths)]
    batch = cache.prepare(chunks)
    keys = [torch.randn(n, KV_HEADS, DIM) for n in lengths]
    values = [torch.randn(n, KV_HEADS, DIM) for n in lengths]
    for sequence, key, value in zip(sequences, keys, values):
        slots = torch.tensor([sequence.block_table[p // 4] * 4 + p % 4 for p in range(len(key))])
        cache.key_cache[0][slots] = key.reshape(len(key), -1)
        cache.value_cache[0][slots] = value.reshape(len(value), -1)
    out, expected = _outputs(cache, batch, chunks, keys, values)
    assert [group.rows for group in batch.groups] == [2, 2, 2]  # 64 // 30 tokens of the longest row
    assert batch.query_order is None  # runs of consecutive step tokens, in order
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_decode_kernel_reads_scattered_blocks_like_sdpa_over_contiguous_keys(kernel: None, dtype: torch.dtype):
    """Rows of 1 to 300 keys over shuffled blocks, queries as a strided view (as the fused projection makes
    them), in each dtype the kernel takes: SDPA's output over each row's keys laid out in order, and from
    `paged_decode_lse` the same output and each head's log-sum-exp of its scaled scores."""
    torch.manual_seed(3)
    block_size, blocks, rows = 16, 200, 7
    key_cache = torch.randn(blocks * block_size, KV_HEADS * DIM).to(dtype)
    value_cache = torch.randn(blocks * block_size, KV_HEADS * DIM).to(dtype)
    lengths = [1, 300, 16, 17, 64, 250, 2]
    tables = torch.randperm(blocks - 1)[:rows * 19].add(1).view(rows, 19)
    fused = torch.randn(rows, HEADS + 2 * KV_HEADS, DIM).to(dtype)
    queries = fused[:, :HEADS]  # row stride (heads + 2 kv heads) x dim
    arguments = (queries, key_cache, value_cache, tables.to(torch.int32), torch.tensor(lengths, dtype=torch.int32),
                 block_size, 0.3)
    out = torch.ops.serving.paged_decode(*arguments)
    with_lse, lse = torch.ops.serving.paged_decode_lse(*arguments)
    assert torch.equal(with_lse, out) and lse.dtype == torch.float32 and lse.shape == (rows, HEADS)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    for row, length in enumerate(lengths):
        slots = (tables[row, :, None] * block_size + torch.arange(block_size)).reshape(-1)[:length]
        keys = key_cache[slots].float().view(length, KV_HEADS, DIM).transpose(0, 1)
        values = value_cache[slots].float().view(length, KV_HEADS, DIM).transpose(0, 1)
        expected = F.scaled_dot_product_attention(queries[row, :, None].float(), keys, values, scale=0.3,
                                                  enable_gqa=True)[:, 0]
        torch.testing.assert_close(out[row].float(), expected, rtol=tolerance, atol=tolerance)
        scores = queries[row].float().view(KV_HEADS, HEADS // KV_HEADS, DIM) @ keys.transpose(1, 2) * 0.3
        torch.testing.assert_close(lse[row], scores.logsumexp(-1).reshape(HEADS), rtol=tolerance, atol=tolerance)


def _lanes() -> list[int]:
    """The vector widths the prefill kernel can run at here: 4 everywhere, 8 and 16 where the CPU has them."""
    widths = [4]
    for lanes in (8, 16):
        try:
            cache, one = torch.zeros(4, 16), torch.ones(1, 1, dtype=torch.int32)
            torch.ops.serving.paged_prefill(torch.zeros(1, 1, 16), cache, cache, one, torch.zeros(1, dtype=torch.int32),
                                            one[0], 2, 1.0, lanes)
            widths.append(lanes)
        except RuntimeError:
            break
    return widths


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "dim", "block_size"), [(4, 2, 64, 16), (6, 1, 72, 4), (3, 3, 8, 16)],
                         ids=["gqa", "mqa-tail", "mha-small"])
def test_prefill_kernel_equals_causal_sdpa_over_each_chunks_keys(kernel: None, dtype: torch.dtype, heads: int,
                                                                  kv_heads: int, dim: int, block_size: int):
    """Prompt chunks from their start and after earlier keys (one token to several key and query tiles), over
    shuffled blocks, queries as a strided view, at every vector width this CPU has: each query sees its chunk's
    keys up to its own position, as SDPA's causal attention over the sequence's keys laid out in order gives. One
    chunk of one kv head is cut into a part per thread (`mqa-tail`, whose head_dim of 72 also leaves a tail after
    its runs of 16)."""
    widths = _lanes()
    for lanes in widths:
        _check_prefill_kernel(dtype, heads, kv_heads, dim, block_size, lanes)


def _check_prefill_kernel(dtype: torch.dtype, heads: int, kv_heads: int, dim: int, block_size: int,
                          lanes: int) -> None:
    """The prefill kernel at `lanes` against causal SDPA, for two calls of chunks."""
    torch.manual_seed(6)
    blocks = 400
    key_cache = torch.randn(blocks * block_size, kv_heads * dim).to(dtype)
    value_cache = torch.randn(blocks * block_size, kv_heads * dim).to(dtype)
    cases = [[(0, 37), (5, 1), (100, 19), (16, 200)], [(300, 45)]]  # (start, count) of each chunk in a call
    for chunks in cases:
        counts = [count for _, count in chunks]
        width = max(-(-(start + count) // block_size) for start, count in chunks)
        tables = torch.randperm(blocks - 1)[:len(chunks) * width].add(1).view(len(chunks), width)
        fused = torch.randn(sum(counts), heads + 2 * kv_heads, dim).to(dtype)
        queries = fused[:, :heads]
        out = torch.ops.serving.paged_prefill(
            queries, key_cache, value_cache, tables.to(torch.int32),
            torch.tensor([start for start, _ in chunks], dtype=torch.int32), torch.tensor(counts, dtype=torch.int32),
            block_size, 0.2, lanes)
        tolerance = 1e-5 if dtype == torch.float32 else 2e-2
        first = 0
        for row, (start, count) in enumerate(chunks):
            length = start + count
            slots = (tables[row, :, None] * block_size + torch.arange(block_size)).reshape(-1)[:length]
            keys = key_cache[slots].float().view(length, kv_heads, dim).transpose(0, 1)
            values = value_cache[slots].float().view(length, kv_heads, dim).transpose(0, 1)
            mask = torch.arange(length)[None, :] <= torch.arange(start, length)[:, None]
            expected = F.scaled_dot_product_attention(
                queries[first:first + count].float().transpose(0, 1), keys, values, attn_mask=mask, scale=0.2,
                enable_gqa=True).transpose(0, 1)
            torch.testing.assert_close(out[first:first + count].float(), expected, rtol=tolerance, atol=tolerance)
            first += count


def test_prefill_kernel_refuses_chunks_past_their_tables_or_queries_and_odd_widths(kernel: None):
    cache = torch.zeros(64, KV_HEADS * DIM)
    one = torch.ones(1, 2, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="lanes must be"):
        torch.ops.serving.paged_prefill(torch.zeros(3, HEADS, DIM), cache, cache, one,
                                        torch.tensor([0], dtype=torch.int32), torch.tensor([3], dtype=torch.int32),
                                        4, 1.0, 5)
    with pytest.raises(RuntimeError, match="fit its table"):
        torch.ops.serving.paged_prefill(torch.zeros(3, HEADS, DIM), cache, cache, one,
                                        torch.tensor([6], dtype=torch.int32), torch.tensor([3], dtype=torch.int32),
                                        4, 1.0)
    with pytest.raises(RuntimeError, match="every chunk's queries"):
        torch.ops.serving.paged_prefill(torch.zeros(2, HEADS, DIM), cache, cache, one,
                                        torch.tensor([0], dtype=torch.int32), torch.tensor([3], dtype=torch.int32),
                                        4, 1.0)


def test_kernel_rms_norm_equals_torch_and_refuses_other_dtypes(kernel: None):
    """The CPU kernels' RMSNorm: `F.rms_norm`'s output for one row, a decode step's rows and a prompt's (split over
    the threads), in any leading shape."""
    torch.manual_seed(4)
    weight = torch.randn(256)
    for shape in [(1, 256), (16, 256), (3, 700, 256)]:
        x = torch.randn(shape) * 3
        torch.testing.assert_close(torch.ops.serving.rms_norm(x, weight, 1e-6), F.rms_norm(x, (256,), weight, 1e-6),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.serving.rms_norm(torch.zeros(2, 256, dtype=torch.bfloat16), weight, 1e-6)
    with pytest.raises(RuntimeError, match=r"\[hidden\]"):
        torch.ops.serving.rms_norm(torch.zeros(2, 128), weight, 1e-6)


def test_kernel_rotary_equals_the_torch_ops_in_place(kernel: None):
    """The CPU kernels' rotary embedding, in place on the queries and keys of a fused q/k/v output (a strided view),
    gives `x*cos + roll(x)*sin'` as torch computes it."""
    torch.manual_seed(5)
    tokens, dim = 9, DIM * 2
    qkv = torch.randn(tokens, HEADS + 2 * KV_HEADS, dim)
    cos, sin = torch.randn(tokens, dim), torch.randn(tokens, dim)
    view = qkv[:, :HEADS + KV_HEADS]
    expected = torch.addcmul(view * cos[:, None], torch.roll(view, dim // 2, dims=-1), sin[:, None])
    values = qkv[:, HEADS + KV_HEADS:].clone()
    torch.ops.serving.rotary_(view, cos, sin)
    torch.testing.assert_close(qkv[:, :HEADS + KV_HEADS], expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(qkv[:, HEADS + KV_HEADS:], values)  # the values untouched
    with pytest.raises(RuntimeError, match="head_dim"):
        torch.ops.serving.rotary_(torch.zeros(2, 1, 3), torch.zeros(2, 3), torch.zeros(2, 3))


def test_decode_kernel_refuses_a_length_past_its_table(kernel: None):
    cache = torch.zeros(64, KV_HEADS * DIM)
    with pytest.raises(RuntimeError, match="fit its table"):
        torch.ops.serving.paged_decode(torch.zeros(1, HEADS, DIM), cache, cache, torch.ones(1, 2, dtype=torch.int32),
                                       torch.tensor([9], dtype=torch.int32), 4, 1.0)
    with pytest.raises(RuntimeError, match="outside the cache"):
        torch.ops.serving.paged_decode(torch.zeros(1, HEADS, DIM), cache, cache,
                                       torch.tensor([[16]], dtype=torch.int32), torch.tensor([3], dtype=torch.int32),
                                       4, 1.0)


def test_without_a_compiler_the_kernel_is_unavailable_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    reason = cpu_kernels.load()
    assert reason is not None and "no-such-compiler" in reason
    assert not list(tmp_path.rglob("*.so"))


def test_an_engine_without_the_kernel_gathers_blocks_and_says_why(make_engine, monkeypatch, caplog):
    monkeypatch.setattr(model_runner, "load_decode_kernel", lambda: "no C++ compiler (g++) on this machine")
    with caplog.at_level(logging.WARNING, logger="serving.engine.model_runner"):
        engine = make_engine()
    assert engine.runner.cache.attention.in_place is False and engine.runner.cache.attention.prefill_in_place is False
    assert "no C++ compiler (g++) on this machine" in caplog.text
    done = finished(generate_alone(engine, request("r", "Hello there", 4)))
    assert done.generated_tokens == 4


def test_an_engine_takes_the_prefill_kernel_only_where_it_runs_wide(make_engine, monkeypatch):
    """At four float lanes (no AVX2: SSE, or a CPU that is not x86) the prefill kernel is slower than SDPA, so the
    engine keeps the decode kernel and gathers prompt chunks for SDPA; at eight or more it takes both."""
    assert cpu_kernels.load() is None
    assert cpu_kernels.fast_prefill() is (int(torch.ops.serving.prefill_lanes()) >= 8)
    monkeypatch.setattr(model_runner, "fast_prefill", lambda: False)
    attention = make_engine().runner.cache.attention
    assert attention.in_place is True and attention.prefill_in_place is False
    monkeypatch.setattr(model_runner, "fast_prefill", lambda: True)
    attention = make_engine().runner.cache.attention
    assert attention.in_place is True and attention.prefill_in_place is True
    done = finished(generate_alone(make_engine(), request("r", "Hello there", 4)))
    assert done.generated_tokens == 4
