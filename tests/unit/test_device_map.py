"""Device maps for SM_NUM_GPUS=N, planned on an empty model over N simulated devices, and their summary."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from serving.engine.loader import ModelLoadError, placement, plan_device_map, summarize_device_map

MIB = 1024 * 1024


def llama_config(layers: int = 8, vocab_size: int = 512) -> LlamaConfig:
    """A small Llama: about 1.1 MiB of float32 weights per decoder layer, 0.5 MiB each for embeddings and head."""
    return LlamaConfig(vocab_size=vocab_size, hidden_size=256, intermediate_size=512, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)


def layers_by_device(device_map: dict[str, int | str]) -> dict[int | str, list[int]]:
    """Decoder layer indices per device."""
    placed: dict[int | str, list[int]] = {}
    for name, where in device_map.items():
        if name.startswith("model.layers."):
            placed.setdefault(where, []).append(int(name.split(".")[2]))
    return placed


@pytest.mark.parametrize("devices, layers", [(2, 8), (3, 9), (4, 16), (4, 12), (8, 32)])
def test_layers_spread_in_order_over_the_first_n_devices(devices, layers):
    memory = {index: 64 * MIB for index in range(devices)}
    device_map = plan_device_map(llama_config(layers), memory, torch.float32)
    placed = layers_by_device(device_map)
    assert set(device_map.values()) <= set(memory)
    flat = [layer for device in sorted(placed) for layer in placed[device]]
    assert flat == list(range(layers)), "layers stay in order, each whole on one device"
    # accelerate's balanced budget is the model's size / N plus one layer, so the last device may stay nearly
    # empty (it keeps room for generation buffers); everything else is spread, not packed onto device 0.
    assert len(placed) >= devices - 1
    counts = [len(placed[device]) for device in sorted(placed)]
    assert max(counts) <= -(-layers // (devices - 1)) + 1, counts
    assert device_map["model.embed_tokens"] == 0
    assert device_map["lm_head"] == max(placed)


def test_one_device_takes_the_whole_model():
    device_map = plan_device_map(llama_config(4), {0: "1GiB"}, torch.float32)
    assert summarize_device_map(device_map) == {"": "cuda:0"}


def test_half_precision_halves_the_budget_a_layer_needs():
    config = llama_config(8, vocab_size=4096)
    memory = {0: 8 * MIB, 1: 8 * MIB}
    with pytest.raises(ModelLoadError, match="does not fit in 2 device"):
        plan_device_map(config, memory, torch.float32)
    device_map = plan_device_map(config, memory, torch.bfloat16)
    assert set(device_map.values()) == {0, 1}


def test_a_small_first_device_takes_fewer_layers():
    device_map = plan_device_map(llama_config(12), {0: 4 * MIB, 1: 64 * MIB, 2: 64 * MIB}, torch.float32)
    placed = layers_by_device(device_map)
    assert set(device_map.values()) == {0, 1, 2}
    assert len(placed.get(0, [])) < len(placed[1])


def test_a_model_bigger_than_the_devices_is_a_one_line_error():
    with pytest.raises(ModelLoadError) as error:
        plan_device_map(llama_config(16), {0: 4 * MIB, 1: 4 * MIB}, torch.float32)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("device_map, summary", [
    ({"": 0}, {"": "cuda:0"}),
    ({"": "cpu"}, {"": "cpu"}),
    ({"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 0, "model.layers.2": 1, "model.layers.3": 1,
      "model.norm": 1, "model.rotary_emb": 1, "lm_head": 1},
     {"model.embed_tokens, model.layers.0-1": "cuda:0",
      "model.layers.2-3, model.norm, model.rotary_emb, lm_head": "cuda:1"}),
    ({"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "lm_head": 0},
     {"model.embed_tokens, model.layers.0": "cuda:0", "model.layers.1": "cuda:1", "lm_head": "cuda:0"}),
    ({"a.1": 0, "a.3": 0, "b": 1}, {"a.1, a.3": "cuda:0", "b": "cuda:1"}),
])
def test_summary_groups_consecutive_modules(device_map, summary):
    assert summarize_device_map(device_map) == summary


def test_summary_of_a_planned_map_names_every_layer_once():
    device_map = plan_device_map(llama_config(16), {index: 64 * MIB for index in range(4)}, torch.float32)
    summary = summarize_device_map(device_map)
    assert list(summary.values()) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert list(summary)[0].startswith("model.embed_tokens, model.layers.0-")
    assert list(summary)[-1].endswith("lm_head")


class FakeCuda:
    """torch.cuda as `placement` sees it on a machine with `count` GPUs of `free` bytes each."""

    def __init__(self, count: int, free: int) -> None:
        self.count, self.free, self.fractions = count, free, {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "FakeCuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (self.free, 2 * self.free))
        monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                            lambda fraction, index: self.fractions.__setitem__(index, fraction))
        return self


@pytest.mark.parametrize("num_gpus, visible, used", [(None, 4, 4), (2, 4, 2), (8, 3, 3), (1, 4, 1)])
def test_placement_spreads_over_the_first_n_visible_gpus(monkeypatch, num_gpus, visible, used):
    FakeCuda(visible, 64 * MIB).install(monkeypatch)
    where = placement(num_gpus, llama_config(16), torch.float32)
    if used == 1:
        assert where == {"device_map": {"": 0}}
    else:
        assert set(where["device_map"].values()) <= set(range(used))
        assert len(set(where["device_map"].values())) >= used - 1


def test_placement_applies_cuda_memory_fraction(monkeypatch):
    cuda = FakeCuda(2, 32 * MIB).install(monkeypatch)
    with pytest.raises(ModelLoadError, match="does not fit in 2 device"):
        placement(2, llama_config(16), torch.float32, memory_fraction=0.25)
    assert cuda.fractions == {0: 0.25, 1: 0.25}
    assert set(placement(2, llama_config(16), torch.float32)["device_map"].values()) == {0, 1}


def test_no_gpu_means_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement(4, llama_config(4), torch.float32) == {}
