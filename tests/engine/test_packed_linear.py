"""`serving.engine.packed_linear`: oneDNN-packed linear layers compute what `nn.Linear` computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from serving.engine.packed_linear import PackedLinear, PackedSlice, pack_linears, packable


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(5, 64), (3, 7, 64), (0, 64)])
def test_packed_linear_equals_linear(bias, shape):
    torch.manual_seed(0)
    linear = nn.Linear(64, 96, bias=bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        expected = linear(x)
        got = PackedLinear(linear)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_add_to_is_the_residual_plus_the_product(bias):
    torch.manual_seed(0)
    linear = nn.Linear(48, 32, bias=bias)
    x, residual = torch.randn(3, 2, 48), torch.randn(3, 2, 32)
    before = residual.clone()
    with torch.inference_mode():
        got = PackedLinear(linear).add_to(residual, x)
        torch.testing.assert_close(got, before + linear(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(residual, before)  # the residual is read, not written


def test_packed_linear_takes_strided_input():
    linear = nn.Linear(32, 16)
    x = torch.randn(4, 9, 32)[:, 2:]
    with torch.inference_mode():
        torch.testing.assert_close(PackedLinear(linear)(x), linear(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no oneDNN bfloat16")
def test_packed_linear_in_bfloat16():
    linear = nn.Linear(64, 32).to(torch.bfloat16)
    x = torch.randn(6, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        got = PackedLinear(linear)(x)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, linear(x), rtol=2e-2, atol=2e-2)


def test_only_plain_cpu_linears_of_packable_dtypes_are_packed():
    class Quantized(nn.Linear):
        pass

    hooked = nn.Linear(4, 4)
    hooked._hf_hook = object()
    assert packable(nn.Linear(4, 4))
    assert not packable(Quantized(4, 4))
    assert not packable(hooked)
    assert not packable(nn.Linear(4, 4).to(torch.float64))
    assert not packable(nn.Embedding(4, 4))


def test_a_packed_model_gives_the_same_logits(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        layers = sum(1 for module in model.modules() if type(module) is nn.Linear)
        assert pack_linears(model) == layers > 0
        assert not any(type(module) is nn.Linear for module in model.modules())
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert isinstance(attention.qkv_proj, PackedLinear) and isinstance(mlp.gate_up_proj, PackedLinear)
    assert [(p.start, p.stop) for p in (attention.q_proj, attention.k_proj, attention.v_proj)] == [
        (0, 64), (64, 96), (96, 128)]  # the test model: 4 heads and 2 KV heads of 16
    assert all(isinstance(p, PackedSlice) and p.fused is mlp.gate_up_proj for p in (mlp.gate_proj, mlp.up_proj))


@pytest.mark.parametrize("bias", [(True, True), (False, True)])
def test_siblings_packed_together_compute_each_projection(bias):
    torch.manual_seed(0)
    parent = nn.Module()
    parent.gate_proj, parent.up_proj = nn.Linear(32, 24, bias=bias[0]), nn.Linear(32, 40, bias=bias[1])
    x = torch.randn(3, 5, 32)
    with torch.inference_mode():
        expected = parent.gate_proj(x), parent.up_proj(x)
        assert pack_linears(parent) == 2
        assert parent.gate_up_proj.out_features == 64
        torch.testing.assert_close(parent.gate_proj(x), expected[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(parent.up_proj(x), expected[1], rtol=1e-5, atol=1e-5)


def test_siblings_of_different_inputs_are_packed_alone():
    parent = nn.Module()
    parent.gate_proj, parent.up_proj = nn.Linear(32, 24), nn.Linear(16, 24)
    assert pack_linears(parent) == 2
    assert not hasattr(parent, "gate_up_proj") and isinstance(parent.gate_proj, PackedLinear)
