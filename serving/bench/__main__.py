"""`python -m serving.bench {run,peers,models}`: see `serving.bench`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import struct
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from serving.bench import load, report
from serving.bench.peers import ALL_SERVERS, DEFAULT_VENVS, bench_raw, bench_server, ensure_venv, measure, start
from serving.bench.stats import LevelSummary

MODELS = {
    # name: tiny_model CLI-equivalent spec
    "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=8192, max_position_embeddings=2048, synthetic_words=20000),
    "small": dict(hidden_size=768, intermediate_size=2304, num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=4, vocab_size=8192, max_position_embeddings=2048, synthetic_words=20000),
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parameter_count(model_dir: Path) -> int | None:
    """Parameters in the model's safetensors files, read from their headers (no torch)."""
    total = 0
    files = sorted(model_dir.glob("*.safetensors"))
    for path in files:
        with open(path, "rb") as handle:
            header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total if files else None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=_ints, default=(1, 4, 16, 64), help="levels, e.g. 1,4,16,64")
    parser.add_argument("--requests", type=int, default=None, help="requests per level (default max(8, 2c))")
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--prompt-words", type=_ints, default=load.DEFAULT_PROMPT_WORDS,
                        help="prompt lengths in words, cycled")
    parser.add_argument("--shared-prefix-words", type=int, default=0,
                        help="words of text that every prompt starts with (the prefix-cache workload)")
    parser.add_argument("--turns", type=int, default=1,
                        help="requests per conversation: each later turn resends the conversation so far and a new "
                             "message (the multi-turn chat workload)")
    parser.add_argument("--turn-words", type=int, default=24, help="words of each later turn's new message")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds per level")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def _load_config(args: argparse.Namespace, url: str = "") -> load.LoadConfig:
    return load.LoadConfig(url=url, concurrency=args.concurrency, requests=args.requests,
                           output_tokens=args.output_tokens, prompt_words=args.prompt_words,
                           shared_prefix_words=args.shared_prefix_words, turns=args.turns,
                           turn_words=args.turn_words, deadline=args.deadline, seed=args.seed,
                           progress=not args.quiet)


def cmd_run(args: argparse.Namespace) -> int:
    config = _load_config(args, args.url)
    config.api = args.api
    config.model = args.model
    config.server_pid = args.server_pid
    config.extra_body = json.loads(args.extra_body)
    levels = load.run(config)
    print(report.sweep_table(args.label, levels))
    if args.json_path:
        report.write_json(args.json_path, {"command": shlex.join(sys.argv), "machine": machine(), "url": args.url,
                                           "api": args.api, "server": args.label, "levels": levels})
    return 0 if all(level.errors == 0 for level in levels) else 1


def cmd_peers(args: argparse.Namespace) -> int:
    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(ALL_SERVERS)
    if unknown:
        raise SystemExit(f"unknown servers: {', '.join(sorted(unknown))} (known: {', '.join(ALL_SERVERS)})")
    if args.turns > 1 and "raw" in servers:
        raise SystemExit("raw runs no conversations: leave it out with --turns")
    venvs = Path(args.venvs)
    if args.setup_only:
        for name in ("transformers", "vllm"):
            if name in servers:
                ensure_venv(venvs, name, _log)
        return 0
    model_dir = Path(args.model_dir).resolve()
    config = _load_config(args)
    info = {"command": shlex.join(["python", "-m", "serving.bench", *sys.argv[1:]]), "machine": machine(),
            "model_dir": str(model_dir), "parameters": parameter_count(model_dir),
            "output_tokens": args.output_tokens, "prompt_words": args.prompt_words,
            "shared_prefix_words": args.shared_prefix_words, "turns": args.turns, "turn_words": args.turn_words,
            "threads": args.threads}
    _log(f"model {model_dir} ({info['parameters']:,} parameters), servers: {', '.join(servers)}")
    results: dict[str, list[LevelSummary]] = {}
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        workdir = Path(args.logs) if args.logs else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.sequential:
            for name in servers:
                try:
                    if name == "raw":
                        results[name] = bench_raw(model_dir, config, args.threads, workdir, _log)
                    else:
                        results[name] = bench_server(name, model_dir, config, venvs, workdir, args.threads, _log)
                except Exception as exc:  # one broken peer must not lose the others' numbers
                    failures[name] = f"{type(exc).__name__}: {exc}"
                    _log(f"[{name}] FAILED: {failures[name]}")
        else:
            results, rounds, idle = interleaved(servers, model_dir, config, venvs, workdir, args.threads,
                                                args.rounds, failures)
            info["rounds"] = rounds
            info["idle_cpu_seconds"] = idle
    info["machine"]["load_average_end"] = os.getloadavg()
    ours = args.reference if args.reference in results else next(iter(results), args.reference)
    print(f"\n{model_dir.name}: {info['parameters']:,} parameters, {args.output_tokens} output tokens per request, "
          f"prompts of {'/'.join(map(str, args.prompt_words))} words"
          f"{f' after a shared prefix of {args.shared_prefix_words} words' if args.shared_prefix_words else ''}"
          f"{f', conversations of {args.turns} turns ({args.turn_words} new words each)' if args.turns > 1 else ''}"
          "\n")
    print(report.comparison_table(results, ours))
    for name, error in failures.items():
        print(f"\n{name}: failed: {error}")
    if args.json_path:
        report.write_json(args.json_path, {**info, "results": results, "failures": failures})
    return 0 if not failures else 1


def interleaved(servers: list[str], model_dir: Path, config: load.LoadConfig, venvs: Path, workdir: Path,
                threads: int, rounds: int, failures: dict[str, str]
                ) -> tuple[dict[str, list[LevelSummary]], list[dict[str, list[LevelSummary]]], dict[str, float]]:
    """Start every server, then for each round and level measure each server in turn (the order rotating), so
    that all servers see the machine in the same state; stop them all. Per server and level the round with the
    highest throughput is kept (the least disturbed by anything else running; each round sends other prompts, all
    servers the same ones within a round), every round goes to the JSON, and so does the CPU time each server used
    while it waited (it must not steal the measured one's CPU). A server
    left with requests unfinished at a level's deadline is restarted, since one that does not notice abandoned
    requests (the naive one) would go on computing for them while the others are measured."""
    running = {}
    idle_cpu: dict[str, float] = {}
    try:
        def start_or_fail(name: str) -> None:
            try:
                running[name] = start(name, model_dir, venvs, workdir, threads, _log)
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"
                _log(f"[{name}] FAILED: {failures[name]}")

        for name in servers:
            if name != "raw":
                start_or_fail(name)
        names = [n for n in servers if n in running or n == "raw"]
        all_rounds: list[dict[str, list[LevelSummary]]] = []
        for round_index in range(rounds):
            # fresh prompts each round: a server with a prefix cache (vLLM) would find the last round's prompts
            round_config = replace(config, seed=config.seed + round_index)
            measured: dict[str, list[LevelSummary]] = {name: [] for name in names}
            for concurrency in config.concurrency:
                shift = round_index % max(len(names), 1)
                for name in names[shift:] + names[:shift]:
                    if name in failures:
                        continue
                    idle_before = {other: load.tree_cpu_seconds(server.process.pid)
                                   for other, server in running.items() if other != name}
                    try:
                        if name == "raw":
                            level = bench_raw(model_dir, replace(round_config, concurrency=(concurrency,)),
                                              threads, workdir, _log)[0]
                        else:
                            level = measure(name, running[name], round_config, concurrency)
                    except Exception as exc:
                        failures[name] = f"{type(exc).__name__}: {exc}"
                        _log(f"[{name}] FAILED: {failures[name]}")
                        continue
                    measured[name].append(level)
                    if level.unfinished and name != "raw":  # it may go on computing for the requests left behind
                        _log(f"[{name}] {level.unfinished} requests unfinished at the deadline: restarting it")
                        running.pop(name).stop()
                        start_or_fail(name)
                    for other, before in idle_before.items():
                        idle_cpu[other] = idle_cpu.get(other, 0.0) + (
                            load.tree_cpu_seconds(running[other].process.pid) - before)
            all_rounds.append(measured)
        for name, seconds in idle_cpu.items():  # a waiting server must not steal the measured one's CPU
            _log(f"[{name}] used {seconds:.1f} CPU s in total while the others were measured")
    finally:
        for name, server in running.items():
            server.stop()
            _log(f"[{name}] stopped")
    best: dict[str, list[LevelSummary]] = {}
    for name in names:
        levels = {}
        for measured in all_rounds:
            for level in measured.get(name, []):
                kept = levels.get(level.concurrency)
                if kept is None or level.output_throughput > kept.output_throughput:
                    levels[level.concurrency] = level
        if levels:
            best[name] = [levels[c] for c in sorted(levels)]
    return best, all_rounds, idle_cpu


def cmd_models(args: argparse.Namespace) -> int:
    from serving.testing.tiny_model import TinyModelSpec, build_tiny_model

    for name in args.names.split(","):
        out = Path(args.out_dir) / name
        build_tiny_model(out, TinyModelSpec(**MODELS[name]))
        print(f"{out}: {parameter_count(out):,} parameters")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="benchmark one running OpenAI-compatible or TGI endpoint")
    run.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    run.add_argument("--api", choices=("openai", "tgi"), default="openai")
    run.add_argument("--model", default=None, help="`model` field of OpenAI requests")
    run.add_argument("--extra-body", default='{"ignore_eos": true}',
                     help="JSON merged into OpenAI bodies ({} for servers that reject unknown fields)")
    run.add_argument("--server-pid", type=int, default=None, help="sample this process tree's peak RSS")
    run.add_argument("--label", default="server")
    _add_load_arguments(run)
    run.set_defaults(func=cmd_run)

    peers = commands.add_parser("peers", help="start ours and each peer in turn with one model, one table")
    peers.add_argument("--model-dir", required=False)
    peers.add_argument("--servers", default=",".join(ALL_SERVERS), help=f"from {','.join(ALL_SERVERS)}")
    peers.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                       help="torch threads of ours, naive, raw, transformers, cores of vllm-all (default: all)")
    peers.add_argument("--venvs", default=str(DEFAULT_VENVS), help="where the peers' virtual environments live")
    peers.add_argument("--logs", default=None, help="keep the servers' logs here")
    peers.add_argument("--setup-only", action="store_true", help="only create the peers' virtual environments")
    peers.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the best round per level is kept")
    peers.add_argument("--reference", default="ours", help="the server the ratio columns compare with")
    peers.add_argument("--sequential", action="store_true",
                       help="start, sweep and stop one server after another (default: all up, levels interleaved)")
    _add_load_arguments(peers)
    peers.set_defaults(func=cmd_peers)

    models = commands.add_parser("models", help="build the benchmark models (random weights) into OUT_DIR")
    models.add_argument("out_dir")
    models.add_argument("--names", default="tiny,small", help=f"from {','.join(MODELS)}")
    models.set_defaults(func=cmd_models)

    args = parser.parse_args(argv)
    if args.command == "peers" and not args.setup_only and not args.model_dir:
        parser.error("peers needs --model-dir")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
