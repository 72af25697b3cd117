"""Forward passes over the paged KV cache, which the runner owns: one forward per step for all its chunks.

A supported Llama-family model runs `LeanForward`; any other model runs its own transformers forward on the
flattened step (`[1, tokens]` with explicit positions) with the `serving_paged` attention function installed, which
writes and reads the same cache. Models whose attention that cannot reproduce are refused at start-up with one
line (`unsupported_reason`): sliding-window or hybrid layers, logit soft-capping, encoder-decoders, remote code.
Logits are computed only for the rows the engine reads: the last token of each chunk that samples, and every
position of a chunk whose request asked for its prompt's logprobs (position i scores prompt token i + 1).
Callers hold `torch.inference_mode()`.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import logging
from typing import Any

import torch
from torch import Tensor

from serving.engine import attention, lora
from serving.engine.attention import GatheredSdpa
from serving.engine.batch import Chunk, ForwardBatch, in_group_order
from serving.engine.adapter_registry import AdapterError
from serving.engine.block_manager import BlockManager
from serving.engine.cpu_kernels import fast_prefill, load as load_decode_kernel
from serving.engine.device_memory import DeviceMemory, activation_peak
from serving.engine.kv_cache import PagedKVCache, layer_devices
from serving.engine.lean_forward import LeanForward
from serving.engine.loader import ModelLoadError
from serving.engine.lora import LoraStacks, LoraStep, install_hooks
from serving.engine.sequence import Sequence
from serving.engine.stopping import StopCriteria
from serving.messages import AdapterStatus, SamplingParams

DECODE_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
logger = logging.getLogger(__name__)


def unsupported_reason(model: Any) -> str | None:
    """Why the paged cache cannot serve `model` through its own forward, or None when it can."""
    config = model.config.get_text_config()
    if type(model).__module__.split(".")[:2] != ["transformers", "models"]:
        return "remote code (its attention cannot be checked)"
    if getattr(model.config, "is_encoder_decoder", False):
        return "an encoder-decoder"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return "hybrid layers (" + ", ".join(sorted(set(config.layer_types) - {"full_attention"})) + ")"
    if getattr(config, "attn_logit_softcapping", None):
        return "attention logit soft-capping"
    return None


def kv_shape(model: Any) -> tuple[int, int]:
    """(kv_heads, head_dim) of the model's attention."""
    config = model.config.get_text_config()
    heads = config.num_attention_heads
    return (getattr(config, "num_key_value_heads", None) or heads,
            getattr(config, "head_dim", None) or config.hidden_size // heads)


class ModelRunner:
    """Runs the model for the engine over its paged KV cache; knows nothing about requests beyond token ids."""

    def __init__(self, model: Any, pad_id: int, blocks: BlockManager, lean: bool = True,
                 decode_kernel: bool = False) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device: torch.device = model.get_input_embeddings().weight.device
        self.lean = LeanForward.build(model) if lean else None  # Llama-family models: the same forward, fewer ops
        if self.lean is None:
            reason = unsupported_reason(model)
            try:
                if reason is None:
                    attention.install(model)
                    devices = layer_devices(model)
            except (ValueError, AttributeError) as error:
                reason = str(error)
            if reason is not None:
                raise ModelLoadError(f"the paged KV cache cannot serve this model: {reason}")
        else:
            devices = [self.device] * len(self.lean.layers)
        parameters = inspect.signature(model.forward).parameters
        self._keep_argument = "logits_to_keep" in parameters
        # where the last hidden states are (a model split over devices ends on another device than it starts)
        head = model.get_output_embeddings()
        tensor = next(itertools.chain(head.parameters(), head.buffers()), None) if head is not None else None
        self._head_device = tensor.device if tensor is not None else self.device
        self._devices = devices
        kernels = decode_kernel and self._decode_kernel_loads()
        self._attention = GatheredSdpa(decode_kernel=kernels, prefill_kernel=kernels and fast_prefill())
        if kernels and self.lean is not None:
            self.lean.use_kernels()
        self.cache = self._allocate(blocks)
        self.lora: LoraStacks | None = None  # LoRA adapters' slots, from the first adapter on (`enable_lora`)
        self._split = len(set(devices)) > 1

    def _decode_kernel_loads(self) -> bool:
        """Whether the CPU decode kernel serves this model (every layer on the CPU, a dtype it takes) and loads;
        says why not when it should have but did not."""
        if any(device.type != "cpu" for device in self._devices) or self.model.dtype not in DECODE_KERNEL_DTYPES:
            return False
        reason = load_decode_kernel()
        if reason is not None:
            logger.warning("the CPU decode kernel is unavailable (%s): decode attention gathers blocks for SDPA",
                           reason)
        return reason is None

    def _allocate(self, blocks: BlockManager) -> PagedKVCache:
        """A cache of `blocks`' slots on the layers' devices."""
        kv_heads, head_dim = kv_shape(self.model)
        return PagedKVCache(self._devices, kv_heads, head_dim, self.model.dtype, blocks, self._attention)

    def reallocate(self, blocks: BlockManager) -> None:
        """Replace the cache by one of `blocks`' slots (the old one is freed first)."""
        del self.cache
        self.cache = self._allocate(blocks)

    def activation_peak(self, tokens: int, max_length: int, memory: DeviceMemory) -> int:
        """The bytes a prefill step of `tokens` prompt tokens (random ids, in prompts of at most `max_length`
        tokens, every position's logits and prompt logprobs computed: the largest step a request can make) holds
        at its peak beyond the weights and this runner's cache, which must have blocks for all of them."""
        vocab = self.model.get_input_embeddings().num_embeddings
        generator = torch.Generator().manual_seed(0)
        lengths = [min(max_length, tokens - start) for start in range(0, tokens, max_length)]
        sequences = [Sequence.create(f"profile{index}", ids.tolist(), SamplingParams(), StopCriteria(1, frozenset()),
                                     prompt_logprobs=True)
                     for index, ids in enumerate(torch.randint(vocab, (tokens,), generator=generator).split(lengths))]
        blocks = self.cache.blocks
        for sequence in sequences:
            sequence.block_table, _ = blocks.allocate(sequence.token_ids, use_cache=False)

        def forward() -> None:
            batch = self.prepare([Chunk(sequence, 0, len(sequence.token_ids)) for sequence in sequences])
            self.record_prompt_logprobs(batch, self.run(batch))

        try:
            return activation_peak(memory, forward)
        finally:
            for sequence in sequences:
                blocks.free(sequence.block_table)

    def enable_lora(self, stacks: LoraStacks) -> None:
        """Serve LoRA adapters from `stacks`' slots (transformers' forward gets its hooks); refused for a model
        split over several devices."""
        if self._split:
            raise AdapterError(AdapterStatus.LOAD_FAILED, "LoRA adapters are not served on a model split over "
                               "several GPUs")
        self.lora = stacks
        if self.lean is None:
            install_hooks(self.model)

    def prepare(self, chunks: list[Chunk]) -> ForwardBatch:
        """The forward inputs of a step's chunks, in the order of their attention groups (`batch.in_group_order`);
        with LoRA adapters, then ordered by adapter (decoding ones first, as the scheduler plans them) and their
        rows' segments (`lora.LoraStep`). `batch.chunks` is the order of the logits rows."""
        chunks = in_group_order(chunks)
        if self.lora is None or all(chunk.sequence.adapter is None for chunk in chunks):
            return self.cache.prepare(chunks)
        chunks = sorted(chunks, key=lambda c: (c.count > 1, -1 if c.sequence.adapter is None
                                               else c.sequence.adapter.slot))
        spans, first = [], 0
        for chunk in chunks:
            adapter = chunk.sequence.adapter
            spans.append((None, first, chunk.count, 0) if adapter is None
                         else (adapter.slot, first, chunk.count, adapter.rank or 0))
            first += chunk.count
        return dataclasses.replace(self.cache.prepare(chunks), lora=LoraStep.build(self.lora, spans))

    def run(self, batch: ForwardBatch) -> Tensor:
        """One forward of the step: writes every chunk's keys and values; the logits [logit rows, vocab]."""
        if self.lean is not None:
            return self.lean(batch, self.cache)
        keep = {"logits_to_keep": batch.logits_index.to(self._head_device)} if self._keep_argument else {}
        active = lora.ACTIVE.set(batch.lora)
        try:
            logits = self.model(input_ids=batch.input_ids[None], position_ids=batch.positions[None],
                                use_cache=False, serving_step=(batch, self.cache), **keep).logits[0]
        finally:
            lora.ACTIVE.reset(active)
        return logits if self._keep_argument else logits.index_select(0, batch.logits_index.to(logits.device))

    @staticmethod
    def record_prompt_logprobs(batch: ForwardBatch, logits: Tensor) -> None:
        """Append to each asking sequence's `prompt_logprobs` those of the prompt tokens its chunk's positions
        score, in order (positions scored before, by a forward that was then undone, are skipped)."""
        for chunk, (first, rows) in zip(batch.chunks, batch.prompt_rows):
            if not rows:
                continue
            sequence = chunk.sequence
            recorded = sequence.prompt_logprobs
            assert recorded is not None
            if not recorded:
                recorded.append(None)
            low = max(chunk.start, len(recorded) - 1)
            high = min(chunk.start + chunk.count, sequence.input_length - 1)
            if high <= low:
                continue
            scores = logits[first + low - chunk.start:first + high - chunk.start].float()
            index = torch.tensor(sequence.token_ids[low + 1:high + 1], device=scores.device)[:, None]
            values = scores.gather(1, index).squeeze(1) - scores.logsumexp(dim=-1)
            recorded.extend(values.tolist())

    def warmup(self) -> None:
        """One forward of a single token in a block of its own, which proves the model runs."""
        blocks = self.cache.blocks
        sequence = Sequence.create("warmup", [self.pad_id], SamplingParams(), StopCriteria(1, frozenset()))
        sequence.block_table, _ = blocks.allocate(sequence.token_ids, use_cache=False)
        try:
            self.run(self.prepare([Chunk(sequence, 0, 1)]))
        finally:
            blocks.free(sequence.block_table)
