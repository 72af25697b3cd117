"""`LLMEngine`: continuous batching over one model, synchronous and free of IO; the worker drives it.

A step is one forward: the `Scheduler` plans a chunk for each sequence it schedules (one token for a decoding
sequence, the next part of a prompt for a prefilling one, under one token budget; see `scheduler`), the
`ModelRunner` runs them together over its paged KV cache, and every chunk that reaches its sequence's last token
samples the next one; the engine then detokenizes, checks stops and emits each request's events. Sequences
join and leave between steps without copying anyone's cache: each owns a block table. Everything runs under
`torch.inference_mode()`.

An exception inside a step (an out-of-memory, or a fault that one request causes) is isolated by retrying: the
running sequences go back to the head of the queue with what they generated so far (they are prefilled again
and resume), and the batch is capped at half its size; a sequence whose step fails while it runs alone fails with
a `generation` error. The cap is lifted once every retried sequence has ended. The engine is marked unhealthy
until `check_health` has run a forward again; waiting requests and later ones are served. A row whose logits hold
a NaN fails alone (`generation`); the others go on.

A request may name a LoRA adapter (`adapters`, `lora`): it holds the adapter from admission to its end, waits
outside the queue while the adapter's weights load on the load thread, and its prompt's cache blocks are named
under the adapter's registration; an unknown name fails at once with `adapter_not_found`.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures

import msgspec
import torch

from serving import tool_formats
from serving.constraints import GRAMMAR_INVALID, thinking_grammar
from serving.config import EngineConfig
from serving.engine import device_memory
from serving.engine.adapter_registry import Adapter, AdapterError
from serving.engine.adapters import AdapterManager
from serving.engine.batch import ForwardBatch
from serving.engine.block_manager import BlockManager
from serving.engine.detokenizer import Detokenizer
from serving.engine.grammar import Constraint, GrammarCache, GrammarError, GrammarProcess, GrammarProcessError
from serving.engine.limits import Limits, resolve_limits
from serving.engine.loader import LoadedModel, ModelLoadError, load_model
from serving.engine.lora import LoraStacks
from serving.engine.model_runner import ModelRunner
from serving.engine.pacer import StepPacer
from serving.engine.sampling import SampleOutput, SamplingState, sample
from serving.engine.scheduler import Scheduler
from serving.engine.sequence import Sequence, SequenceStatus
from serving.engine.stopping import StopCriteria, eos_token_ids
from serving.engine.validation import (
    InputValidator,
    Prompt,
    RequestError,
    check_grammar,
    invalid,
    added_tokens,
    template_text,
)
from serving.messages import (
    AdapterResult,
    AdapterSpec,
    Admitted,
    EngineEvent,
    ErrorKind,
    Failed,
    Finished,
    FinishReason,
    GenerateRequest,
    HealthResult,
    ModelInfo,
    TokenDelta,
    TokenInfo,
    TokenizeRequest,
    TokenizeResult,
)

logger = logging.getLogger(__name__)

BLOCK_SIZE = 16  # tokens per KV cache block
GRAMMARS_UNAVAILABLE = "grammars are not available with this model: "
IDLE_WAIT = 0.05  # seconds an otherwise idle step waits for a grammar's compile or an adapter's load


class LLMEngine:
    """Validates and queues requests, and advances every running one by a token per `step()`."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        self.loaded = loaded
        tokenizer = loaded.tokenizer
        # LORA_ADAPTERS: their slots are allocated before the KV cache's budget is measured, so it leaves them room
        stacks = LoraStacks.for_model(loaded.model, config.max_lora_adapters, config.max_lora_rank) \
            if config.lora_adapters else None
        pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
        self.limits, self.runner = self._size_cache(loaded, config, pad_id)
        blocks = self.runner.cache.blocks
        self.validator = InputValidator(tokenizer, self.limits)
        self.scheduler = Scheduler(self.limits, blocks)
        self.adapters = AdapterManager(config, self.runner, stacks)
        self._loading: list[Sequence] = []  # waiting for their LoRA adapter's weights, outside the queue
        self._fault_marker = config.fault_marker
        self._faulty: set[str] = set()
        if self._fault_marker:
            self._inject_faults()
        self.detokenizer = Detokenizer(tokenizer)
        self.eos_ids = eos_token_ids(tokenizer, getattr(loaded.model, "generation_config", None))
        self._requests: dict[str, Sequence] = {}
        self._sampling: tuple[tuple[Sequence, ...], SamplingState] | None = None  # kept while the rows stay
        self._healthy = True
        self._pacer = StepPacer()
        self._retry_cap: int | None = None  # rows allowed while sequences of a failed step are retried
        self._retried: set[str] = set()
        self._grammars: GrammarCache | None = None  # built on the first grammar
        self._compiling: list[Sequence] = []  # waiting for their grammar, outside the queue
        self._info = ModelInfo(
            model_id=loaded.model_id,
            model_sha=loaded.model_sha,
            model_pipeline_tag=None,
            max_input_tokens=self.limits.max_input_tokens,
            max_total_tokens=self.limits.max_total_tokens,
            max_batch_total_tokens=self.limits.max_batch_total_tokens,
            max_concurrent_requests=self.limits.max_concurrent_requests,
            dtype=str(loaded.dtype).removeprefix("torch."),
            device=loaded.device.type,
            device_map=loaded.device_map,
            has_chat_template=getattr(tokenizer, "chat_template", None) is not None,
            num_parameters=loaded.num_parameters,
            tool_format=tool_formats.detect(template_text(tokenizer)),
            added_tokens=added_tokens(tokenizer),
            reasoning=self.validator.reasoning,
            vocab_size=len(tokenizer),
            block_size=BLOCK_SIZE,
            num_blocks=blocks.num_blocks - 1,
            prefix_caching=config.prefix_caching,
            max_lora_adapters=config.max_lora_adapters,
            max_lora_rank=config.max_lora_rank,
        )

    @staticmethod
    def _size_cache(loaded: LoadedModel, config: EngineConfig, pad_id: int) -> tuple[Limits, ModelRunner]:
        """The limits, and the runner over a block pool of their size. On GPUs with no MAX_BATCH_TOTAL_TOKENS the
        pool is sized after a profiled forward of a full prefill step, run through a temporary pool just large
        enough for it, before the real pool is allocated."""
        model = loaded.model
        memory = (device_memory.gpu_memory({p.device for p in model.parameters()})
                  if config.max_batch_total_tokens is None else None)
        limits = resolve_limits(config, model, loaded.tokenizer, memory)
        runner = None
        if memory is not None:
            tokens = limits.max_batch_prefill_tokens
            longest = min(limits.max_input_tokens, tokens)  # the longest prompt a step can feed
            probe = BlockManager(tokens // BLOCK_SIZE + -(-tokens // longest) + 1, BLOCK_SIZE, prefix_caching=False)
            runner = ModelRunner(model, pad_id, probe, lean=config.lean_forward, decode_kernel=config.decode_kernel)
            with torch.inference_mode():
                activations = runner.activation_peak(tokens, longest, memory)
            limits = resolve_limits(config, model, loaded.tokenizer, memory, activations)
            logger.info("a prefill step of %d tokens peaks at %.1f MiB of activations", tokens, activations / 2**20)
        pool = max(limits.max_batch_total_tokens, limits.max_total_tokens)  # one sequence always fits
        blocks = BlockManager(-(-pool // BLOCK_SIZE) + 1, BLOCK_SIZE, prefix_caching=config.prefix_caching)
        if runner is None:
            return limits, ModelRunner(model, pad_id, blocks, lean=config.lean_forward,
                                       decode_kernel=config.decode_kernel)
        runner.reallocate(blocks)
        return limits, runner

    def _inject_faults(self) -> None:
        """Tests only (SERVING_FAULT_INJECTION): every forward whose step holds a marked request raises."""
        logger.warning("fault injection is on: prompts containing %r make their steps fail", self._fault_marker)
        forward = self.runner.run

        def faulty(batch: ForwardBatch) -> torch.Tensor:
            if any(chunk.sequence.request_id in self._faulty for chunk in batch.chunks):
                raise RuntimeError("injected fault")
            return forward(batch)

        self.runner.run = faulty  # type: ignore[method-assign]

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLMEngine:
        """Load the configured model, register LORA_ADAPTERS and warm up with one short forward (raises
        ModelLoadError naming a bad adapter)."""
        loaded = load_model(config)
        try:
            engine = cls(loaded, config)
            for spec in config.lora_adapters:
                engine.adapters.register_now(spec)
        except AdapterError as error:
            raise ModelLoadError(f"LORA_ADAPTERS: {error.message}") from None
        engine.warmup()
        return engine

    def warmup(self) -> None:
        """Run one single-token forward (raises when the model cannot run)."""
        with torch.inference_mode():
            self.runner.warmup()

    def check_health(self) -> bool:
        """Whether the engine can serve; after a failed step it first proves it with a one-token forward."""
        if not self._healthy:
            try:
                self.warmup()
                self._healthy = True
            except Exception:
                logger.exception("health check forward failed")
        return self._healthy

    def add_request(self, request: GenerateRequest, prompt: Prompt | None = None) -> list[EngineEvent]:
        """Validate and queue a request: `[Admitted]`, or `[Failed]` with TGI's message; `prompt` is its checked
        prompt when it was made elsewhere (the worker's tokenizer process)."""
        if len(self._requests) >= self.limits.max_concurrent_requests:
            return [Failed(request.request_id, ErrorKind.OVERLOADED, "Model is overloaded")]
        try:
            adapter = self._adapter(request)
            check_grammar(request)
            if prompt is None:
                prompt = self.validator.prompt(request)
            cache = self._grammar_cache() if request.sampling.grammar is not None else None
        except RequestError as error:
            return [Failed(request.request_id, error.kind, error.message, error.code)]
        refusal = self.adapters.request_load(adapter) if adapter is not None else None
        if refusal is not None:
            return [Failed(request.request_id, ErrorKind.OVERLOADED, refusal)]
        prompt_ids = prompt.ids
        stop = StopCriteria.build(request.stopping, len(prompt_ids), self.limits.max_total_tokens, self.eos_ids)
        sequence = Sequence.create(request.request_id, prompt_ids, request.sampling, stop, request.prefill_logprobs)
        if adapter is not None:
            self.adapters.registry.acquire(adapter)
            sequence.adapter, sequence.cache_root = adapter, adapter.cache_root
        self._requests[request.request_id] = sequence
        if self._fault_marker and self._fault_marker in (request.prompt or ""):
            self._faulty.add(request.request_id)
        if request.sampling.grammar is None:
            self._enqueue(sequence)
        else:
            grammar = request.sampling.grammar
            if grammar.after_thinking:
                grammar = thinking_grammar(grammar, self._info.added_tokens, prompt.thinking)
            assert cache is not None
            sequence.constraint = Constraint(cache.submit(grammar), cache.process)
            self._compiling.append(sequence)
        prompt_text = self.detokenizer.final_text(prompt_ids) if request.echo else None
        return [Admitted(request.request_id, sequence.input_length, sequence.seed, prompt_text, prompt.thinking)]

    # --- LoRA adapters: a sequence waits outside the queue until its adapter is resident ---

    def _adapter(self, request: GenerateRequest) -> Adapter | None:
        """The registered adapter the request names; None for the base model (no name, or an optional name while
        no adapter is registered at all); raises RequestError (ADAPTER_NOT_FOUND) naming an unknown one."""
        if request.adapter is None:
            return None
        adapter = self.adapters.registry.get(request.adapter)
        if adapter is None:
            if request.adapter_optional and not len(self.adapters.registry):
                return None
            raise RequestError(ErrorKind.ADAPTER_NOT_FOUND, f"adapter {request.adapter!r} is not registered")
        return adapter

    def _enqueue(self, sequence: Sequence) -> None:
        """Queue a sequence whose adapter is resident (or that has none); the others wait for their load."""
        if sequence.adapter is None or sequence.adapter.resident:
            self.scheduler.add(sequence)
        else:
            self._loading.append(sequence)

    def _queue_loaded(self, events: list[EngineEvent]) -> None:
        """Collect the ended adapter loads and answer their registrations; queue the sequences whose adapter is
        resident now, fail those whose load failed or can never happen, and start the loads that a freed slot
        allows."""
        failures = dict(self.adapters.poll())
        waiting = []
        for sequence in self._loading:
            adapter = sequence.adapter
            assert adapter is not None
            reason, kind = failures.get(adapter), ErrorKind.GENERATION  # files unusable since registration
            if reason is None:
                reason, kind = self.adapters.request_load(adapter), ErrorKind.OVERLOADED
            if reason is not None:
                self._forget(sequence.request_id)
                sequence.status = SequenceStatus.FINISHED
                events.append(Failed(sequence.request_id, kind, reason))
            elif adapter.resident:
                self.scheduler.add(sequence)
            else:
                waiting.append(sequence)
        self._loading = waiting

    def _forget(self, request_id: str) -> Sequence | None:
        """Drop a request that ended (or was aborted) and release its adapter; the sequence, if it was known."""
        sequence = self._requests.pop(request_id, None)
        if sequence is not None and sequence.adapter is not None:
            self.adapters.registry.release(sequence.adapter)
        return sequence

    def register_adapter(self, call_id: str, spec: AdapterSpec) -> AdapterResult | None:
        """Register a LoRA adapter: its result, or None when it comes later from `adapter_results`."""
        return self.adapters.register(call_id, spec)

    def unregister_adapter(self, call_id: str, name: str) -> AdapterResult:
        """Unregister a LoRA adapter (requests in flight on it finish first)."""
        return self.adapters.unregister(call_id, name)

    def adapter_results(self) -> list[AdapterResult]:
        """The register results that became known since the last call."""
        return self.adapters.take_results()

    def close(self) -> None:
        """Stop the adapters' load thread and the grammar process (the engine is stopping)."""
        self.adapters.close()
        if self._grammars is not None:
            self._grammars.process.close()

    # --- grammars: a constrained sequence waits outside the queue until its grammar is compiled ---

    def start_grammars(self) -> None:
        """Start the grammar process now rather than on the first grammar, which would otherwise wait for it: its
        tokenizer takes this thread 13 ms to serialize at 8k tokens and 0.34 s at 128k, and the process about 0.3 s
        to start and read it. The server does this at start-up; where grammars cannot work (a tokenizer llguidance
        cannot read), it says so in one line and serves the rest."""
        try:
            self._grammar_cache()
        except RequestError as error:
            logger.warning("%s", error.message)

    def _grammar_cache(self) -> GrammarCache:
        """The compile cache and its grammar process, started on first use and again if the process stopped (the
        sequences of the old one then fail: see `_queue_compiled` and `GrammarMasks`); raises `RequestError` when
        it cannot start."""
        if self._grammars is None or not self._grammars.process.alive:
            vocab = self.loaded.model.get_output_embeddings().out_features
            try:
                process = GrammarProcess(self.loaded.tokenizer, vocab, self.eos_ids)
            except Exception as exc:  # a slow tokenizer (no JSON for llguidance), or no process to start
                raise invalid(f"{GRAMMARS_UNAVAILABLE}{exc}") from None
            self._grammars = GrammarCache(process)
        return self._grammars

    def _queue_compiled(self, events: list[EngineEvent]) -> None:
        """Queue the sequences whose grammar is ready; fail those whose grammar did not compile."""
        waiting = []
        for sequence in self._compiling:
            assert sequence.constraint is not None
            if not sequence.constraint.template.done():
                waiting.append(sequence)
                continue
            try:
                sequence.constraint.start()
            except GrammarError as error:
                self._forget(sequence.request_id)
                sequence.status = SequenceStatus.FINISHED
                failure = invalid(f"{GRAMMAR_INVALID}{error}")
                events.append(Failed(sequence.request_id, failure.kind, failure.message))
                continue
            except GrammarProcessError as error:
                self._fail_sequence(sequence, f"Request failed during generation: {error}", events)
                continue
            self._enqueue(sequence)
        self._compiling = waiting

    # --- end of grammars ---

    def abort(self, request_id: str) -> None:
        """Forget a request: it leaves the queue now, or its row at the next step; it emits nothing more."""
        sequence = self._forget(request_id)
        if sequence is None:
            return
        if sequence in self._compiling:
            self._compiling.remove(sequence)
        elif sequence in self._loading:
            self._loading.remove(sequence)
        elif sequence.status is SequenceStatus.WAITING:
            self.scheduler.remove(sequence)
        sequence.status = SequenceStatus.ABORTED

    def fail_all(self, kind: ErrorKind, message: str) -> list[EngineEvent]:
        """End every request, queued or running, with a `Failed` (the engine is stopping)."""
        events: list[EngineEvent] = [Failed(request_id, kind, message) for request_id in self._requests]
        for request_id in list(self._requests):
            self.abort(request_id)
        return events

    def has_work(self) -> bool:
        """Whether `step()` has anything to do."""
        return bool(self._requests) or bool(self.scheduler.running) or self.adapters.loading()

    def stats(self) -> tuple[int, int]:
        """(running, waiting) sequences."""
        return len(self.scheduler.running), len(self.scheduler.waiting) + len(self._compiling) + len(self._loading)

    def batch_tokens(self) -> int:
        """The tokens the KV cache blocks in use hold room for."""
        return self.scheduler.blocks.used_blocks * BLOCK_SIZE

    def health(self, call_id: str) -> HealthResult:
        """Health (see `check_health`), load and KV cache usage."""
        running, waiting = self.stats()
        blocks = self.scheduler.blocks
        return HealthResult(call_id=call_id, healthy=self.check_health(), running=running, waiting=waiting,
                            batch_tokens=self.batch_tokens(), blocks_used=blocks.used_blocks,
                            blocks_free=blocks.free_blocks, prefix_queried_tokens=blocks.stats.queried_tokens,
                            prefix_hit_tokens=blocks.stats.hit_tokens, preemptions=self.scheduler.preemptions)

    def info(self) -> ModelInfo:
        """The loaded model's facts, the resolved limits and the LoRA adapters registered now."""
        return msgspec.structs.replace(self._info, adapters=self.adapters.info())

    def tokenize(self, request: TokenizeRequest) -> TokenizeResult:
        """Tokenize text, or a chat rendered by the template, with each token's byte offsets."""
        return self.validator.tokenize(request)

    def step(self) -> list[EngineEvent]:
        """One step: a forward over the scheduled chunks; the `TokenDelta`, `Finished` and `Failed` events."""
        events: list[EngineEvent] = []
        with torch.inference_mode():
            try:
                self._step(events)
            except Exception as exc:
                self._fail_running(exc, events)
        return events

    def _step(self, events: list[EngineEvent]) -> None:
        """Queue the sequences whose grammar is ready; schedule, run the forward, record what it computed and
        sample where a chunk ends its sequence."""
        if (self._compiling or self.adapters.loading()) and not self.scheduler.running and not self.scheduler.waiting:
            # nothing else to do: wait a little for a compile or a load to end rather than spin
            pending = [s.constraint.template for s in self._compiling if s.constraint is not None]
            futures.wait(pending + self.adapters.pending(), timeout=IDLE_WAIT, return_when=futures.FIRST_COMPLETED)
        if self._compiling:
            self._queue_compiled(events)
        if self._loading or self.adapters.loading():  # after the compiles: a compiled sequence may wait for a load
            self._queue_loaded(events)
        self._retried &= self._requests.keys()
        if not self._retried:
            self._retry_cap = None
        chunks = self.scheduler.schedule(self._retry_cap, self._pacer.prompt_tokens)
        if not chunks:
            return
        started = time.perf_counter()
        batch = self.runner.prepare(chunks)
        logits = self.runner.run(batch)
        self.scheduler.computed(chunks)
        decodes = sum(1 for chunk in chunks if chunk.count == 1)
        self._pacer.record(decodes, batch.tokens - decodes, time.perf_counter() - started, self.scheduler.paced,
                           sum(chunk.start for chunk in chunks if chunk.count > 1))
        if any(rows for _, rows in batch.prompt_rows):
            self.runner.record_prompt_logprobs(batch, logits)
        if batch.sample_rows:
            if len(batch.sample_rows) != logits.shape[0]:
                logits = logits[torch.tensor(batch.sample_rows, device=logits.device)]
            self._advance([chunk.sequence for chunk in batch.chunks if chunk.samples], logits, events)

    def _advance(self, sequences: list[Sequence], logits: torch.Tensor, events: list[EngineEvent]) -> None:
        """Sample a token for every sequence (a row of `logits`) and emit its events."""
        broken = torch.isnan(logits.amax(dim=-1)).tolist()  # amax propagates NaN; 10x cheaper than isnan().any()
        if any(broken):
            keep = [row for row, bad in enumerate(broken) if not bad]
            for row in (row for row, bad in enumerate(broken) if bad):
                self._fail_sequence(sequences[row], "Request failed during generation: NaN in the logits", events)
            if not keep:
                return
            sequences = [sequences[row] for row in keep]
            logits = logits[torch.tensor(keep, device=logits.device)]
        rows = tuple(sequences)
        if self._sampling is None or self._sampling[0] != rows:
            self._sampling = rows, SamplingState.build(sequences, logits.shape[-1], self.eos_ids, logits.device)
        state = self._sampling[1]
        output = sample(logits, state)
        self._emit(sequences, output, events)
        state.record(output.ids)  # after the emit, so the tokens go out first; the grammar process then advances

    def _emit(self, sequences: list[Sequence], output: SampleOutput, events: list[EngineEvent]) -> None:
        """Append each row's token, emit its `TokenDelta` (or `Finished`, with the last token)."""
        ids = output.ids.tolist()
        logprobs = output.logprobs.tolist() if output.logprobs is not None else [None] * len(ids)
        top_tokens = self._top_tokens(sequences, output)
        for sequence, token_id in zip(sequences, ids):
            sequence.token_ids.append(token_id)
        texts = self.detokenizer.step([(s.token_ids, s.decode) for s in sequences])
        special = self.detokenizer.special_ids
        for row, sequence in enumerate(sequences):
            token_id, text = ids[row], texts[row]
            reason = sequence.stop.check(token_id, sequence.generated, text)
            if reason is not None and text == "":
                text = self.detokenizer.flush(sequence.token_ids, sequence.decode)
            token = TokenInfo(id=token_id, text=sequence.stop.cut(text), logprob=logprobs[row],
                              special=token_id in special)
            if reason is None:
                events.append(TokenDelta(sequence.request_id, token, top_tokens[row]))
            else:
                events.append(self._finish(sequence, reason, token, top_tokens[row]))

    def _top_tokens(self, sequences: list[Sequence], output: SampleOutput) -> list[tuple[TokenInfo, ...]]:
        """Each row's `top_n_tokens` best alternatives (empty where not asked for)."""
        if output.top_ids is None or output.top_logprobs is None:
            return [()] * len(sequences)
        top_ids, top_logprobs = output.top_ids.tolist(), output.top_logprobs.tolist()
        texts = iter(self.detokenizer.token_texts([t for row in top_ids for t in row]))
        special = self.detokenizer.special_ids
        result = []
        for sequence, row_ids, row_logprobs in zip(sequences, top_ids, top_logprobs):
            infos = [TokenInfo(id=t, text=next(texts), logprob=lp, special=t in special)
                     for t, lp in zip(row_ids, row_logprobs)]
            result.append(tuple(infos[:sequence.sampling.top_n_tokens]))
        return result

    def _finish(self, sequence: Sequence, reason: FinishReason, token: TokenInfo,
                top_tokens: tuple[TokenInfo, ...]) -> Finished:
        """End a sequence normally with its last token, and describe it."""
        sequence.status = SequenceStatus.FINISHED
        self._forget(sequence.request_id)
        self.scheduler.finish(sequence)
        now = time.monotonic()
        scheduled_at = sequence.scheduled_at if sequence.scheduled_at is not None else now
        return Finished(
            request_id=sequence.request_id,
            finish_reason=reason,
            generated_tokens=sequence.generated,
            generated_text=self._generated_text(sequence),
            input_length=sequence.input_length,
            seed=sequence.seed,
            queue_time=scheduled_at - sequence.arrival,
            inference_time=now - scheduled_at,
            token=token,
            prefill=self._prefill_tokens(sequence),
            top_tokens=top_tokens,
        )

    def _generated_text(self, sequence: Sequence) -> str:
        """The output with special tokens skipped, ending where a stop string ended it (a special token's text,
        in which a stop string may also end, is not part of it)."""
        text = self.detokenizer.final_text(sequence.output_ids)
        return text if sequence.token_ids[-1] in self.detokenizer.special_ids else sequence.stop.cut(text)

    def _prefill_tokens(self, sequence: Sequence) -> tuple[TokenInfo, ...]:
        """The prompt's tokens with their logprobs, when the request asked for them."""
        if sequence.prompt_logprobs is None:
            return ()
        prompt = sequence.prompt_ids
        special = self.detokenizer.special_ids
        return tuple(TokenInfo(id=token_id, text=text, logprob=logprob, special=token_id in special)
                     for token_id, text, logprob in zip(prompt, self.detokenizer.token_texts(prompt),
                                                        sequence.prompt_logprobs))

    def _fail_sequence(self, sequence: Sequence, message: str, events: list[EngineEvent]) -> None:
        """End one running sequence with a `generation` failure."""
        logger.warning("request %s failed: %s", sequence.request_id, message)
        if sequence.status is SequenceStatus.RUNNING:
            self.scheduler.finish(sequence)
        sequence.status = SequenceStatus.FINISHED
        self._forget(sequence.request_id)
        self._faulty.discard(sequence.request_id)
        events.append(Failed(sequence.request_id, ErrorKind.GENERATION, message))

    def _fail_running(self, exc: Exception, events: list[EngineEvent]) -> None:
        """After a failed step: fail its sequence when it ran alone, else requeue them all at a smaller batch size."""
        logger.exception("generation step failed")
        self._sampling = None
        for sequence in [s for s in self.scheduler.running if s.status is not SequenceStatus.RUNNING]:
            self.scheduler.finish(sequence)
        running = self.scheduler.running
        if len(running) == 1:
            self._fail_sequence(running[0], f"Request failed during generation: {exc}", events)
        elif running:
            sequences = self.scheduler.requeue_running()
            self._retry_cap = max(1, len(sequences) // 2)
            self._retried.update(s.request_id for s in sequences)
            logger.warning("retrying %d sequences at most %d at a time", len(sequences), self._retry_cap)
        self._healthy = False
