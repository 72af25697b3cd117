"""`serving.engine.lean_forward`: the same logits as transformers' forward, and only for models it reproduces."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from serving.engine import cpu_kernels
from serving.engine.batch import Chunk
from serving.engine.block_manager import BlockManager
from serving.engine.lean_forward import LeanForward
from serving.engine.loader import ModelLoadError
from serving.engine.model_runner import ModelRunner
from serving.engine.packed_linear import pack_linears
from serving.engine.sequence import Sequence
from serving.engine.stopping import StopCriteria
from serving.messages import SamplingParams

SIZES = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=300, max_position_embeddings=256)
# Rows of very different lengths, so that decode attention runs in several row windows.
PROMPTS = [list(range(3, 83)), [5, 6], list(range(40, 70)), [7, 8, 9, 10, 11, 12, 13], list(range(100, 160))]


def _model(config) -> nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


def _runner(model: nn.Module, lean: bool, kernels: bool = False) -> ModelRunner:
    return ModelRunner(model, pad_id=0, blocks=BlockManager(num_blocks=64, block_size=16), lean=lean,
                       decode_kernel=kernels)


def _forward(runner: ModelRunner, chunks: list[Chunk]) -> torch.Tensor:
    """One step over `chunks`; each sampling chunk's sequence takes its greedy token. The sampled logits."""
    for chunk in chunks:
        runner.cache.blocks.grow(chunk.sequence.block_table, chunk.start + chunk.count)
    batch = runner.prepare(chunks)
    logits = runner.run(batch)
    runner.record_prompt_logprobs(batch, logits)
    sampled = logits[batch.sample_rows]
    for chunk in chunks:
        chunk.sequence.computed = chunk.start + chunk.count
    for chunk, row in zip([c for c in chunks if c.samples], sampled):
        chunk.sequence.token_ids.append(int(row.argmax()))
    return sampled


def _run(runner: ModelRunner, steps: int = 6) -> list[torch.Tensor]:
    """Prefill PROMPTS but the last in one forward and decode them greedily; from the third step the last prompt
    is prefilled alongside, 16 tokens a step (mixed steps), then decodes too. Every step's sampled logits, and the
    prompt logprobs."""
    stop = StopCriteria(max_new_tokens=10, eos_ids=frozenset())
    sequences = [Sequence.create(str(i), p, SamplingParams(), stop, prompt_logprobs=True)
                 for i, p in enumerate(PROMPTS)]
    early, late = sequences[:-1], sequences[-1]
    logits = [_forward(runner, [Chunk(s, 0, len(s.token_ids)) for s in early])]
    for step in range(steps):
        chunks = [Chunk(s, s.computed, 1) for s in early]
        if step >= 2:
            chunks.append(Chunk(late, late.computed, min(16, late.uncomputed)))
        logits.append(_forward(runner, chunks))
    logits.append(torch.tensor([v for s in sequences for v in s.prompt_logprobs[1:]]))
    return logits


@pytest.mark.parametrize("config", [
    LlamaConfig(**SIZES),
    LlamaConfig(**SIZES, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
    MistralConfig(**SIZES, sliding_window=None),
    Qwen2Config(**SIZES, use_sliding_window=False),  # q/k/v with biases
], ids=["llama", "llama-linear-rope", "mistral", "qwen2"])
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
@pytest.mark.parametrize("kernels", [False, True], ids=["torch", "cpu-kernels"])
def test_lean_logits_equal_transformers(config, packed, kernels):
    """With the CPU kernels, RMSNorm and the rotary embedding are their ops and decode attention reads the blocks
    in place."""
    if kernels:
        assert cpu_kernels.load() is None
    model = _model(config)
    if packed:
        pack_linears(model)
    lean, reference = _runner(model, lean=True, kernels=kernels), _runner(model, lean=False)
    assert lean.lean is not None and reference.lean is None and lean.lean.kernels is kernels
    assert all(layer.qkv is not None and layer.gate_up is not None for layer in lean.lean.layers) is packed
    with torch.inference_mode():
        got, expected = _run(lean), _run(reference)
    assert len(got) == len(expected)
    for step, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"step {step}: {m}")


def test_engine_on_the_lean_forward_matches_generate(make_engine, loaded):
    """Greedy continuations through the engine (lean) equal `generate` (transformers' forward)."""
    from engine_helpers import PROMPTS as TEXTS, drain, request, token_ids

    engine = make_engine()
    assert engine.runner.lean is not None
    for i, prompt in enumerate(TEXTS):
        engine.add_request(request(f"r{i}", prompt, 16, ignore_eos=True))
    events = drain(engine)
    with torch.inference_mode():
        for i, prompt in enumerate(TEXTS):
            ids = torch.tensor([loaded.tokenizer.encode(prompt)])
            reference = loaded.model.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False)
            assert token_ids(events[f"r{i}"]) == reference[0, ids.shape[1]:].tolist(), prompt


@pytest.mark.parametrize("config", [
    MistralConfig(**SIZES, sliding_window=32),
    Qwen2Config(**SIZES, use_sliding_window=True, sliding_window=32),
    LlamaConfig(**SIZES, hidden_act="gelu"),
], ids=["mistral-sliding-window", "qwen2-sliding-window", "gelu"])
def test_models_it_does_not_reproduce_keep_transformers_forward(config):
    model = _model(config)
    assert LeanForward.build(model) is None
    if config.hidden_act == "gelu":
        assert _runner(model, lean=True).lean is None  # served by its own forward over the paged cache
    else:
        with pytest.raises(ModelLoadError, match="^the paged KV cache cannot serve this model: sliding-window"):
            _runner(model, lean=True)


def test_a_hooked_or_split_model_keeps_transformers_forward():
    model = _model(LlamaConfig(**SIZES))
    assert LeanForward.build(model) is not None
    model.model.layers[1]._hf_hook = object()  # accelerate moves this layer's weights at run time
    assert LeanForward.build(model) is None
    assert _runner(model, lean=True).lean is None
