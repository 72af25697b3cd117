"""The raw engine limit: the model's own `generate` on left-padded batches of the benchmark's prompts, no server.

Run in its own process (it imports torch): `python -m serving.bench.raw --model-dir DIR ...` prints one JSON
object `{"levels": [LevelSummary dicts]}` on stdout. For each concurrency c the level's prompts (the same ones the
servers get) go through in padded batches of c; each batch is timed twice, generating 1 token (its prefill: the
"time to first token") and `output_tokens` tokens with EOS suppressed (`min_new_tokens`). Throughput is the tokens
over the time of the full runs; inter-token latency is (full - prefill) / (output_tokens - 1), the decode step time
of a batch of c, which at c = 1 is the single-stream decode loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from serving.bench.load import DEFAULT_PROMPT_WORDS, make_prompts
from serving.bench.stats import LevelSummary, percentile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--prompt-words", default=",".join(map(str, DEFAULT_PROMPT_WORDS)))
    parser.add_argument("--shared-prefix-words", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-batches", type=int, default=4, help="padded batches timed per level at most")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    words = tuple(int(w) for w in args.prompt_words.split(","))
    levels = []

    def generate(prompts: list[str], tokens: int) -> float:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                           pad_token_id=pad_id)
        return time.perf_counter() - started

    generate(make_prompts(1, (8,), seed=-1), 4)  # warm-up
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        total = args.requests if args.requests is not None else max(8, 2 * concurrency)
        prompts = make_prompts(total, words, seed=args.seed * 1000 + concurrency,
                               shared_prefix_words=args.shared_prefix_words)
        batches = [prompts[i:i + concurrency] for i in range(0, total, concurrency)][:args.max_batches]
        prefill, full, itl = [], [], []
        for batch in batches:
            first = generate(batch, 1)
            whole = generate(batch, args.output_tokens)
            prefill.append(first)
            full.append(whole)
            itl.append((whole - first) / max(args.output_tokens - 1, 1))
            print(f"raw c={concurrency}: batch of {len(batch)} in {whole:.2f} s", file=sys.stderr, flush=True)
        tokens = sum(len(b) for b in batches) * args.output_tokens
        duration = sum(full)
        levels.append(LevelSummary(
            concurrency=concurrency, requests=sum(map(len, batches)), completed=sum(map(len, batches)), errors=0,
            unfinished=0, duration=duration, output_tokens=tokens, output_throughput=tokens / duration,
            request_throughput=sum(map(len, batches)) / duration, ttft_p50=percentile(prefill, 50),
            ttft_p95=percentile(prefill, 95), itl_p50=percentile(itl, 50), itl_p95=percentile(itl, 95),
            e2e_p50=percentile(full, 50), e2e_p95=percentile(full, 95), mean_prompt_tokens=None,
            mean_output_tokens=float(args.output_tokens),
        ).to_dict())
    json.dump({"levels": levels}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
