"""Tables and JSON for benchmark results: one server's sweep, or several servers side by side with ratios."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from serving.bench.stats import LevelSummary


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:,.0f}" if value >= 0.1 else f"{value * 1000:,.1f}"


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


COLUMNS = ("server", "conc", "out tok/s", "req/s", "TTFT p50 ms", "TTFT p95 ms", "ITL p50 ms", "ITL p95 ms",
           "E2E p50 s", "E2E p95 s", "done", "errors", "peak RSS MiB")


def row(server: str, level: LevelSummary) -> list[str]:
    """One table row."""
    return [server, str(level.concurrency), _num(level.output_throughput), _num(level.request_throughput, 2),
            _ms(level.ttft_p50), _ms(level.ttft_p95), _ms(level.itl_p50), _ms(level.itl_p95),
            _s(level.e2e_p50), _s(level.e2e_p95), f"{level.completed}/{level.requests}", str(level.errors),
            _num(level.peak_rss_mib)]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (also readable as plain text)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(header, widths)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def sweep_table(server: str, levels: Sequence[LevelSummary]) -> str:
    """One server's levels."""
    return markdown_table(COLUMNS, [row(server, level) for level in levels])


def comparison_table(results: Mapping[str, Sequence[LevelSummary]], ours: str) -> str:
    """Every server at every level, grouped by level, with ours ÷ theirs for throughput and TTFT p50 (`ours` names
    the reference server, which the headers name when it is not `ours`)."""
    header = COLUMNS + tuple(h.replace("ours", ours) for h in ("ours ÷ this tok/s", "this ÷ ours TTFT"))
    rows = []
    levels = sorted({level.concurrency for sweep in results.values() for level in sweep})
    by_server = {name: {level.concurrency: level for level in sweep} for name, sweep in results.items()}
    for concurrency in levels:
        mine = by_server.get(ours, {}).get(concurrency)
        for name, sweep in by_server.items():
            level = sweep.get(concurrency)
            if level is None:
                continue
            ratio = ttft = "—"
            if mine is not None and name != ours:
                if level.output_throughput > 0:
                    ratio = f"{mine.output_throughput / level.output_throughput:.2f}×"
                if level.ttft_p50 and mine.ttft_p50:
                    ttft = f"{level.ttft_p50 / mine.ttft_p50:.2f}×"
            rows.append(row(name, level) + [ratio, ttft])
    return markdown_table(header, rows)


def write_json(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write results (LevelSummary values become dicts)."""
    def default(value: Any) -> Any:
        if isinstance(value, LevelSummary):
            return value.to_dict()
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, default=default) + "\n")
