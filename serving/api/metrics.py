"""TGI's Prometheus metrics: recorded with prometheus_client, exposed under TGI's exact names and buckets.

Under gunicorn every HTTP worker records into prometheus_client's multiprocess files (`PROMETHEUS_MULTIPROC_DIR`,
which the launcher creates) and a scrape merges them with `MultiProcessCollector`; without that directory (one
process, tests) the app's own registry is read. A metric is created on its first record, so, as in TGI, it
appears only once something was recorded. The exposition is written here rather than by prometheus_client's
`generate_latest`, which would rename every counter `<name>_total`: TGI's counters have no suffix.

What is recorded where (TGI's rules, API.md §5.4): `tgi_request_count` once per generation route call and, on
the OpenAI routes and `/chat_tokenize`, once more per generation they start; constrained generations by grammar
kind, grammars that failed to compile and admitted generations by LoRA adapter (`serving_*`, ours); the input
length, `max_new_tokens`, success and durations per generation, from its engine events (`MeteredClient`); a
failure once per failed HTTP request under one reason, labelled with the catalogue's `err` values (`dropped` when its client went away). The
queue and batch gauges are asked of the engine at scrape time.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from serving.api.catalogue import Error
from serving.client import EngineClientProtocol, Sink
from serving.constraints import GRAMMAR_INVALID
from serving.messages import (
    AdapterResult,
    AdapterSpec,
    Admitted,
    EngineEvent,
    Failed,
    Finished,
    GenerateRequest,
    HealthResult,
    ModelInfo,
    TokenizeRequest,
    TokenizeResult,
)

CONTENT_TYPE = "text/plain; charset=utf-8"

HELP = {
    "tgi_request_count": "Total number of requests",
    "tgi_request_success": "Number of successful requests",
    "tgi_request_failure": "Number of failed requests",
    "tgi_request_duration": "Total time spent processing the request",
    "tgi_request_validation_duration": "Time spent validating the request",
    "tgi_request_queue_duration": "Time spent in the queue per request",
    "tgi_request_inference_duration": "Request inference duration",
    "tgi_request_mean_time_per_token_duration": "Mean time per token per request",
    "tgi_request_generated_tokens": "Generated tokens per request",
    "tgi_request_input_length": "Input token length per request",
    "tgi_request_max_new_tokens": "Maximum new tokens per request",
    "tgi_queue_size": "Current queue size",
    "tgi_batch_current_size": "Current batch size",
    "tgi_batch_current_max_tokens": "Maximum tokens for the current batch",
    "tgi_batch_max_total_tokens": "Maximum tokens of a batch",
    "serving_kv_cache_usage": "Share of the KV cache (MAX_BATCH_TOTAL_TOKENS) in the blocks the sequences use",
    "serving_kv_cache_blocks_used": "KV cache blocks in use by sequences",
    "serving_kv_cache_blocks_free": "KV cache blocks free (those that keep a cached prefix included)",
    "serving_prefix_cache_hit_ratio": "Share of prompt tokens found in the prefix cache since the start",
    "serving_preemptions": "Sequences preempted for lack of KV cache blocks since the start (recomputed later)",
    "serving_constrained_requests": "Generations constrained by a grammar (grammar, response_format or tools), by kind",
    "serving_grammar_failures": "Grammars refused because they could not be compiled",
    "serving_adapter_requests": "Generations admitted, by the LoRA adapter they run with (base: none)",
}
BASE_LABEL = "base"  # the `adapter` label of generations on the base model
OTHER_LABEL = "other"  # the `adapter` label of every adapter after the first MAX_ADAPTER_LABELS ones
MAX_ADAPTER_LABELS = 32  # adapter names each process counts under their own label

def duration_buckets() -> list[float]:
    """TGI's 35 geometric buckets for every `*_duration`: 0.0001 s times 1.5, 1.5², ... (computed as TGI does)."""
    value, buckets = 0.0001, []
    for _ in range(35):
        value *= 1.5
        buckets.append(value)
    return buckets


def linear_buckets(maximum: int) -> list[float]:
    """TGI's 100 linear buckets up to `maximum` (token counts)."""
    return [(maximum / 100.0) * (x + 1) for x in range(100)]


class Metrics:
    """The request metrics of one app; metrics are created on first use, thread- and greenlet-safe."""

    def __init__(self, multiprocess_dir: str | None) -> None:
        self._multiprocess_dir = multiprocess_dir
        self._registry = CollectorRegistry(auto_describe=False)
        self._lock = threading.Lock()
        self._metrics: dict[str, Any] = {}
        self._adapter_labels: set[str] = set()

    def _get(self, kind: type, name: str, **options: Any) -> Any:
        """The metric `name`, created on first use."""
        metric = self._metrics.get(name)
        if metric is None:
            with self._lock:
                metric = self._metrics.get(name)
                if metric is None:
                    metric = kind(name, HELP[name], registry=self._registry, **options)
                    self._metrics[name] = metric
        return metric

    def request(self, count: int = 1) -> None:
        """Count requests (`tgi_request_count`)."""
        self._get(Counter, "tgi_request_count").inc(count)

    def constrained(self, kind: str) -> None:
        """Count a generation constrained by a grammar of `kind` (json_schema, regex or lark)."""
        self._get(Counter, "serving_constrained_requests", labelnames=["kind"]).labels(kind=kind).inc()

    def grammar_failure(self) -> None:
        """Count a grammar that could not be compiled (in the HTTP process or in the engine)."""
        self._get(Counter, "serving_grammar_failures").inc()

    def adapter_request(self, adapter: str | None) -> None:
        """Count an admitted generation under its adapter's name (`base` for none): the first MAX_ADAPTER_LABELS
        names get a label each, any later one `other`, so that the label values stay bounded."""
        label = BASE_LABEL if adapter is None else adapter
        if label not in self._adapter_labels:
            with self._lock:
                if len(self._adapter_labels) < MAX_ADAPTER_LABELS:
                    self._adapter_labels.add(label)
                else:
                    label = OTHER_LABEL
        self._get(Counter, "serving_adapter_requests", labelnames=["adapter"]).labels(adapter=label).inc()

    def failure(self, error: Error) -> None:
        """Count a failed request under the catalogue's `err` label for its kind."""
        self._get(Counter, "tgi_request_failure", labelnames=["err"]).labels(err=error.spec.metric).inc()

    def admitted(self, input_length: int, max_new_tokens: int | None, info: ModelInfo) -> None:
        """Record a validated generation's input length and `max_new_tokens` (null: the room left)."""
        if max_new_tokens is None:
            max_new_tokens = max(info.max_total_tokens - input_length, 0)
        self._get(Histogram, "tgi_request_input_length",
                  buckets=linear_buckets(info.max_input_tokens)).observe(input_length)
        self._get(Histogram, "tgi_request_max_new_tokens",
                  buckets=linear_buckets(info.max_total_tokens)).observe(max_new_tokens)

    def finished(self, finished: Finished, total: float, info: ModelInfo) -> None:
        """Record a successful generation: its count, durations (seconds) and generated tokens."""
        inference = finished.inference_time
        durations = {
            "tgi_request_duration": total,
            "tgi_request_validation_duration": max(total - finished.queue_time - inference, 0.0),
            "tgi_request_queue_duration": finished.queue_time,
            "tgi_request_inference_duration": inference,
            "tgi_request_mean_time_per_token_duration": inference / max(finished.generated_tokens, 1),
        }
        self._get(Counter, "tgi_request_success").inc()
        for name, seconds in durations.items():
            self._get(Histogram, name, buckets=duration_buckets()).observe(seconds)
        self._get(Histogram, "tgi_request_generated_tokens",
                  buckets=linear_buckets(info.max_total_tokens)).observe(finished.generated_tokens)

    def exposition(self, health: HealthResult | None, info: ModelInfo) -> str:
        """The Prometheus text exposition: every recorded metric and the engine's gauges (when it answered)."""
        if self._multiprocess_dir:
            registry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(registry, path=self._multiprocess_dir)
            families = list(registry.collect())
        else:
            families = list(self._registry.collect())
        lines: list[str] = []
        for family in sorted(families, key=lambda family: family.name):
            lines += _family_lines(family.name, family.type, family.documentation, _samples(family))
        gauges = {"tgi_batch_max_total_tokens": info.max_batch_total_tokens}
        if health is not None:
            gauges.update(tgi_queue_size=health.waiting, tgi_batch_current_size=health.running,
                          tgi_batch_current_max_tokens=health.batch_tokens,
                          serving_kv_cache_usage=health.batch_tokens / max(1, info.max_batch_total_tokens),
                          serving_kv_cache_blocks_used=health.blocks_used,
                          serving_kv_cache_blocks_free=health.blocks_free,
                          serving_prefix_cache_hit_ratio=health.prefix_hit_tokens
                          / max(1, health.prefix_queried_tokens),
                          serving_preemptions=health.preemptions)
        for name, value in sorted(gauges.items()):
            lines += _family_lines(name, "gauge", HELP[name], [(name, {}, float(value))])
        return "".join(line + "\n" for line in lines)


def _samples(family: Any) -> list[tuple[str, dict[str, str], float]]:
    """A family's samples under TGI's names: a counter's without `_total`, a histogram's buckets first."""
    samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
    if family.type == "counter":
        return [(family.name, sample.labels, sample.value) for sample in samples]
    order = {family.name + "_bucket": 0, family.name + "_sum": 1, family.name + "_count": 2}
    samples.sort(key=lambda sample: order.get(sample.name, 3))  # stable: buckets keep their order
    return [(sample.name, sample.labels, sample.value) for sample in samples]


def _family_lines(name: str, kind: str, documentation: str,
                  samples: Iterable[tuple[str, dict[str, str], float]]) -> list[str]:
    """`# HELP`, `# TYPE` and one line per sample, in the Prometheus text format."""
    lines = [f"# HELP {name} {documentation}", f"# TYPE {name} {kind}"]
    for sample_name, labels, value in samples:
        label_text = ",".join(f'{key}="{_escape(text)}"' for key, text in labels.items())
        lines.append(f"{sample_name}{{{label_text}}} {_number(value)}" if label_text
                     else f"{sample_name} {_number(value)}")
    return lines


def _number(value: float) -> str:
    """A sample value as TGI's exporter writes it: whole numbers without a fraction."""
    if math.isnan(value) or math.isinf(value):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(value)]
    return str(int(value)) if value.is_integer() else repr(value)


def _escape(value: str) -> str:
    """A label value escaped for the text format."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _RecordingSink:
    """A generation's sink that records its admission and its success as the events pass."""

    def __init__(self, sink: Sink, request: GenerateRequest, metrics: Metrics, info: ModelInfo) -> None:
        self._sink = sink
        self._request = request
        self._metrics = metrics
        self._info = info
        self._started = time.monotonic()

    def put(self, item: tuple[int, EngineEvent]) -> None:
        """Record the event, then pass it on (in the engine client's reader: nothing here may wait)."""
        event = item[1]
        if isinstance(event, Admitted):
            self._metrics.admitted(event.input_length, self._request.stopping.max_new_tokens, self._info)
            self._metrics.adapter_request(self._adapter())
        elif isinstance(event, Finished):
            self._metrics.finished(event, time.monotonic() - self._started, self._info)
        elif isinstance(event, Failed) and GRAMMAR_INVALID in event.message:
            self._metrics.grammar_failure()
        self._sink.put(item)

    def _adapter(self) -> str | None:
        """The adapter the generation runs with: the one it names, except a `model` name that is no adapter this
        process has seen registered (the engine ran it on the base model)."""
        adapter = self._request.adapter
        if adapter is None or not self._request.adapter_optional:
            return adapter
        return adapter if any(known.name == adapter for known in self._info.adapters) else None


class MeteredClient:
    """An engine client that records each generation's metrics from the events that pass through it; failures
    are counted per HTTP request where they are answered (`context.FailureTally`), once."""

    def __init__(self, client: EngineClientProtocol, metrics: Metrics) -> None:
        self._client = client
        self._metrics = metrics

    def open(self, request: GenerateRequest, sink: Sink, tag: int) -> None:
        """Start a generation whose events are recorded on their way to `sink`."""
        if request.sampling.grammar is not None:
            self._metrics.constrained(request.sampling.grammar.kind.value)
        self._client.open(request, _RecordingSink(sink, request, self._metrics, self.info()), tag)

    def close(self, request_id: str) -> None:
        """Stop a generation (aborting it unless it ended)."""
        self._client.close(request_id)

    def tokenize(self, request: TokenizeRequest) -> TokenizeResult:
        """Tokenize in the engine."""
        return self._client.tokenize(request)

    def info(self, refresh: bool = False) -> ModelInfo:
        """The loaded model's facts (asked again with `refresh`)."""
        return self._client.info(refresh)

    def health(self, timeout: float = 1.5) -> HealthResult | None:
        """The engine's health."""
        return self._client.health(timeout)

    def register_adapter(self, spec: AdapterSpec) -> AdapterResult:
        """Register a LoRA adapter with every engine replica."""
        return self._client.register_adapter(spec)

    def unregister_adapter(self, name: str) -> AdapterResult:
        """Unregister a LoRA adapter from every engine replica."""
        return self._client.unregister_adapter(name)
