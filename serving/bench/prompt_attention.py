"""Prompt attention alone: the CPU prefill kernel against the SDPA paths it replaces, on the same scattered blocks.

`python -m serving.bench.prompt_attention [--shapes 0+700,1900+16,...] [--threads 2]`: for each shape (`START+COUNT`:
a chunk of COUNT prompt tokens after START earlier keys), one layer of the tiny benchmark model's attention (4
heads, 2 kv heads, head dim 64, 16-token blocks) over blocks shuffled in a pool. The torch path is the one the
engine took before the kernel: a chunk from a prompt's start attends over its own keys (no gather) with SDPA's
causal flash kernel; a later chunk gathers its blocks and runs SDPA under an additive mask. It prints the
milliseconds of each (the median of `--repeats` timed calls after warm-up), the kernel's GFLOP/s, their ratio and
the largest difference of their outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from serving.bench.decode_attention import (BLOCK_SIZE, HEAD_DIM, HEADS, KV_HEADS, _median_ms, require_kernels,
                                            run_shapes)


def chunk_of(shape: str) -> tuple[int, int]:
    """`1900+16` -> (1900, 16): 16 prompt tokens after 1,900 earlier keys."""
    start, _, count = shape.partition("+")
    return int(start), int(count)


def measure(start: int, count: int, repeats: int = 20, seed: int = 0) -> tuple[float, float, float]:
    """(SDPA ms, kernel ms, max |difference|) for one layer's attention of a `count`-token chunk after `start` keys
    (raises when the kernel cannot be loaded)."""
    require_kernels()
    generator = torch.Generator().manual_seed(seed)
    length = start + count
    blocks = -(-length // BLOCK_SIZE)
    pool = 2 * blocks + 1
    key_cache = torch.randn(pool * BLOCK_SIZE, KV_HEADS * HEAD_DIM, generator=generator)
    value_cache = torch.randn(pool * BLOCK_SIZE, KV_HEADS * HEAD_DIM, generator=generator)
    table = torch.randperm(pool - 1, generator=generator)[:blocks] + 1
    fused = torch.randn(count, HEADS + 2 * KV_HEADS, HEAD_DIM, generator=generator)
    queries = fused[:, :HEADS]  # a strided view, as the fused projection makes them
    slots = (table[:, None] * BLOCK_SIZE + torch.arange(BLOCK_SIZE)).reshape(-1)
    own_keys = key_cache[slots[start:length]].view(1, count, KV_HEADS, HEAD_DIM)  # the step's own, for a fresh chunk
    own_values = value_cache[slots[start:length]].view(1, count, KV_HEADS, HEAD_DIM)
    columns = blocks * BLOCK_SIZE
    visible = torch.arange(columns)[None, :] <= torch.arange(start, length)[:, None]
    mask = torch.zeros(1, 1, count, columns).masked_fill_(~visible[None, None], float("-inf"))
    tables = table.to(torch.int32)[None]  # the kernel's arguments, made once outside the timed calls
    starts, counts = torch.tensor([start], dtype=torch.int32), torch.tensor([count], dtype=torch.int32)

    def sdpa() -> torch.Tensor:
        if start == 0:
            keys, values, causal, additive = own_keys, own_values, True, None
        else:
            keys = key_cache.view(pool, -1).index_select(0, table).view(1, columns, KV_HEADS, HEAD_DIM)
            values = value_cache.view(pool, -1).index_select(0, table).view(1, columns, KV_HEADS, HEAD_DIM)
            causal, additive = False, mask
        return F.scaled_dot_product_attention(queries[None].transpose(1, 2), keys.transpose(1, 2),
                                              values.transpose(1, 2), attn_mask=additive, is_causal=causal,
                                              enable_gqa=True)[0].transpose(0, 1)

    def kernel() -> torch.Tensor:
        return torch.ops.serving.paged_prefill(queries, key_cache, value_cache, tables, starts, counts, BLOCK_SIZE,
                                               HEAD_DIM ** -0.5)

    difference = (sdpa() - kernel()).abs().max().item()
    return _median_ms(sdpa, repeats), _median_ms(kernel, repeats), difference


def _line(shape: str, repeats: int) -> str:
    """One shape's timings."""
    start, count = chunk_of(shape)
    sdpa, kernel, difference = measure(start, count, repeats)
    flops = 4 * HEADS * HEAD_DIM * (count * start + count * (count + 1) / 2)  # two products, causal
    return (f"{shape}: SDPA {sdpa:.3f} ms, kernel {kernel:.3f} ms ({flops / kernel / 1e6:.0f} GFLOP/s), "
            f"{sdpa / kernel:.2f}x faster, max difference {difference:.1e}")


def main(argv: list[str] | None = None) -> int:
    """Print one line per shape."""
    return run_shapes(argv, __doc__ or "", "0+300,0+700,0+1500,300+16,1000+32,1900+16,1900+64,700+300", 2, _line)


if __name__ == "__main__":
    raise SystemExit(main())
