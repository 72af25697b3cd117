"""The engine alone, no HTTP: a closed loop of `c` requests in flight, to measure one engine change at a time.

Run in its own process (it imports torch): `python -m serving.bench.engine_loop --model-dir DIR [--concurrency
16,64]`. For each level, `c` requests (prompts of the benchmark's word mix, `output_tokens` tokens with EOS
ignored) are kept in flight: a new one is added as soon as one finishes, until `requests` have finished. It prints
a line per level with output tokens per wall-second and per CPU-second of this process (the engine runs on one
thread, so CPU time is its cost and is steadier than wall time on a shared machine), the mean decode step and the
time spent in prefill, and writes JSON with `--json`. `--grammar medium` constrains every request with the medium
JSON schema of `serving.bench.grammar_mask` (EOS then ends it, so `output_tokens` is only its limit), `--grammar
mixed` every other one, and `--grammar compare` runs `medium`, then the same requests unconstrained with each one's
output length as `medium` made it (so both runs do the same prefills and decode the same tokens), in `--rounds`
alternating pairs, and prints the ratio of their tokens per CPU-second. `--grammar sharing` asks what constrained
neighbours cost an unconstrained request: it alternates `mixed` runs with all-unconstrained runs of the same output
lengths and prints, for the requests that are unconstrained in both (every other one), their tokens per second and
inter-token latency in each. Settings come from the environment through `serving.config` like the server's, so
`DTYPE=bfloat16` or `MAX_BATCH_PREFILL_TOKENS` apply here too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

from serving.bench.load import DEFAULT_PROMPT_WORDS, make_prompts


@dataclasses.dataclass
class LoopResult:
    """One level of the closed loop."""

    concurrency: int
    requests: int
    output_tokens: int
    wall_seconds: float
    cpu_seconds: float
    steps: int
    lengths: tuple[int, ...] = ()  # each request's output tokens, by request index
    gaps: tuple[tuple[float, ...], ...] = ()  # each request's inter-token latencies in seconds, by request index

    @property
    def tokens_per_second(self) -> float:
        """Output tokens per wall-clock second."""
        return self.output_tokens / self.wall_seconds

    @property
    def tokens_per_cpu_second(self) -> float:
        """Output tokens per CPU-second of this process."""
        return self.output_tokens / self.cpu_seconds


def run_level(engine: object, concurrency: int, total: int, output_tokens: int, words: tuple[int, ...],
              seed: int, grammar: str = "none", lengths: tuple[int, ...] = (),
              shared_prefix_words: int = 0) -> LoopResult:
    """Keep `concurrency` requests in the engine until `total` have finished (`grammar`: none, medium or mixed;
    `lengths`: each request's own output length, instead of `output_tokens`; `shared_prefix_words`: every prompt
    starts with the same text of that many words)."""
    from serving.bench.grammar_mask import MEDIUM_SCHEMA
    from serving.constraints import json_schema_grammar
    from serving.messages import Finished, GenerateRequest, SamplingParams, StoppingParams, TokenDelta

    medium = json_schema_grammar(MEDIUM_SCHEMA)

    prompts = make_prompts(total, words, seed=seed * 1000 + concurrency, shared_prefix_words=shared_prefix_words)
    submitted = finished = tokens = steps = 0
    made = [0] * total
    gaps: list[list[float]] = [[] for _ in range(total)]
    last: dict[int, float] = {}  # each running request's latest token time

    def submit() -> None:
        nonlocal submitted
        constrained = grammar == "medium" or (grammar == "mixed" and submitted % 2 == 0)
        engine.add_request(GenerateRequest(  # type: ignore[attr-defined]
            request_id=f"r{submitted}",
            sampling=SamplingParams(grammar=medium if constrained else None),
            stopping=StoppingParams(max_new_tokens=lengths[submitted] if lengths else output_tokens,
                                    ignore_eos=not constrained),
            prompt=prompts[submitted]))
        submitted += 1

    wall, cpu = time.perf_counter(), time.process_time()
    while submitted < min(concurrency, total):
        submit()
    while finished < total:
        steps += 1
        events = engine.step()  # type: ignore[attr-defined]
        now = time.perf_counter()
        for event in events:
            if not isinstance(event, (TokenDelta, Finished)):
                continue
            tokens += 1
            index = int(event.request_id[1:])
            if index in last:
                gaps[index].append(now - last[index])
            last[index] = now
            if isinstance(event, Finished):  # with the last token
                finished += 1
                made[index] = event.generated_tokens
                if submitted < total:
                    submit()
    return LoopResult(concurrency, total, tokens, time.perf_counter() - wall, time.process_time() - cpu, steps,
                      tuple(made), tuple(tuple(g) for g in gaps))


def compare(engine: object, concurrency: int, total: int, output_tokens: int, words: tuple[int, ...], seed: int,
            rounds: int) -> list[LoopResult]:
    """Alternate constrained runs and unconstrained runs of the same output lengths; print each pair's ratio."""
    results = []
    for round_index in range(rounds):
        constrained = run_level(engine, concurrency, total, output_tokens, words, seed, "medium")
        free = run_level(engine, concurrency, total, output_tokens, words, seed, "none", constrained.lengths)
        results += [constrained, free]
        print(f"c={concurrency} round {round_index + 1}: constrained {constrained.tokens_per_cpu_second:,.0f} "
              f"tok/CPU-s ({constrained.wall_seconds / constrained.steps * 1e3:.1f} ms/step), unconstrained "
              f"{free.tokens_per_cpu_second:,.0f} tok/CPU-s ({free.wall_seconds / free.steps * 1e3:.1f} ms/step), "
              f"ratio {constrained.tokens_per_cpu_second / free.tokens_per_cpu_second:.2f} "
              f"(wall {constrained.tokens_per_second / free.tokens_per_second:.2f})", flush=True)
    return results


def _unconstrained_half(result: LoopResult) -> tuple[float, float, float]:
    """Tokens per wall-second, mean and p90 inter-token latency (ms) of the odd-numbered requests (the ones that
    `mixed` leaves unconstrained)."""
    gaps = sorted(gap for index in range(1, result.requests, 2) for gap in result.gaps[index])
    tokens = sum(result.lengths[1::2])
    return tokens / result.wall_seconds, statistics.fmean(gaps) * 1e3, gaps[int(0.9 * (len(gaps) - 1))] * 1e3


def sharing(engine: object, concurrency: int, total: int, output_tokens: int, words: tuple[int, ...], seed: int,
            rounds: int) -> list[LoopResult]:
    """Alternate half-constrained runs and all-unconstrained runs of the same output lengths; print what the
    unconstrained half made in each, and the ratios."""
    results = []
    for round_index in range(rounds):
        mixed = run_level(engine, concurrency, total, output_tokens, words, seed, "mixed")
        free = run_level(engine, concurrency, total, output_tokens, words, seed, "none", mixed.lengths)
        results += [mixed, free]
        (mixed_rate, mixed_itl, mixed_p90), (free_rate, free_itl, free_p90) = map(_unconstrained_half, (mixed, free))
        print(f"c={concurrency} round {round_index + 1}: unconstrained half beside constrained rows "
              f"{mixed_rate:,.0f} tok/s, ITL {mixed_itl:.1f} ms (p90 {mixed_p90:.1f}); in an all-unconstrained "
              f"batch {free_rate:,.0f} tok/s, ITL {free_itl:.1f} ms (p90 {free_p90:.1f}); ratio tok/s "
              f"{mixed_rate / free_rate:.2f}, ITL {mixed_itl / free_itl:.2f}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--requests", type=int, default=None, help="per level (default 2 x concurrency, >= 8)")
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--prompt-words", default=",".join(map(str, DEFAULT_PROMPT_WORDS)))
    parser.add_argument("--shared-prefix-words", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grammar", choices=("none", "medium", "mixed", "compare", "sharing"), default="none")
    parser.add_argument("--rounds", type=int, default=3, help="alternating pairs of --grammar compare or sharing")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)

    from serving.config import from_env
    from serving.engine.engine import LLMEngine

    environ = {**os.environ, "HF_MODEL_ID": args.model_dir}
    environ.setdefault("TORCH_NUM_THREADS", "1")
    config = dataclasses.replace(from_env(environ).engine, max_concurrent_requests=4096)
    engine = LLMEngine.from_config(config)
    words = tuple(int(w) for w in args.prompt_words.split(","))
    if args.grammar != "none":  # the grammar backend's byte table and the schema's compile, outside the figures
        run_level(engine, 1, 1, 8, words, args.seed, "medium")
    results = []
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        total = args.requests if args.requests is not None else max(8, 2 * concurrency)
        if args.grammar in ("compare", "sharing"):
            paired = compare if args.grammar == "compare" else sharing
            results += paired(engine, concurrency, total, args.output_tokens, words, args.seed, args.rounds)
            continue
        result = run_level(engine, concurrency, total, args.output_tokens, words, args.seed, args.grammar,
                           shared_prefix_words=args.shared_prefix_words)
        results.append(result)
        print(f"c={concurrency}: {result.output_tokens} tokens, {result.tokens_per_second:,.0f} tok/s, "
              f"{result.tokens_per_cpu_second:,.0f} tok/CPU-s, {result.steps} steps, "
              f"{result.wall_seconds / result.steps * 1e3:.1f} ms/step", flush=True)
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump([{**dataclasses.asdict(r), "tokens_per_second": r.tokens_per_second,
                        "tokens_per_cpu_second": r.tokens_per_cpu_second} for r in results], handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
