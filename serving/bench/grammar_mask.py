"""The grammar mask's cost per step, apart from the model: fill, apply and advance for B constrained rows.

`python -m serving.bench.grammar_mask --model-dir DIR [--rows 16,64] [--steps 200]` loads only the tokenizer,
gives each of B rows its own matcher of the medium JSON schema (`MEDIUM_SCHEMA`, also what `engine_loop
--grammar medium` constrains every request with), and times `GrammarMasks.apply_` (fill the bitmask, unpack it,
mask the [B, V] scores) and `consume` over random logits; a row whose value is complete starts again (in a new
batch, as in the engine, whose first mask is filled then). It prints the mean and p99 per step for each B. In the
engine the advance and the next fill run in the grammar process while the next forward runs; here nothing overlaps
them, so this is the whole cost. The mask is applied as the engine applies it: by the `refuse_tokens` kernel of
`serving/engine/cpu_kernels.cpp` when it builds (`--numpy`: with numpy, as where it does not).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

MEDIUM_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"anyOf": [{"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.com$"}, {"type": "null"}]},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "address": {"$ref": "#/$defs/address"},
        "orders": {"type": "array", "items": {"$ref": "#/$defs/order"}, "maxItems": 2},
    },
    "required": ["id", "name", "age", "email", "role", "tags", "address", "orders"],
    "additionalProperties": False,
    "$defs": {
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
        "order": {"type": "object", "properties": {"sku": {"type": "string", "maxLength": 10},
                                                   "qty": {"type": "integer", "minimum": 1, "maximum": 99}},
                  "required": ["sku", "qty"], "additionalProperties": False},
    },
}


def measure(model_dir: str, rows: int, steps: int, seed: int = 0) -> list[float]:
    """Seconds per step (apply + consume) for `rows` constrained rows."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from serving.constraints import json_schema_grammar
    from serving.engine.grammar import GrammarMasks, GrammarProcess

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    process = GrammarProcess(tokenizer, vocab, [tokenizer.eos_token_id])
    template = process.compile(json_schema_grammar(MEDIUM_SCHEMA)).result()
    masks = GrammarMasks(torch.arange(rows), [process.matcher(template) for _ in range(rows)], process)
    generator = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(steps):
        logits = torch.randn(rows, vocab, generator=generator)
        started = time.perf_counter()
        masks.apply_(logits)
        ids = logits.argmax(dim=-1)
        masks.consume(ids)
        masks.settle()  # the whole cost, none of it hidden behind a forward
        times.append(time.perf_counter() - started)
        if any(masks.stopped):  # new rows: a new batch, its mask filled anew
            masks = GrammarMasks(masks.rows, [process.matcher(template) if stopped else matcher
                                              for matcher, stopped in zip(masks.matchers, masks.stopped)], process)
    process.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--rows", default="16,64")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--numpy", action="store_true", help="apply the mask with numpy, not the C++ kernel")
    args = parser.parse_args(argv)
    import torch

    from serving.engine import cpu_kernels

    torch.set_num_threads(1)
    reason = None if args.numpy else cpu_kernels.load()
    print("mask applied by " + ("numpy" if args.numpy or reason else "the refuse_tokens kernel")
          + (f" (the kernel is unavailable: {reason})" if reason else ""), flush=True)
    for rows in (int(r) for r in args.rows.split(",")):
        times = sorted(measure(args.model_dir, rows, args.steps))
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
        print(f"B={rows}: mask {statistics.mean(times) * 1e3:.2f} ms/step mean, {p99 * 1e3:.2f} ms p99 "
              f"({statistics.mean(times) / rows * 1e6:.0f} us per row)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
