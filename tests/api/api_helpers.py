"""Helpers of the API tests: a scripted engine client, a server configuration, and an SSE body parser."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from serving.config import ServerConfig
from serving.messages import (
    AdapterInfo,
    AdapterResult,
    AdapterSpec,
    AdapterStatus,
    Admitted,
    ErrorKind,
    Failed,
    FinishReason,
    Finished,
    GenerateRequest,
    HealthResult,
    ModelInfo,
    TokenDelta,
    TokenInfo,
    TokenizeRequest,
    TokenizeResult,
    TokenSpan,
)

EOS = TokenInfo(id=2, text="</s>", logprob=-0.25, special=True)


def make_config(**overrides) -> ServerConfig:
    """A server configuration with TGI's defaults."""
    values = dict(host="127.0.0.1", port=8080, workers=1, shutdown_grace_seconds=1.0, engine_start_timeout=10.0,
                  max_best_of=2, max_stop_sequences=4, max_top_n_tokens=5, max_client_batch_size=4,
                  payload_limit=2_000_000, compute_type="gpu+optimized", engine_address="ipc:///tmp/unused",
                  log_level="info")
    values.update(overrides)
    return ServerConfig(**values)


@dataclass
class FakeEngineClient:
    """Echoes the prompt's words (the last chat message's, for chats) as tokens, then EOS; each word is also a
    prefill token (logprob -1.5, the first null) when the request asks for `prefill_logprobs`.

    `open` runs the script (`generate`) in a thread that relays its events to the sink until it ends or is
    closed. Knobs: `fail_at_admission` / `fail_after` (a token count) with `fail_kind` (and `fail_code`, at
    admission); `raise_on_generate` raises inside the script; `token_delay` sleeps between tokens. Every request is
    recorded in `requests`, every request closed before its end in `aborted`, every `close` of a running request in
    `cancelled`.
    """

    pipeline_tag: str | None = None
    healthy: bool | None = True
    fail_at_admission: bool = False
    fail_after: int | None = None
    fail_kind: ErrorKind = ErrorKind.VALIDATION
    fail_message: str = "Input validation error: scripted failure"
    fail_code: str | None = None
    raise_on_generate: bool = False
    token_delay: float = 0.0
    requests: list[GenerateRequest] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    closed: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: dict[str, AdapterInfo] = field(default_factory=dict)
    adapter_status: AdapterStatus = AdapterStatus.OK  # the answer of every register call
    adapter_calls: list[AdapterSpec | str] = field(default_factory=list)
    info_refreshes: int = 0

    def open(self, request: GenerateRequest, sink, tag: int) -> None:
        """Relay the script's events for `request` to `sink` from a thread."""
        threading.Thread(target=self._relay, args=(request, sink, tag), daemon=True).start()

    def _relay(self, request: GenerateRequest, sink, tag: int) -> None:
        """Put each event on `sink` until the script ends or the request is closed; an exception goes on too."""
        events = self.generate(request)
        try:
            for event in events:
                if request.request_id in self.closed:
                    return
                sink.put((tag, event))
        except Exception as exc:
            sink.put((tag, exc))
        finally:
            events.close()

    def close(self, request_id: str) -> None:
        """Record the call; the script stops at its next event."""
        with self.lock:
            self.cancelled.append(request_id)
            self.closed.add(request_id)

    def info(self, refresh: bool = False) -> ModelInfo:
        """The facts of a tiny model without a pipeline tag (unless set), with the registered adapters."""
        self.info_refreshes += refresh
        return ModelInfo(model_id="test-org/tiny-model", model_sha=None, model_pipeline_tag=self.pipeline_tag,
                         max_input_tokens=100, max_total_tokens=128, max_batch_total_tokens=4096,
                         max_concurrent_requests=128, dtype="float32", device="cpu", device_map={},
                         has_chat_template=True, num_parameters=1000, vocab_size=320,
                         adapters=tuple(self.adapters.values()), max_lora_adapters=4, max_lora_rank=64)

    def register_adapter(self, spec: AdapterSpec) -> AdapterResult:
        """Answer `adapter_status`; registered (rank 8, q and v) when it is OK."""
        self.adapter_calls.append(spec)
        if self.adapter_status is AdapterStatus.OK:
            self.adapters[spec.name] = AdapterInfo(name=spec.name, source=spec.source, rank=8,
                                                   target_modules=("q_proj", "v_proj"), pinned=spec.pinned,
                                                   resident=spec.preload)
        return AdapterResult(call_id="a", status=self.adapter_status, message=f"scripted {self.adapter_status.value}")

    def unregister_adapter(self, name: str) -> AdapterResult:
        """Forget a registered adapter; NOT_FOUND for any other name."""
        self.adapter_calls.append(name)
        if self.adapters.pop(name, None) is None:
            return AdapterResult(call_id="a", status=AdapterStatus.NOT_FOUND, message=f"Adapter {name} not found")
        return AdapterResult(call_id="a", status=AdapterStatus.OK, message="ok")

    def unknown_adapter(self, request: GenerateRequest) -> Failed | None:
        """The engine's refusal of an adapter that is not registered (an optional one only while some is)."""
        name = request.adapter
        if name is None or name in self.adapters or (request.adapter_optional and not self.adapters):
            return None
        return Failed(request_id=request.request_id, kind=ErrorKind.ADAPTER_NOT_FOUND,
                      message=f"The model `{name}` does not exist.")

    def health(self, timeout: float = 1.5) -> HealthResult | None:
        """`healthy`, or no answer when it is None."""
        if self.healthy is None:
            return None
        return HealthResult(call_id="h", healthy=self.healthy, running=0, waiting=0)

    def tokenize(self, request: TokenizeRequest) -> TokenizeResult:
        """One token per space-separated word, with byte offsets; a chat is its contents joined."""
        if request.chat is not None and self.fail_at_admission:
            return TokenizeResult(call_id=request.call_id, error=Failed(
                request_id=request.call_id, kind=self.fail_kind, message=self.fail_message))
        text = request.text if request.chat is None else " ".join(m.content for m in request.chat.messages)
        spans, start = [], 0
        for index, word in enumerate(text.split(" ")):
            end = start + len(word.encode())
            spans.append(TokenSpan(id=100 + index, text=word, start=start, stop=end))
            start = end + 1
        templated = None if request.chat is None else text
        return TokenizeResult(call_id=request.call_id, tokens=tuple(spans), templated_text=templated)

    @staticmethod
    def words(request: GenerateRequest) -> list[str]:
        """The words the fake echoes: the prompt's (its token ids as words), or the last chat message's."""
        if request.prompt_ids is not None:
            return [f"t{token_id}" for token_id in request.prompt_ids]
        text = request.prompt if request.prompt is not None else request.chat.messages[-1].content
        return text.split()

    def generate(self, request: GenerateRequest) -> Iterator:
        """Admitted, one token per word, EOS, Finished; or the scripted failure."""
        with self.lock:
            self.requests.append(request)
        done = False
        try:
            if self.raise_on_generate:
                raise RuntimeError("scripted client crash")
            unknown = self.unknown_adapter(request)
            if unknown is not None:
                done = True
                yield unknown
                return
            if self.fail_at_admission:
                done = True
                yield Failed(request_id=request.request_id, kind=self.fail_kind, message=self.fail_message,
                             code=self.fail_code)
                return
            words = self.words(request)
            seed = request.sampling.seed if request.sampling.sampling else None
            yield Admitted(request_id=request.request_id, input_length=len(words), seed=seed,
                           prompt_text=" ".join(words) if request.echo else None)
            limit = request.stopping.max_new_tokens or len(words) + 1
            text, count, reason = "", 0, FinishReason.EOS_TOKEN
            for position, word in enumerate(words + [None]):
                if self.fail_after is not None and count == self.fail_after:
                    done = True
                    yield Failed(request_id=request.request_id, kind=self.fail_kind, message=self.fail_message)
                    return
                if self.token_delay:
                    time.sleep(self.token_delay)
                token = EOS if word is None else TokenInfo(
                    id=100 + position, text=word if position == 0 else " " + word, logprob=-0.5 - position)
                top = tuple(TokenInfo(id=200 + i, text=f"t{i}", logprob=-1.0 - i)
                            for i in range(request.sampling.top_n_tokens))
                count += 1
                if not token.special:
                    text += token.text
                ending = None
                if count == limit:
                    ending = FinishReason.LENGTH
                elif token.special:
                    ending = FinishReason.EOS_TOKEN
                elif any(text.endswith(stop) for stop in request.stopping.stop):
                    ending = FinishReason.STOP_SEQUENCE
                if ending is not None:
                    reason, last, last_top = ending, token, top
                    break
                yield TokenDelta(request_id=request.request_id, token=token, top_tokens=top)
            done = True
            prefill = tuple(TokenInfo(id=100 + i, text=word, logprob=None if i == 0 else -1.5)
                            for i, word in enumerate(words)) if request.prefill_logprobs else ()
            yield Finished(request_id=request.request_id, finish_reason=reason, generated_tokens=count,
                           generated_text=text, input_length=len(words), seed=seed, queue_time=0.001,
                           inference_time=0.002, token=last, prefill=prefill, top_tokens=last_top)
        finally:
            if not done:
                with self.lock:
                    self.aborted.append(request.request_id)


def sse_events(body: bytes) -> list:
    """The `data:` payloads of an SSE body, JSON-decoded except `[DONE]`; asserts TGI's exact framing.

    JSON events have no space after `data:`; `[DONE]` comes as `data: [DONE]`.
    """
    import json

    assert body.endswith(b"\n\n"), body
    events = []
    for frame in body.decode().split("\n\n")[:-1]:
        if frame == ":":
            continue
        if frame == "data: [DONE]":
            events.append("[DONE]")
            continue
        assert frame.startswith("data:") and not frame.startswith("data: "), frame
        events.append(json.loads(frame[len("data:"):]))
    return events
