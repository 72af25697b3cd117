"""The engine alone, no HTTP: a closed loop of `c` requests in flight, to measure one engine change at a time.

Run in its own process (it imports torch): `python -m serving.bench.engine_loop --model-dir DIR [--concurrency
16,64]`. For each level, `c` requests (prompts of the benchmark's word mix, `output_tokens` tokens with EOS
ignored) are kept in flight: a new one is added as soon as one finishes, until `requests` have finished. It prints
a line per level with output tokens per wall-second and per CPU-second of this process and its children (the
engine runs on one thread, and the grammar process holds the matchers' work, so CPU time is their cost and is
steadier than wall time on a shared machine), the mean step and the median
time to first token (`--prompt-words 8,700`: prompts alternating 8 and 700 words, the mixed-length workload), and
writes JSON with `--json`. `--grammar medium` constrains every request with the medium JSON schema of
`serving.bench.grammar_mask` (EOS then ends it, so `output_tokens` is only its limit), `--grammar mixed` every
other one, and `--grammar compare` runs `medium`, then the same requests unconstrained with each one's output
length as `medium` made it (so both runs do the same prefills and decode the same tokens), in `--rounds`
alternating pairs, and prints the ratio of their tokens per CPU-second. `--arriving-prompt-words 2000` checks issue
15's pacing criterion instead: the p99 inter-token latency of c decoding streams without and with a 2,000-word
(about 2,000 tokens) prompt arriving, `--rounds` alternating pairs. Settings come from the environment through
`serving.config` like the server's, so `DTYPE=bfloat16` or `MAX_BATCH_PREFILL_TOKENS` apply here too.
`--adapters 4` builds four LoRA adapters (`--adapter-rank`, `--adapter-targets`) and runs, in `--rounds` rounds,
the same requests on the base model, all on one adapter and spread over the four, and prints their ratios.
`--grammar sharing` asks what constrained neighbours cost an unconstrained request: it alternates `mixed` runs
with all-unconstrained runs of the same output lengths and prints, for the requests that are unconstrained in both
(every other one), their tokens per second and inter-token latency in each. In both paired modes the run that goes
first alternates from round to round (the first of a pair ran slower), so average over an even number of rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time

from serving.bench.load import DEFAULT_PROMPT_WORDS, make_prompts, tree_cpu_seconds


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
    first_token_seconds: tuple[float, ...] = ()  # each request's time from its submission to its first token

    @property
    def ttft_p50(self) -> float:
        """The median time to first token, in seconds."""
        return statistics.median(self.first_token_seconds)

    @property
    def tokens_per_second(self) -> float:
        """Output tokens per wall-clock second."""
        return self.output_tokens / self.wall_seconds

    @property
    def tokens_per_cpu_second(self) -> float:
        """Output tokens per CPU-second of this process and its children."""
        return self.output_tokens / self.cpu_seconds


def run_level(engine: object, concurrency: int, total: int, output_tokens: int, words: tuple[int, ...],
              seed: int, grammar: str = "none", lengths: tuple[int, ...] = (),
              shared_prefix_words: int = 0, adapters: tuple[str | None, ...] = (None,)) -> LoopResult:
    """Keep `concurrency` requests in the engine until `total` have finished (`grammar`: none, medium or mixed;
    `lengths`: each request's own output length, instead of `output_tokens`; `shared_prefix_words`: every prompt
    starts with the same text of that many words; request i runs on LoRA adapter `adapters[i % len(adapters)]`,
    None being the base model)."""
    from serving.bench.grammar_mask import MEDIUM_SCHEMA
    from serving.constraints import json_schema_grammar
    from serving.messages import Finished, GenerateRequest, SamplingParams, StoppingParams, TokenDelta

    medium = json_schema_grammar(MEDIUM_SCHEMA)

    prompts = make_prompts(total, words, seed=seed * 1000 + concurrency, shared_prefix_words=shared_prefix_words)
    submitted = finished = tokens = steps = 0
    made = [0] * total
    submitted_at = [0.0] * total
    first_token = [0.0] * total
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
            prompt=prompts[submitted],
            adapter=adapters[submitted % len(adapters)]))
        submitted_at[submitted] = time.perf_counter()
        submitted += 1

    wall, cpu = time.perf_counter(), _cpu_seconds()
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
            if not first_token[index]:
                first_token[index] = now - submitted_at[index]
            if index in last:
                gaps[index].append(now - last[index])
            last[index] = now
            if isinstance(event, Finished):  # with the last token
                finished += 1
                made[index] = event.generated_tokens
                if submitted < total:
                    submit()
    cpu = _cpu_seconds() - cpu  # the grammar process's CPU counted with the engine's
    return LoopResult(concurrency, total, tokens, time.perf_counter() - wall, cpu, steps,
                      tuple(made), tuple(tuple(g) for g in gaps), tuple(first_token))


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process, every thread, to the nanosecond (a run of a few short steps takes
    less than /proc's 10 ms tick), and by its descendants (the grammar process), from /proc."""
    return time.process_time() + tree_cpu_seconds(os.getpid(), descendants_only=True)


def compare(engine: object, concurrency: int, total: int, output_tokens: int, words: tuple[int, ...], seed: int,
            rounds: int) -> list[LoopResult]:
    """Alternate constrained runs and unconstrained runs of the same output lengths; print each pair's ratio.
    Both see the same state (`_warm_up`), and which goes first alternates (`_pair`)."""
    results = []
    lengths = _warm_up(engine, concurrency, total, output_tokens, words, seed, "medium")
    for round_index in range(rounds):
        constrained, free, first = _pair(engine, concurrency, total, output_tokens, words, seed, "medium", lengths,
                                         round_index)
        results += [constrained, free]
        print(f"c={concurrency} round {round_index + 1} ({first} first): constrained "
              f"{constrained.tokens_per_cpu_second:,.0f} tok/CPU-s "
              f"({constrained.wall_seconds / constrained.steps * 1e3:.1f} ms/step), unconstrained "
              f"{free.tokens_per_cpu_second:,.0f} tok/CPU-s ({free.wall_seconds / free.steps * 1e3:.1f} ms/step), "
              f"ratio {constrained.tokens_per_cpu_second / free.tokens_per_cpu_second:.2f} "
              f"(wall {constrained.tokens_per_second / free.tokens_per_second:.2f})", flush=True)
    return results


def register_adapters(engine: object, model_dir: str, count: int, rank: int, targets: tuple[str, ...],
                      out_dir: str) -> tuple[str, ...]:
    """Build `count` LoRA adapters of `rank` on `targets` for the model (`serving.testing.tiny_adapter`) in
    `out_dir` and register them pinned (resident for good: the files are not read again); their names."""
    from serving.messages import AdapterSpec
    from serving.testing.tiny_adapter import TinyAdapterSpec, build_tiny_adapter

    names = tuple(f"lora{i}" for i in range(count))
    for index, name in enumerate(names):
        path = build_tiny_adapter(model_dir, os.path.join(out_dir, name),
                                  TinyAdapterSpec(rank=rank, alpha=2.0 * rank, target_modules=targets, seed=index,
                                                  weight_std=0.02))
        engine.adapters.register_now(AdapterSpec(name, str(path), pinned=True))  # type: ignore[attr-defined]
    return names


def compare_adapters(engine: object, concurrency: int, total: int, output_tokens: int, words: tuple[int, ...],
                     seed: int, rounds: int, names: tuple[str, ...]) -> list[LoopResult]:
    """Alternate the same requests on the base model, all on one adapter, and spread over every adapter; print
    each round's tokens per second and the ratios to the base model's."""
    cases = {"base": (None,), "one adapter": names[:1], f"{len(names)} adapters": names}
    results = []
    for round_index in range(rounds):
        measured = {label: run_level(engine, concurrency, total, output_tokens, words, seed, adapters=adapters)
                    for label, adapters in cases.items()}
        results += measured.values()
        base = measured["base"]
        print(f"c={concurrency} round {round_index + 1}: " + ", ".join(
            f"{label} {r.tokens_per_second:,.0f} tok/s {r.tokens_per_cpu_second:,.0f} tok/CPU-s "
            f"({r.wall_seconds / r.steps * 1e3:.1f} ms/step, {r.tokens_per_cpu_second / base.tokens_per_cpu_second:.2f}"
            f"x CPU, {r.tokens_per_second / base.tokens_per_second:.2f}x wall)"
            for label, r in measured.items()), flush=True)
    return results


def arrival(engine: object, streams: int, words: int, seed: int, rounds: int, steps: int = 100) -> None:
    """The issue-15 criterion: `streams` requests decode; their p99 inter-token latency over `steps` steps without,
    then with, a prompt of `words` words arriving after they started (alternating, `rounds` pairs), by round and
    over all rounds pooled (a round's p99 is its one or two slowest steps, so one stall of the machine decides it;
    pooled, each is the 99th percentile of every round's gaps)."""
    from serving.messages import GenerateRequest, SamplingParams, StoppingParams

    def add(request_id: str, prompt: str, tokens: int) -> None:
        engine.add_request(GenerateRequest(  # type: ignore[attr-defined]
            request_id=request_id, sampling=SamplingParams(),
            stopping=StoppingParams(max_new_tokens=tokens, ignore_eos=True), prompt=prompt))

    pooled: dict[bool, list[float]] = {False: [], True: []}
    for round_index in range(rounds):
        for arriving in (False, True):
            base = seed * 1000 + 2 * round_index + arriving
            for index, prompt in enumerate(make_prompts(streams, DEFAULT_PROMPT_WORDS, seed=base)):
                add(f"s{index}", prompt, steps + 40)  # decoding through the warm-up and every measured step
            for _ in range(20):  # every stream prefilled and decoding
                engine.step()  # type: ignore[attr-defined]
            if arriving:
                add("long", make_prompts(1, (words,), seed=base)[0], 2)
            last: dict[str, float] = {}
            gaps: list[float] = []
            started, first = time.perf_counter(), None
            for _ in range(steps):
                events = engine.step()  # type: ignore[attr-defined]
                now = time.perf_counter()
                for event in events:
                    if event.request_id == "long":
                        first = first or now - started
                    elif event.request_id in last:
                        gaps.append(now - last[event.request_id])
                    if event.request_id != "long":
                        last[event.request_id] = now
            while engine.has_work():  # type: ignore[attr-defined]
                engine.step()  # type: ignore[attr-defined]
            pooled[arriving] += gaps
            p99 = _p99(gaps)
            extra = f", the prompt's first token after {first * 1e3:,.0f} ms" if first is not None else ""
            print(f"{streams} streams, round {round_index + 1}, {'with' if arriving else 'without'} a "
                  f"{words}-word prompt arriving: p99 inter-token {p99 * 1e3:.1f} ms, median "
                  f"{statistics.median(gaps) * 1e3:.1f} ms{extra}", flush=True)
    without, with_prompt = _p99(pooled[False]), _p99(pooled[True])
    print(f"{streams} streams, {rounds} rounds pooled: p99 inter-token {without * 1e3:.1f} ms without, "
          f"{with_prompt * 1e3:.1f} ms with the prompt arriving (ratio {with_prompt / without:.2f})", flush=True)


def _p99(gaps: list[float]) -> float:
    """The 99th percentile of inter-token gaps (the nearest rank below)."""
    return sorted(gaps)[int(0.99 * (len(gaps) - 1))]


def _warm_up(engine: object, concurrency: int, total: int, output_tokens: int, words: tuple[int, ...], seed: int,
             grammar: str) -> tuple[int, ...]:
    """One unmeasured run of the pairs' requests: otherwise the first run of the first pair computes the prompts
    that every later run finds in the prefix cache, and builds oneDNN's kernels for the step sizes that the later
    runs reuse (about 0.7 ms a linear layer for each new row count), and the first pair's ratio is skewed. Returns
    the output lengths of the constrained run (greedy: the same in every run), for the unconstrained ones."""
    first = run_level(engine, concurrency, total, output_tokens, words, seed, grammar)
    run_level(engine, concurrency, total, output_tokens, words, seed, "none", first.lengths)
    return first.lengths


def _pair(engine: object, concurrency: int, total: int, output_tokens: int, words: tuple[int, ...], seed: int,
          grammar: str, lengths: tuple[int, ...], round_index: int) -> tuple[LoopResult, LoopResult, str]:
    """The constrained run (`grammar`), the unconstrained run of `lengths`, and which went first: the constrained
    one in even rounds. The first run of a pair was the slower one: with the constrained run always first,
    `--grammar sharing` gave 0.91 against 1.00 with it second (four rounds of each, 2026-12-07)."""
    order = (grammar, "none") if round_index % 2 == 0 else ("none", grammar)
    runs = {kind: run_level(engine, concurrency, total, output_tokens, words, seed, kind,
                            lengths if kind == "none" else ()) for kind in order}
    return runs[grammar], runs["none"], "constrained" if order[0] == grammar else "unconstrained"


def _unconstrained_half(result: LoopResult) -> tuple[float, float, float]:
    """Tokens per wall-second, mean and p90 inter-token latency (ms) of the odd-numbered requests (the ones that
    `mixed` leaves unconstrained)."""
    gaps = sorted(gap for index in range(1, result.requests, 2) for gap in result.gaps[index])
    tokens = sum(result.lengths[1::2])
    return tokens / result.wall_seconds, statistics.fmean(gaps) * 1e3, gaps[int(0.9 * (len(gaps) - 1))] * 1e3


def sharing(engine: object, concurrency: int, total: int, output_tokens: int, words: tuple[int, ...], seed: int,
            rounds: int) -> list[LoopResult]:
    """Alternate half-constrained runs and all-unconstrained runs of the same output lengths; print what the
    unconstrained half made in each, and the ratios. Both see the same state (`_warm_up`), and which goes first
    alternates (`_pair`)."""
    results = []
    lengths = _warm_up(engine, concurrency, total, output_tokens, words, seed, "mixed")
    for round_index in range(rounds):
        mixed, free, first = _pair(engine, concurrency, total, output_tokens, words, seed, "mixed", lengths,
                                   round_index)
        results += [mixed, free]
        (mixed_rate, mixed_itl, mixed_p90), (free_rate, free_itl, free_p90) = map(_unconstrained_half, (mixed, free))
        print(f"c={concurrency} round {round_index + 1} ({first} first): unconstrained half beside constrained rows "
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
    parser.add_argument("--adapters", type=int, default=0,
                        help="LoRA adapters to build and register: alternate the requests on the base model, on "
                             "one adapter and spread over all of them, in --rounds rounds")
    parser.add_argument("--adapter-rank", type=int, default=16)
    parser.add_argument("--adapter-targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    parser.add_argument("--arriving-prompt-words", type=int, default=0,
                        help="instead of the loop: p99 inter-token latency of c streams (the first --concurrency) "
                             "without and with a prompt of this many words arriving, --rounds pairs")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)

    from serving.config import from_env
    from serving.engine.engine import LLMEngine

    environ = {**os.environ, "HF_MODEL_ID": args.model_dir}
    environ.setdefault("TORCH_NUM_THREADS", "1")
    config = dataclasses.replace(from_env(environ).engine, max_concurrent_requests=4096)
    engine = LLMEngine.from_config(config)
    words = tuple(int(w) for w in args.prompt_words.split(","))
    if args.arriving_prompt_words:
        arrival(engine, int(args.concurrency.split(",")[0]), args.arriving_prompt_words, args.seed, args.rounds)
        return 0
    names: tuple[str, ...] = ()
    if args.adapters:
        with tempfile.TemporaryDirectory(prefix="engine-loop-adapters-") as adapter_dir:
            names = register_adapters(engine, args.model_dir, args.adapters, args.adapter_rank,
                                      tuple(args.adapter_targets.split(",")), adapter_dir)
    if args.grammar != "none":  # the grammar backend's byte table and the schema's compile, outside the figures
        run_level(engine, 1, 1, 8, words, args.seed, "medium")
    results = []
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        total = args.requests if args.requests is not None else max(8, 2 * concurrency)
        if names:
            results += compare_adapters(engine, concurrency, total, args.output_tokens, words, args.seed,
                                        args.rounds, names)
            continue
        if args.grammar in ("compare", "sharing"):
            paired = compare if args.grammar == "compare" else sharing
            results += paired(engine, concurrency, total, args.output_tokens, words, args.seed, args.rounds)
            continue
        result = run_level(engine, concurrency, total, args.output_tokens, words, args.seed, args.grammar,
                           shared_prefix_words=args.shared_prefix_words)
        results.append(result)
        print(f"c={concurrency}: {result.output_tokens} tokens, {result.tokens_per_second:,.0f} tok/s, "
              f"{result.tokens_per_cpu_second:,.0f} tok/CPU-s, {result.steps} steps, "
              f"{result.wall_seconds / result.steps * 1e3:.1f} ms/step, TTFT p50 {result.ttft_p50 * 1e3:,.0f} ms",
              flush=True)
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump([{**dataclasses.asdict(r), "tokens_per_second": r.tokens_per_second,
                        "tokens_per_cpu_second": r.tokens_per_cpu_second} for r in results], handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
