"""The test helper `serving.testing.tiny_adapter`: adapters in PEFT's format that change the model, and their
merged reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from serving.testing.tiny_adapter import TinyAdapterSpec, build_tiny_adapter, merged_model


def test_adapter_is_saved_in_peft_format_with_nonzero_matrices(model_dir: Path, tmp_path: Path) -> None:
    out = build_tiny_adapter(model_dir, tmp_path / "a", TinyAdapterSpec(rank=4, target_modules=("q_proj", "down_proj"),
                                                                        seed=3))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["peft_type"] == "LORA"
    assert set(config["target_modules"]) == {"q_proj", "down_proj"}
    weights = load_file(out / "adapter_model.safetensors")
    a = weights["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = weights["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    assert a.shape == (4, 64) and b.shape == (64, 4)
    assert all(bool(tensor.abs().sum() > 0) for tensor in weights.values())
    assert len(weights) == 2 * 2 * 2  # A and B, two modules, two layers


def test_seed_chooses_the_weights(model_dir: Path, tmp_path: Path) -> None:
    first = load_file(build_tiny_adapter(model_dir, tmp_path / "a", TinyAdapterSpec(seed=1))
                      / "adapter_model.safetensors")
    again = load_file(build_tiny_adapter(model_dir, tmp_path / "b", TinyAdapterSpec(seed=1))
                      / "adapter_model.safetensors")
    other = load_file(build_tiny_adapter(model_dir, tmp_path / "c", TinyAdapterSpec(seed=2))
                      / "adapter_model.safetensors")
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not any(torch.equal(first[key], other[key]) for key in first)


@pytest.mark.parametrize("spec", [TinyAdapterSpec(), TinyAdapterSpec(rank=16, target_modules=("gate_proj", "o_proj"),
                                                                     use_rslora=True)])
def test_merged_model_changes_the_logits(model_dir: Path, tmp_path: Path, spec: TinyAdapterSpec) -> None:
    adapter = build_tiny_adapter(model_dir, tmp_path / "a", spec)
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()(ids).logits
        merged = merged_model(model_dir, adapter)(ids).logits
    assert (merged - base).abs().max() > 0.5
