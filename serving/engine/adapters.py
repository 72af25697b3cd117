"""The engine's LoRA adapters at run time: register and unregister calls, and loads on a worker thread.

Finding, downloading, reading and checking an adapter's files, and writing its weights into its slot, run on one
worker thread, never in a step: the step loop only starts a load (`register`, `request_load`) and, at each
step's start, collects those that ended (`poll`). A registration is visible by name once its files are checked
(and, with `preload` or `pin`, its weights are resident); its `AdapterResult` comes then. Without `preload` the
files are still read and checked at registration (so that a bad adapter is refused then), and loaded again at
the first request. Requests whose adapter is not resident wait outside the scheduler (`LLMEngine`) until its load
ends.
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass, field

from serving.config import EngineConfig
from serving.engine.adapter_files import AdapterWeights, adapter_directory, read_adapter
from serving.engine.adapter_registry import Adapter, AdapterError, AdapterRegistry
from serving.engine.lora import LoraStacks, projection_shapes
from serving.engine.model_runner import ModelRunner
from serving.messages import AdapterInfo, AdapterResult, AdapterSpec, AdapterStatus

logger = logging.getLogger(__name__)


@dataclass
class _Load:
    """A load on the worker thread: a registration (answering `calls` when it ends) or a request's reload."""

    adapter: Adapter
    future: futures.Future[AdapterWeights]
    registration: bool
    calls: list[str] = field(default_factory=list)


class AdapterManager:
    """Registered adapters, their slots in the runner's `LoraStacks`, and the loads under way."""

    def __init__(self, config: EngineConfig, runner: ModelRunner, stacks: LoraStacks | None = None) -> None:
        """Adapters for the model `runner` runs; `stacks` when they were allocated already (LORA_ADAPTERS)."""
        self.config = config
        self.registry = AdapterRegistry(config.max_lora_adapters)
        self._runner = runner
        self._shapes = projection_shapes(runner.model)
        self._stacks: LoraStacks | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._loads: list[_Load] = []
        self._results: list[AdapterResult] = []
        if stacks is not None:
            self._enable(stacks)

    def _enable(self, stacks: LoraStacks) -> None:
        """Give the runner the slots' tensors."""
        self._runner.enable_lora(stacks)
        self._stacks = stacks

    def stacks(self) -> LoraStacks:
        """The slots' tensors, allocated with the first adapter that is loaded; raises NO_ROOM when the memory is
        not there (LORA_ADAPTERS allocates them before the KV cache takes its share)."""
        if self._stacks is None:
            config = self.config
            try:
                stacks = LoraStacks.for_model(self._runner.model, config.max_lora_adapters, config.max_lora_rank)
            except RuntimeError as error:  # torch.OutOfMemoryError included
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise AdapterError(AdapterStatus.NO_ROOM, f"no memory for {config.max_lora_adapters} LoRA adapter "
                                   f"slots of rank {config.max_lora_rank}: {first}; lower MAX_LORA_ADAPTERS or "
                                   "MAX_LORA_RANK, or name an adapter in LORA_ADAPTERS so that the slots are "
                                   "allocated before the KV cache") from None
            self._enable(stacks)
        assert self._stacks is not None
        return self._stacks

    def loading(self) -> bool:
        """Whether a load is under way."""
        return bool(self._loads)

    def info(self) -> tuple[AdapterInfo, ...]:
        """The registered adapters as `/info` shows them."""
        return tuple(adapter.info() for adapter in self.registry.registered())

    def register(self, call_id: str, spec: AdapterSpec) -> AdapterResult | None:
        """Start registering `spec`: its result now (done, or refused), or None when it comes from `results`
        once the files are checked (and loaded, with `preload` or `pin`)."""
        try:
            if self.registry.check(spec) is not None:
                return AdapterResult(call_id, AdapterStatus.OK, f"Adapter {spec.name} registered")
            pending = next((load for load in self._loads if load.registration and load.adapter.name == spec.name),
                           None)
            if pending is not None:
                if pending.adapter.spec.source != spec.source:
                    raise AdapterError(AdapterStatus.BAD_REQUEST, f"adapter name {spec.name!r} is being "
                                       f"registered with the source {pending.adapter.spec.source!r}")
                pending.calls.append(call_id)
                return None
            adapter = self.registry.new(spec)
            if spec.preload or spec.pinned:
                self.stacks()
                self.registry.claim_slot(adapter)
        except AdapterError as error:
            return AdapterResult(call_id, error.status, error.message)
        self._start(adapter, registration=True, calls=[call_id])
        return None

    def register_now(self, spec: AdapterSpec) -> None:
        """Register and load an adapter before serving (LORA_ADAPTERS); raises AdapterError."""
        result = self.register("start-up", spec)
        while result is None:
            futures.wait(self.pending())
            self.poll()
            result = next((r for r in self.take_results() if r.call_id == "start-up"), None)
        if result.status is not AdapterStatus.OK:
            raise AdapterError(result.status, result.message)
        logger.info("LoRA adapter %s registered from %s", spec.name, spec.source)

    def unregister(self, call_id: str, name: str) -> AdapterResult:
        """Unregister `name` now: new requests no longer find it; its weights go when its last request ends."""
        try:
            self.registry.remove(name)
        except AdapterError as error:
            return AdapterResult(call_id, error.status, error.message)
        logger.info("LoRA adapter %s unregistered", name)
        return AdapterResult(call_id, AdapterStatus.OK, f"Adapter {name} unregistered")

    def request_load(self, adapter: Adapter) -> str | None:
        """Make sure an adapter that a request needs is resident or loading; why it never can be, else None.
        While every slot is pinned or in use it stays unloaded: call again at a later step."""
        if adapter.slot is not None:
            return None
        try:
            self.stacks()
            self.registry.claim_slot(adapter)
        except AdapterError as error:
            if error.status is AdapterStatus.NO_ROOM and not self.registry.all_pinned():
                return None  # a slot frees when a request ends
            return error.message
        self._start(adapter, registration=False)
        return None

    def _start(self, adapter: Adapter, registration: bool, calls: list[str] | None = None) -> None:
        """Read (and, with a slot, place) the adapter on the worker thread."""
        if self._executor is None:
            self._executor = futures.ThreadPoolExecutor(1, thread_name_prefix="lora-load")
        slot, stacks = adapter.slot, (self.stacks() if adapter.slot is not None else None)

        def load() -> AdapterWeights:
            weights = read_adapter(adapter_directory(adapter.spec, self.config), adapter.name, self._shapes,
                                   self.config.max_lora_rank, self._runner.model.dtype)
            if stacks is not None and slot is not None:
                stacks.write(slot, weights)
            return weights

        self._loads.append(_Load(adapter, self._executor.submit(load), registration, calls or []))

    def poll(self) -> list[tuple[Adapter, str]]:
        """Finish the loads that ended: registrations get their results; the adapters whose load for requests
        failed are returned with the reason."""
        failed: list[tuple[Adapter, str]] = []
        running = []
        for load in self._loads:
            if not load.future.done():
                running.append(load)
                continue
            adapter = load.adapter
            try:
                weights = load.future.result()
            except AdapterError as error:
                status, message = error.status, error.message
            except Exception as error:  # an unexpected fault in a load ends the load, not the engine
                logger.exception("loading LoRA adapter %s failed", adapter.name)
                status, message = AdapterStatus.LOAD_FAILED, f"adapter {adapter.name!r} cannot be loaded: {error}"
            else:
                self.registry.loaded(adapter)
                if load.registration:
                    self.registry.publish(adapter, weights.rank, weights.target_modules)
                    self._answer(load, AdapterStatus.OK, f"Adapter {adapter.name} registered")
                continue
            self.registry.free(adapter)
            if load.registration:
                self._answer(load, status, message)
            else:
                failed.append((adapter, message))
        self._loads = running
        return failed

    def _answer(self, load: _Load, status: AdapterStatus, message: str) -> None:
        """Queue the results of a registration's calls."""
        self._results.extend(AdapterResult(call_id, status, message) for call_id in load.calls)

    def take_results(self) -> list[AdapterResult]:
        """The register results that became known since the last call."""
        results, self._results = self._results, []
        return results

    def pending(self) -> list[futures.Future[AdapterWeights]]:
        """The loads under way, to wait on."""
        return [load.future for load in self._loads]

    def close(self) -> None:
        """Stop the worker thread (a load under way is finished first)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
