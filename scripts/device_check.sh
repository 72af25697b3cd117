#!/usr/bin/env bash
# One bounded check of the paged engine on a GPU machine (GPU_ENGINE.md §9, kept small); never part of CI.
#
#   scripts/device_check.sh                 # on a GPU: a ~1B Llama (Llama-3.2-1B's shape), random bf16 weights
#   scripts/device_check.sh --size tiny --device cpu   # a smoke run of the script itself, anywhere
#
# It builds the model from its config (no download), then, through the engine's Scheduler and ModelRunner (paged
# KV cache, lean forward, torch-only paged attention): (1) greedy tokens of 4 prompts against transformers'
# `generate` on the same weights, (2) batch-1 decode tok/s against the memory-bandwidth roofline (weights read
# once a token, bandwidth measured by a device-to-device copy), (3) output tok/s at concurrency 64, (4) on CUDA,
# the KV pool sized as the engine sizes it (the activation peak of a profiled 4,096-token prefill step, against the
# config-based estimate; then a pool of that size allocated and the same step run in it), (5) on CUDA, a model
# split between the GPU and the CPU (accelerate's hooks, each layer's KV cache on its own device: the multi-GPU
# path) checked greedy against transformers. It prints one JSON line per result and exits non-zero when a greedy
# agreement is below 90%. The whole run is bounded by DEVICE_CHECK_TIMEOUT seconds (default 420).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
exec timeout "${DEVICE_CHECK_TIMEOUT:-420}" "$python" - "$@" <<'PYTHON'
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from serving.engine import device_memory
from serving.engine.block_manager import BlockManager
from serving.engine.limits import Limits, activation_bytes, kv_bytes_per_token
from serving.engine.model_runner import ModelRunner
from serving.engine.scheduler import Scheduler
from serving.engine.sequence import Sequence, SequenceStatus
from serving.engine.stopping import StopCriteria
from serving.messages import SamplingParams

SIZES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
}
parser = argparse.ArgumentParser()
parser.add_argument("--size", choices=SIZES, default="1b")
parser.add_argument("--device", default="cuda")
args = parser.parse_args()
device = torch.device(args.device)
dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
torch.manual_seed(0)
config = LlamaConfig(**SIZES[args.size], max_position_embeddings=4096)
with device:
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
weights = sum(p.numel() * p.element_size() for p in model.parameters())


def report(**fields):
    print(json.dumps(fields), flush=True)


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def engine(tokens: int, on=None):
    blocks = BlockManager(num_blocks=tokens // 16 + 2, block_size=16)
    runner = ModelRunner(on or model, pad_id=0, blocks=blocks, lean=True)
    limits = Limits(max_input_tokens=2048, max_total_tokens=4096, max_batch_prefill_tokens=4096,
                    max_batch_total_tokens=tokens, max_batch_size=None, max_concurrent_requests=1024)
    return runner, Scheduler(limits, blocks)


def generate(prompts, new_tokens, on=None):
    """Greedy continuations through the engine's scheduler and runner (of `on`, else the model); (outputs, decode
    step seconds, decode tokens)."""
    runner, scheduler = engine(len(prompts) * (max(map(len, prompts)) + new_tokens) + 64 * 16, on)
    sequences = [Sequence.create(str(i), p, SamplingParams(), StopCriteria(new_tokens, frozenset()))
                 for i, p in enumerate(prompts)]
    for sequence in sequences:
        scheduler.add(sequence)
    decode_seconds, decode_tokens = 0.0, 0
    with torch.inference_mode():
        while scheduler.running or scheduler.waiting:
            sync()
            started = time.perf_counter()
            chunks = scheduler.schedule()
            batch = runner.prepare(chunks)
            logits = runner.run(batch)
            scheduler.computed(chunks)
            ids = logits[batch.sample_rows].argmax(dim=-1).tolist()
            sync()
            if all(chunk.count == 1 for chunk in chunks):
                decode_seconds += time.perf_counter() - started
                decode_tokens += len(chunks)
            for chunk, token in zip([c for c in chunks if c.samples], ids):
                sequence = chunk.sequence
                sequence.token_ids.append(token)
                if sequence.generated >= new_tokens:
                    sequence.status = SequenceStatus.FINISHED
                    scheduler.finish(sequence)
    return [s.output_ids for s in sequences], decode_seconds, decode_tokens


generator = torch.Generator().manual_seed(1)
prompts = [torch.randint(1, config.vocab_size, (n,), generator=generator).tolist() for n in (7, 33, 128, 300)]


def agreement(on, prompts):
    """(leading greedy tokens equal to transformers' generate, tokens) of 16 new tokens per prompt."""
    ours, _, _ = generate(prompts, 16, on)
    agree = total = 0
    with torch.inference_mode():
        for prompt, got in zip(prompts, ours):
            ids = torch.tensor([prompt], device=on.device)
            expected = on.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False)[0, len(prompt):]
            expected = expected.tolist()
            same = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), len(got))
            agree, total = agree + same, total + len(got)
    return agree, total


agree, total = agreement(model, prompts)
report(check="greedy_vs_transformers", leading_tokens_equal=agree, tokens=total, share=round(agree / total, 3))
passed = agree >= 0.9 * total

if device.type == "cuda":
    buffer = torch.empty(2**28, dtype=torch.float32, device=device)  # 1 GiB
    copy = torch.empty_like(buffer)
    copy.copy_(buffer)
    sync()
    started = time.perf_counter()
    for _ in range(10):
        copy.copy_(buffer)
    sync()
    bandwidth = 10 * 2 * buffer.numel() * 4 / (time.perf_counter() - started)  # read + write
    del buffer, copy
else:
    bandwidth = float("nan")
_, seconds, tokens = generate(prompts[2:3], 256)
report(check="batch1_decode", tok_s=round(tokens / seconds, 1), weights_gb=round(weights / 1e9, 2),
       bandwidth_gb_s=round(bandwidth / 1e9, 1), roofline_tok_s=round(bandwidth / weights, 1),
       share_of_roofline=round(tokens / seconds / (bandwidth / weights), 3))
started = time.perf_counter()
outputs, _, _ = generate([torch.randint(1, config.vocab_size, (128,), generator=generator).tolist()
                          for _ in range(64)], 128)
report(check="concurrency64", output_tok_s=round(sum(map(len, outputs)) / (time.perf_counter() - started), 1),
       prompt_tokens=128, output_tokens=128)

memory = device_memory.gpu_memory({device})
if memory is not None:
    prefill = 4096
    runner, _ = engine(prefill + 16)
    with torch.inference_mode():
        peak = runner.activation_peak(prefill, prefill, memory)
        per_token = kv_bytes_per_token(config, dtype)
        budget = device_memory.kv_budget(memory, 0.9, peak)
        runner.reallocate(BlockManager(num_blocks=(budget // per_token) // 16 + 1, block_size=16))
        started = time.perf_counter()
        runner.activation_peak(prefill, prefill, memory)  # the same step, in the full pool: it must fit
        sync()
    report(check="cache_sizing", activations_mib=round(peak / 2**20, 1),
           estimate_mib=round(activation_bytes(config, dtype, prefill) / 2**20, 1),
           kv_tokens=budget // per_token, kv_gib=round(budget / 2**30, 2),
           step_in_full_pool_s=round(time.perf_counter() - started, 3))
    del runner
    from accelerate import dispatch_model

    with device:
        small = AutoModelForCausalLM.from_config(LlamaConfig(**SIZES["tiny"], max_position_embeddings=4096),
                                                 dtype=dtype, attn_implementation="sdpa").eval()
    halves = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": "cpu",
              "model.norm": "cpu", "lm_head": "cpu"}
    split = dispatch_model(small.cpu(), device_map=halves)
    agree, total = agreement(split, [[token % small.config.vocab_size for token in p] for p in prompts])
    report(check="split_gpu_cpu_greedy", leading_tokens_equal=agree, tokens=total, share=round(agree / total, 3))
    passed = passed and agree >= 0.9 * total
raise SystemExit(0 if passed else 1)
PYTHON
