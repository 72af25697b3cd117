"""The token limits the engine enforces, resolved once from the configuration, the model and the machine.

- MAX_TOTAL_TOKENS: configured, else the smaller of the model's context (`max_position_embeddings` or its
  synonyms) and the tokenizer's `model_max_length` when that is a real value (< 1e6); else 4096. When only
  MAX_INPUT_TOKENS is configured it is raised to at least MAX_INPUT_TOKENS + 1.
- MAX_INPUT_TOKENS: configured, else MAX_TOTAL_TOKENS - 1.
- MAX_BATCH_PREFILL_TOKENS: configured, else 4096 (TGI's default) on GPUs and 2048 (vLLM's CPU default) for a
  model wholly on the CPU, where a step of 4,096 prompt tokens takes a third of a second on the smallest model and
  every stream waits for it: half the budget gave the same throughput and 0.55-0.65x the time to first token in
  the mixed-length benchmark (`docs/performance.md`). The token budget of a step: decoding rows count one token
  each, prefill chunks the tokens they feed (a longer prompt is prefilled in chunks over several steps).
- MAX_BATCH_TOTAL_TOKENS: the KV cache's size in tokens (its block pool). Configured, else, on the CPU, 40% of
  the available RAM divided among ENGINE_REPLICAS; on GPUs, CUDA_MEMORY_FRACTION of their memory less what is
  allocated (the weights) and the activation peak of a profiled forward of MAX_BATCH_PREFILL_TOKENS tokens (the
  engine runs it before it allocates the pool; `device_memory`), or a bound on it computed from the config when
  not profiled; divided by the KV bytes per token, and at least MAX_TOTAL_TOKENS (so that one sequence always
  fits). Blocks are taken as tokens are made; when they run out the newest sequences are preempted (see
  `scheduler`).
- MAX_BATCH_SIZE: configured, else unlimited (MAX_CONCURRENT_REQUESTS bounds it anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psutil
import torch

from serving.config import EngineConfig
from serving.engine.device_memory import DeviceMemory, kv_budget

DEFAULT_MAX_TOTAL_TOKENS = 4096
DEFAULT_MAX_BATCH_PREFILL_TOKENS = 4096
DEFAULT_CPU_MAX_BATCH_PREFILL_TOKENS = 2048
FALLBACK_MAX_BATCH_TOTAL_TOKENS = 16384
KV_CACHE_MEMORY_FRACTION = 0.4
SANE_MODEL_MAX_LENGTH = 1_000_000
CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


@dataclass(frozen=True)
class Limits:
    """Validation limits and scheduler budgets, all resolved to numbers (`max_batch_size` None: unlimited)."""

    max_input_tokens: int
    max_total_tokens: int
    max_batch_prefill_tokens: int
    max_batch_total_tokens: int
    max_batch_size: int | None
    max_concurrent_requests: int


def _text_config(model_config: Any) -> Any:
    """The decoder's part of a (possibly multimodal) model config."""
    return model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config


def model_context_length(model_config: Any, tokenizer: Any) -> int | None:
    """The longest sequence the model and tokenizer declare, or None when neither says."""
    config = _text_config(model_config)
    declared = next((v for v in (getattr(config, name, None) for name in CONTEXT_ATTRIBUTES)
                     if isinstance(v, int) and v > 0), None)
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if not (isinstance(tokenizer_max, int) and 0 < tokenizer_max < SANE_MODEL_MAX_LENGTH):
        tokenizer_max = None
    return min((v for v in (declared, tokenizer_max) if v), default=None)


def kv_bytes_per_token(model_config: Any, dtype: torch.dtype) -> int | None:
    """Key and value bytes one token takes in the cache over all layers, or None when the config is unusual."""
    config = _text_config(model_config)
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    if not (layers and kv_heads and head_dim):
        return None
    return 2 * layers * kv_heads * head_dim * dtype.itemsize


def activation_bytes(model_config: Any, dtype: torch.dtype, tokens: int) -> int:
    """A bound on the activations of a forward of `tokens` tokens: the widest MLP and the logits, twice over."""
    config = _text_config(model_config)
    hidden = getattr(config, "hidden_size", 0) or 0
    width = 4 * hidden + 3 * (getattr(config, "intermediate_size", 0) or 4 * hidden)
    return 2 * tokens * (width + (getattr(config, "vocab_size", 0) or 0)) * dtype.itemsize


def free_memory_bytes() -> int:
    """The machine's available RAM."""
    return int(psutil.virtual_memory().available)


def kv_memory_bytes(config: EngineConfig, memory: DeviceMemory | None, activations: int) -> int:
    """The memory the KV cache may take: on GPUs (`memory`) their memory times CUDA_MEMORY_FRACTION less what is
    allocated and `activations`; on the CPU a share of the available RAM, divided among the replicas."""
    if memory is not None:
        return kv_budget(memory, config.memory_fraction, activations)
    return int(free_memory_bytes() * KV_CACHE_MEMORY_FRACTION) // max(1, config.replicas)


def resolve_limits(config: EngineConfig, model: Any, tokenizer: Any, memory: DeviceMemory | None = None,
                   activations: int | None = None) -> Limits:
    """Every limit, from the configuration where set and from the model and the free memory otherwise (`memory`:
    the GPUs' probes, None on the CPU; `activations`: the profiled peak of a prefill step, else estimated)."""
    max_total = config.max_total_tokens
    if max_total is None:
        max_total = model_context_length(model.config, tokenizer) or DEFAULT_MAX_TOTAL_TOKENS
        if config.max_input_tokens is not None:
            max_total = max(max_total, config.max_input_tokens + 1)
    max_input = config.max_input_tokens or max_total - 1
    prefill = config.max_batch_prefill_tokens or (
        DEFAULT_CPU_MAX_BATCH_PREFILL_TOKENS if all(p.device.type == "cpu" for p in model.parameters())
        else DEFAULT_MAX_BATCH_PREFILL_TOKENS)
    batch_total = config.max_batch_total_tokens
    if batch_total is None:
        per_token = kv_bytes_per_token(model.config, model.dtype)
        if activations is None:
            activations = activation_bytes(model.config, model.dtype, prefill)
        budget = (kv_memory_bytes(config, memory, activations) // per_token if per_token
                  else FALLBACK_MAX_BATCH_TOTAL_TOKENS)
        batch_total = max(max_total, budget)
    return Limits(
        max_input_tokens=max_input,
        max_total_tokens=max_total,
        max_batch_prefill_tokens=prefill,
        max_batch_total_tokens=batch_total,
        max_batch_size=config.max_batch_size,
        max_concurrent_requests=config.max_concurrent_requests,
    )
