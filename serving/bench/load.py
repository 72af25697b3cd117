"""The load generator: `concurrency` clients each send streaming requests back to back over aiohttp.

A level ends when its request count is done or its deadline passes; at the deadline the requests still running
are cancelled (their streamed tokens still count towards throughput, see `stats`). Every request asks for exactly
`output_tokens` tokens: `max_tokens` plus vLLM's `ignore_eos`/`min_tokens` extras on OpenAI routes (servers that
reject unknown fields get `extra_body={}`, and the generated counts are reported), `max_new_tokens` on TGI routes.
Prompts are made-up sentences of mixed lengths, different for every request of every level, so that no server
gains from a prefix cache between requests; with `shared_prefix_words` every prompt starts with the same text of
that many words (a system prompt, a shared document) before its own sentence: the prefix-cache workload. With
`turns` above 1 each client holds conversations instead, as chat clients do: a conversation's first request is
one of those prompts, and each later turn resends the conversation so far (every earlier prompt and the reply
streamed to it) followed by a new message of `turn_words` words, so a prefix cache can serve all but the new
message and reply; every turn counts as one request.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from serving.bench.stats import LevelSummary, RequestRecord, summarise

WORDS = (
    "the a of to and in is was for on that with as by at from it this be are or have not but what all were when "
    "we there can more if no out so said up about into than them only other new some could time these two may then "
    "do first any like over even most made after also did many before must through back years where much way well "
    "down should because each just those people how too little state good very make world still own see men work "
    "long get here between both life being under never day same another know while last might great old year off "
    "come since against go came right used take three model learning deep neural network data token server "
    "request stream batch engine python coffee sun water bicycle"
).split()

DEFAULT_PROMPT_WORDS = (16, 64, 128, 256)


SHARED_PREFIX_SEED = 20261206


def shared_prefix(words: int) -> str:
    """The same made-up text of `words` words for every request and level (empty for 0)."""
    rng = random.Random(SHARED_PREFIX_SEED)
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "\n" if words else ""


def make_prompts(count: int, prompt_words: tuple[int, ...], seed: int, shared_prefix_words: int = 0) -> list[str]:
    """`count` distinct prompts cycling through the word counts in `prompt_words` (a mix of lengths), each after
    the shared prefix of `shared_prefix_words` words."""
    rng = random.Random(seed)
    prefix = shared_prefix(shared_prefix_words)
    prompts = []
    for index in range(count):
        words = prompt_words[index % len(prompt_words)]
        body = " ".join(rng.choice(WORDS) for _ in range(max(words - 2, 1)))
        prompts.append(f"{prefix}{seed}-{index}: {body}")
    return prompts


def next_turn(prompt: str, reply: str, words: int, rng: random.Random) -> str:
    """The next turn's prompt of a conversation: the last prompt, the reply streamed to it, and a new message of
    `words` made-up words."""
    message = " ".join(rng.choice(WORDS) for _ in range(max(words, 1)))
    return f"{prompt}{reply}\n{message}\n"


@dataclass
class LoadConfig:
    """One benchmark sweep against one server."""

    url: str
    api: str = "openai"  # "openai" (/v1/completions) or "tgi" (/generate_stream)
    model: str | None = None
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    requests: int | None = None  # per level; None: max(8, 2 x concurrency)
    output_tokens: int = 64
    prompt_words: tuple[int, ...] = DEFAULT_PROMPT_WORDS
    shared_prefix_words: int = 0  # every prompt starts with the same text of this many words
    turns: int = 1  # requests per conversation (each later one resends the conversation so far)
    turn_words: int = 24  # words of each later turn's new message
    deadline: float = 120.0  # seconds per level
    request_timeout: float = 600.0
    seed: int = 0
    extra_body: dict[str, Any] = field(default_factory=lambda: {"ignore_eos": True})
    server_pid: int | None = None
    progress: bool = True

    def level_requests(self, concurrency: int) -> int:
        """How many requests a level sends."""
        return self.requests if self.requests is not None else max(8, 2 * concurrency)


def _request(config: LoadConfig, prompt: str) -> tuple[str, dict[str, Any]]:
    """The route and JSON body of one streaming request."""
    if config.api == "tgi":
        return "/generate_stream", {"inputs": prompt, "parameters": {"max_new_tokens": config.output_tokens}}
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": config.output_tokens, "temperature": 0.0,
                            "stream": True, "stream_options": {"include_usage": True}}
    if config.model is not None:
        body["model"] = config.model
    extra = dict(config.extra_body)
    if extra.get("ignore_eos"):
        extra.setdefault("min_tokens", config.output_tokens)
    body.update(extra)
    return "/v1/completions", body


def parse_event(api: str, data: dict[str, Any]) -> tuple[int, int | None, int | None, str | None]:
    """(token events in it, completion tokens reported, prompt tokens reported, error) of one SSE JSON event."""
    if "error" in data and data.get("error"):
        error = data["error"]
        return 0, None, None, error.get("message", str(error)) if isinstance(error, dict) else str(error)
    if api == "tgi":
        tokens = 1 if data.get("token") else 0
        details = data.get("details") or {}
        return tokens, details.get("generated_tokens"), None, None
    usage = data.get("usage") or {}
    tokens = sum(1 for c in data.get("choices") or () if c.get("text") is not None or c.get("delta") is not None)
    return tokens, usage.get("completion_tokens"), usage.get("prompt_tokens"), None


def event_text(api: str, data: dict[str, Any]) -> str:
    """The generated text one SSE JSON event carries (a conversation's next turn resends it)."""
    if api == "tgi":
        token = data.get("token") or {}
        return "" if token.get("special") else token.get("text") or ""
    return "".join(c.get("text") or "" for c in data.get("choices") or ())


async def send(session: Any, config: LoadConfig, prompt: str, record: RequestRecord,
               on_token: Callable[[], None] = lambda: None) -> None:
    """Send one streaming request and fill `record` as its events arrive."""
    path, body = _request(config, prompt)
    started = time.perf_counter()
    last = None
    reported = None
    try:
        async with session.post(config.url.rstrip("/") + path, json=body) as response:
            if response.status != 200:
                text = (await response.text())[:300]
                record.error = f"HTTP {response.status}: {text}"
                return
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                event = json.loads(payload)
                tokens, completion, prompt_tokens, error = parse_event(config.api, event)
                if error is not None:
                    record.error = error
                    return
                if completion is not None:
                    reported = completion
                if prompt_tokens is not None:
                    record.prompt_tokens = prompt_tokens
                if tokens:
                    record.text += event_text(config.api, event)
                    now = time.perf_counter()
                    if last is None:
                        record.ttft = now - started
                    else:
                        record.itls.append(now - last)
                    last = now
                    record.output_tokens += tokens
                    for _ in range(tokens):
                        on_token()
        if reported is not None:
            record.output_tokens = reported
        record.latency = time.perf_counter() - started
        record.ok = True
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # connection errors, bad JSON: counted, never fatal
        record.error = f"{type(exc).__name__}: {exc}"


class RssSampler:
    """Samples the resident memory of a process and all its descendants (from /proc) in a thread."""

    def __init__(self, pid: int | None, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        if self.pid is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak_mib(self) -> float | None:
        return self.peak / 2**20 if self.pid is not None and self.peak else None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.interval)


def _tree(pid: int) -> tuple[dict[int, list[int]], dict[int, list[str]]]:
    """Children of every process and the fields of its /proc stat line after the name."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        stats[int(entry.name)] = fields
    return children, stats


def tree_cpu_seconds(pid: int, descendants_only: bool = False) -> float:
    """User plus system CPU seconds used so far by `pid` and its descendants (only the descendants: without `pid`
    itself), in /proc's clock ticks (10 ms)."""
    children, stats = _tree(pid)
    total, todo = 0, list(children.get(pid, ())) if descendants_only else [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
        todo.extend(children.get(current, ()))
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and its descendants (0 when it is gone)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0)
        todo.extend(children.get(current, ()))
    return total


class Progress:
    """One status line on stderr, rewritten in place on a terminal and printed every few seconds otherwise."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.done = self.errors = self.tokens = 0
        self.started = time.perf_counter()
        self._tty = sys.stderr.isatty()
        self._last_print = 0.0

    def token(self) -> None:
        self.tokens += 1

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        return (f"{self.label}: {self.done}/{self.total} requests, {self.tokens} tokens, "
                f"{self.tokens / max(elapsed, 1e-9):,.0f} tok/s, {self.errors} errors, {elapsed:.0f} s")

    def show(self, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._tty:
            print("\r" + self.line().ljust(100), end="\n" if final else "", file=sys.stderr, flush=True)
        elif final or now - self._last_print >= 5.0:
            self._last_print = now
            print(self.line(), file=sys.stderr, flush=True)


async def run_level(session: Any, config: LoadConfig, concurrency: int, label: str = "") -> LevelSummary:
    """Run one concurrency level and summarise it."""
    total = config.level_requests(concurrency)
    turns = max(1, config.turns)
    openings = make_prompts(-(-total // turns), config.prompt_words, seed=config.seed * 1000 + concurrency,
                            shared_prefix_words=config.shared_prefix_words)
    records: list[RequestRecord] = []  # in the order sent
    progress = Progress(f"{label}c={concurrency}", total, config.progress)
    next_conversation = 0

    async def client() -> None:
        nonlocal next_conversation
        while next_conversation < len(openings) and len(records) < total:
            index = next_conversation
            next_conversation += 1
            prompt = openings[index]
            rng = random.Random(f"{config.seed}/{concurrency}/{index}")  # the same messages for every server
            for _ in range(turns):
                if len(records) >= total:
                    return
                record = RequestRecord()
                records.append(record)
                await send(session, config, prompt, record, progress.token)
                progress.done += 1
                progress.errors += record.error is not None
                if not record.ok:  # a failed turn ends its conversation
                    break
                prompt = next_turn(prompt, record.text, config.turn_words, rng)

    async def ticker() -> None:
        while True:
            progress.show()
            await asyncio.sleep(0.5)

    with RssSampler(config.server_pid) as rss:
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(client()) for _ in range(min(concurrency, total))]
        ticking = asyncio.ensure_future(ticker())
        _, pending = await asyncio.wait(tasks, timeout=config.deadline)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        duration = time.perf_counter() - started
        ticking.cancel()
        progress.show(final=True)
    return summarise(concurrency, records, duration, rss.peak_mib)


async def warm_up(session: Any, config: LoadConfig) -> RequestRecord:
    """One short request that is not counted (loads lazy models, compiles kernels, opens the connection)."""
    record = RequestRecord()
    await send(session, config, make_prompts(1, (8,), seed=-1)[0], record)
    return record


async def run_sweep(config: LoadConfig, label: str = "") -> list[LevelSummary]:
    """Warm up, then run every concurrency level in order."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=config.request_timeout)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        warm = await warm_up(session, config)
        if warm.error is not None:
            raise RuntimeError(f"warm-up request failed: {warm.error}")
        return [await run_level(session, config, c, label) for c in config.concurrency]


async def _warm_level(config: LoadConfig, concurrency: int, label: str) -> LevelSummary:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=config.request_timeout)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        warm = await warm_up(session, config)
        if warm.error is not None:
            raise RuntimeError(f"warm-up request failed: {warm.error}")
        return await run_level(session, config, concurrency, label)


def run_one_level(config: LoadConfig, concurrency: int, label: str = "") -> LevelSummary:
    """One warm-up request, then one level (for interleaving levels of several servers)."""
    return asyncio.run(_warm_level(config, concurrency, label))


def run(config: LoadConfig, label: str = "") -> list[LevelSummary]:
    """`run_sweep` from synchronous code."""
    return asyncio.run(run_sweep(config, label))
