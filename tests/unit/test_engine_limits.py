"""Token limits resolved from the configuration, the model's context and the free memory."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch

from serving.config import EngineConfig
from serving.engine import limits as limits_module
from serving.engine.limits import (DEFAULT_CPU_MAX_BATCH_PREFILL_TOKENS, DEFAULT_MAX_BATCH_PREFILL_TOKENS,
                                   kv_bytes_per_token, resolve_limits)

CONFIG = EngineConfig(
    model_id="m", revision=None, hf_token=None, trust_remote_code=False, num_gpus=None, dtype=None,
    max_input_tokens=None, max_total_tokens=None, max_batch_prefill_tokens=None, max_batch_total_tokens=None,
    max_batch_size=None, max_concurrent_requests=128, torch_threads=None, engine_address="x", log_level="info",
)
LLAMA = SimpleNamespace(max_position_embeddings=2048, num_hidden_layers=4, num_attention_heads=8,
                        num_key_value_heads=2, hidden_size=256)


def fake_model(model_config=LLAMA, dtype=torch.float32, device: str = "cpu") -> SimpleNamespace:
    return SimpleNamespace(config=model_config, dtype=dtype,
                           parameters=lambda: iter([SimpleNamespace(device=torch.device(device))]))


def tokenizer(model_max_length=int(1e30)) -> SimpleNamespace:
    return SimpleNamespace(model_max_length=model_max_length)


def resolve(monkeypatch, free=10 * 2**20, model=None, tok=None, **overrides):
    monkeypatch.setattr(limits_module, "free_memory_bytes", lambda: free)
    return resolve_limits(dataclasses.replace(CONFIG, **overrides), model or fake_model(), tok or tokenizer())


def test_kv_bytes_per_token():
    assert kv_bytes_per_token(LLAMA, torch.float32) == 2 * 4 * 2 * 32 * 4
    assert kv_bytes_per_token(SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, head_dim=16,
                                              hidden_size=8), torch.bfloat16) == 2 * 2 * 4 * 16 * 2
    assert kv_bytes_per_token(SimpleNamespace(), torch.float32) is None


def test_defaults_from_the_model_and_memory(monkeypatch):
    limits = resolve(monkeypatch)
    assert (limits.max_total_tokens, limits.max_input_tokens) == (2048, 2047)
    assert limits.max_batch_prefill_tokens == DEFAULT_CPU_MAX_BATCH_PREFILL_TOKENS == 2048
    assert limits.max_batch_total_tokens == int(10 * 2**20 * 0.4) // 2048
    assert limits.max_batch_size is None and limits.max_concurrent_requests == 128


def test_a_model_on_a_gpu_prefills_tgis_default_budget(monkeypatch):
    limits = resolve(monkeypatch, model=fake_model(device="cuda"), max_batch_total_tokens=4096)
    assert limits.max_batch_prefill_tokens == DEFAULT_MAX_BATCH_PREFILL_TOKENS == 4096


def test_the_tokenizer_limit_counts_only_when_sane(monkeypatch):
    assert resolve(monkeypatch, tok=tokenizer(512)).max_total_tokens == 512
    assert resolve(monkeypatch, tok=tokenizer(int(1e30))).max_total_tokens == 2048
    unknown = fake_model(SimpleNamespace(num_hidden_layers=1, num_attention_heads=1, hidden_size=4))
    assert resolve(monkeypatch, model=unknown, tok=tokenizer(None)).max_total_tokens == 4096


def test_configured_values_win(monkeypatch):
    limits = resolve(monkeypatch, max_total_tokens=100, max_input_tokens=60, max_batch_prefill_tokens=50,
                     max_batch_total_tokens=70, max_batch_size=3, max_concurrent_requests=9)
    assert (limits.max_total_tokens, limits.max_input_tokens, limits.max_batch_prefill_tokens) == (100, 60, 50)
    assert (limits.max_batch_total_tokens, limits.max_batch_size, limits.max_concurrent_requests) == (70, 3, 9)


def test_max_input_alone_raises_max_total_and_the_batch_fits_one_request(monkeypatch):
    limits = resolve(monkeypatch, free=0, max_input_tokens=3000)
    assert (limits.max_input_tokens, limits.max_total_tokens) == (3000, 3001)
    assert limits.max_batch_total_tokens == 3001
    assert resolve(monkeypatch, max_total_tokens=300).max_input_tokens == 299
