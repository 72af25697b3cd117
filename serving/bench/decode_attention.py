"""Decode attention alone: the CPU decode kernel against the gathered SDPA it replaces, on the same scattered blocks.

`python -m serving.bench.decode_attention [--shapes 32x736,16x200,...] [--threads 1]`: for each shape (rows x keys
per row; `64x736+40` alternates rows of 736 and 40 keys), one layer of the tiny benchmark model's attention (4
heads, 2 kv heads, head dim 64, 16-token blocks) over blocks shuffled in a pool, the milliseconds of each path
(the median of `--repeats` timed calls after warm-up), their ratio and the largest difference of their outputs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from serving.engine.cpu_kernels import load

HEADS, KV_HEADS, HEAD_DIM, BLOCK_SIZE = 4, 2, 64, 16


def lengths_of(shape: str) -> list[int]:
    """`32x736` -> 32 rows of 736 keys; `64x736+40` -> 64 rows alternating 736 and 40 keys."""
    rows, _, keys = shape.partition("x")
    choices = [int(k) for k in keys.split("+")]
    return [choices[row % len(choices)] for row in range(int(rows))]


def _median_ms(call: Callable[[], torch.Tensor], repeats: int) -> float:
    """The median wall time of `call` in milliseconds, after two calls of warm-up."""
    for _ in range(2):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def require_kernels() -> None:
    """Load the CPU kernels (raises with the reason when they cannot be)."""
    reason = load()
    if reason is not None:
        raise RuntimeError(f"the CPU kernels are unavailable: {reason}")


def measure(lengths: list[int], repeats: int = 20, seed: int = 0) -> tuple[float, float, float]:
    """(gathered SDPA ms, kernel ms, max |difference|) for one layer's decode attention of rows of `lengths`
    (raises when the kernel cannot be loaded)."""
    require_kernels()
    generator = torch.Generator().manual_seed(seed)
    rows, blocks = len(lengths), -(-max(lengths) // BLOCK_SIZE)
    pool = rows * blocks + 1
    key_cache = torch.randn(pool * BLOCK_SIZE, KV_HEADS * HEAD_DIM, generator=generator)
    value_cache = torch.randn(pool * BLOCK_SIZE, KV_HEADS * HEAD_DIM, generator=generator)
    tables = (torch.randperm(pool - 1, generator=generator)[:rows * blocks] + 1).view(rows, blocks)
    queries = torch.randn(rows, HEADS, HEAD_DIM, generator=generator)
    counts = torch.tensor(lengths, dtype=torch.int32)
    columns = blocks * BLOCK_SIZE
    visible = torch.arange(columns)[None, :] < counts[:, None].long()
    mask = torch.zeros(rows, 1, 1, columns).masked_fill_(~visible[:, None, None, :], float("-inf"))
    flat = tables.reshape(-1)
    kernel_tables = tables.to(torch.int32)  # made once, outside the timed calls

    def gathered() -> torch.Tensor:
        keys = key_cache.view(pool, -1).index_select(0, flat).view(rows, columns, KV_HEADS, HEAD_DIM)
        values = value_cache.view(pool, -1).index_select(0, flat).view(rows, columns, KV_HEADS, HEAD_DIM)
        return F.scaled_dot_product_attention(queries[:, :, None], keys.transpose(1, 2), values.transpose(1, 2),
                                              attn_mask=mask, enable_gqa=True)[:, :, 0]

    def kernel() -> torch.Tensor:
        return torch.ops.serving.paged_decode(queries, key_cache, value_cache, kernel_tables, counts, BLOCK_SIZE,
                                              HEAD_DIM ** -0.5)

    difference = (gathered() - kernel()).abs().max().item()
    return _median_ms(gathered, repeats), _median_ms(kernel, repeats), difference


def run_shapes(argv: list[str] | None, description: str, shapes: str, threads: int,
               line: Callable[[str, int], str]) -> int:
    """Parse `--shapes` (comma-separated), `--threads` and `--repeats`, then print a header and `line(shape,
    repeats)` for each shape (the attention benchmarks' command line)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--shapes", default=shapes)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"one layer, {HEADS} heads, {KV_HEADS} kv heads, head dim {HEAD_DIM}, {args.threads} thread(s)")
    for shape in args.shapes.split(","):
        print(line(shape, args.repeats))
    return 0


def _line(shape: str, repeats: int) -> str:
    """One shape's timings."""
    sdpa, kernel, difference = measure(lengths_of(shape), repeats)
    return (f"{shape}: gathered SDPA {sdpa:.3f} ms, kernel {kernel:.3f} ms, {kernel / sdpa:.2f}x, "
            f"max difference {difference:.1e}")


def main(argv: list[str] | None = None) -> int:
    """Print one line per shape."""
    return run_shapes(argv, __doc__ or "", "8x5,16x200,16x100+250,32x736,64x736+40,64x1200", 1, _line)


if __name__ == "__main__":
    raise SystemExit(main())
