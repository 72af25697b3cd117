"""The token limits the engine enforces, resolved once from the configuration, the model and the machine.

- MAX_TOTAL_TOKENS: configured, else the smaller of the model's context (`max_position_embeddings` or its
  synonyms) and the tokenizer's `model_max_length` when that is a real value (< 1e6); else 4096. When only
  MAX_INPUT_TOKENS is configured it is raised to at least MAX_INPUT_TOKENS + 1.
- MAX_INPUT_TOKENS: configured, else MAX_TOTAL_TOKENS - 1.
- MAX_BATCH_PREFILL_TOKENS: configured, else 4096 (TGI's default). Counted as padded tokens (rows x longest prompt)
  per step; a prompt longer than that is prefilled alone, in chunks of that size over successive steps.
- MAX_BATCH_TOTAL_TOKENS: configured, else 40% of the free memory of the model's devices (available RAM on CPU)
  divided by the KV-cache bytes per token, and at least MAX_TOTAL_TOKENS. A running sequence counts its
  reservation, input_length + its capped max_new_tokens, so admission never over-commits the cache; the rest of
  the memory is headroom for activations and for the padding of the left-padded batch.
- MAX_BATCH_SIZE: configured, else unlimited (MAX_CONCURRENT_REQUESTS bounds it anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psutil
import torch

from serving.config import EngineConfig

DEFAULT_MAX_TOTAL_TOKENS = 4096
DEFAULT_MAX_BATCH_PREFILL_TOKENS = 4096
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


def free_memory_bytes(devices: set[torch.device]) -> int:
    """Free memory summed over the CUDA devices in `devices`, or the machine's available RAM."""
    cuda = sorted({d.index or 0 for d in devices if d.type == "cuda"})
    if cuda:
        return sum(torch.cuda.mem_get_info(i)[0] for i in cuda)
    return int(psutil.virtual_memory().available)


def resolve_limits(config: EngineConfig, model: Any, tokenizer: Any) -> Limits:
    """Every limit, from the configuration where set and from the model and the free memory otherwise."""
    max_total = config.max_total_tokens
    if max_total is None:
        max_total = model_context_length(model.config, tokenizer) or DEFAULT_MAX_TOTAL_TOKENS
        if config.max_input_tokens is not None:
            max_total = max(max_total, config.max_input_tokens + 1)
    max_input = config.max_input_tokens or max_total - 1
    batch_total = config.max_batch_total_tokens
    if batch_total is None:
        per_token = kv_bytes_per_token(model.config, model.dtype)
        devices = {p.device for p in model.parameters()}
        budget = (int(free_memory_bytes(devices) * KV_CACHE_MEMORY_FRACTION) // per_token if per_token
                  else FALLBACK_MAX_BATCH_TOTAL_TOKENS)
        batch_total = max(max_total, budget)
    return Limits(
        max_input_tokens=max_input,
        max_total_tokens=max_total,
        max_batch_prefill_tokens=config.max_batch_prefill_tokens or DEFAULT_MAX_BATCH_PREFILL_TOKENS,
        max_batch_total_tokens=batch_total,
        max_batch_size=config.max_batch_size,
        max_concurrent_requests=config.max_concurrent_requests,
    )
