"""Per-request records and the statistics of one concurrency level, as vLLM's `bench serve` computes them.

- Output tokens/s: every output token received during the level (finished requests and, when the deadline cut
  the level short, the tokens already streamed by the unfinished ones) over the level's wall time.
- Requests/s: finished requests over the level's wall time.
- Time to first token: from sending the request to the first streamed token. Inter-token latency: every gap
  between two consecutive streamed token events, pooled over all requests. End-to-end latency: from sending the
  request to its last byte. Percentiles interpolate linearly between order statistics (numpy's default).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence


@dataclass
class RequestRecord:
    """What one request did: `ok` when it finished normally; `error` says why not (None for an unfinished one)."""

    ok: bool = False
    output_tokens: int = 0
    prompt_tokens: int | None = None
    ttft: float | None = None
    itls: list[float] = field(default_factory=list)
    latency: float | None = None
    error: str | None = None
    text: str = ""  # what it streamed


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


@dataclass
class LevelSummary:
    """The statistics of one concurrency level against one server (times in seconds, RSS in MiB)."""

    concurrency: int
    requests: int
    completed: int
    errors: int
    unfinished: int
    duration: float
    output_tokens: int
    output_throughput: float
    request_throughput: float
    ttft_p50: float | None
    ttft_p95: float | None
    itl_p50: float | None
    itl_p95: float | None
    e2e_p50: float | None
    e2e_p95: float | None
    mean_prompt_tokens: float | None
    mean_output_tokens: float | None
    peak_rss_mib: float | None = None
    first_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def summarise(concurrency: int, records: Sequence[RequestRecord], duration: float,
              peak_rss_mib: float | None = None) -> LevelSummary:
    """The statistics of one level from its request records and its wall time."""
    done = [r for r in records if r.ok]
    failed = [r for r in records if r.error is not None]
    ttfts = [r.ttft for r in done if r.ttft is not None]
    itls = [gap for r in done for gap in r.itls]
    latencies = [r.latency for r in done if r.latency is not None]
    tokens = sum(r.output_tokens for r in records if r.error is None)
    duration = max(duration, 1e-9)
    return LevelSummary(
        concurrency=concurrency,
        requests=len(records),
        completed=len(done),
        errors=len(failed),
        unfinished=len(records) - len(done) - len(failed),
        duration=duration,
        output_tokens=tokens,
        output_throughput=tokens / duration,
        request_throughput=len(done) / duration,
        ttft_p50=percentile(ttfts, 50),
        ttft_p95=percentile(ttfts, 95),
        itl_p50=percentile(itls, 50),
        itl_p95=percentile(itls, 95),
        e2e_p50=percentile(latencies, 50),
        e2e_p95=percentile(latencies, 95),
        mean_prompt_tokens=_mean(r.prompt_tokens for r in done if r.prompt_tokens is not None),
        mean_output_tokens=_mean(r.output_tokens for r in done),
        peak_rss_mib=peak_rss_mib,
        first_error=next((r.error for r in failed), None),
    )
