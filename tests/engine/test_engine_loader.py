"""Loading a local model directory: dtype, placement, threads and the facts reported by `/info`."""

from __future__ import annotations

import torch

from engine_helpers import engine_config
from serving.engine.engine import LLMEngine
from serving.engine.loader import load_model, placement, resolve_dtype


def test_load_a_local_directory(model_dir):
    loaded = load_model(engine_config(model_dir, dtype="bfloat16", torch_threads=1))
    assert loaded.dtype is torch.bfloat16 and loaded.model.dtype is torch.bfloat16
    assert not loaded.model.training
    assert loaded.device == torch.device("cpu") and loaded.device_map == {"": "cpu"}
    assert loaded.model_id == str(model_dir) and loaded.model_sha is None
    assert loaded.num_parameters == sum(p.numel() for p in loaded.model.parameters())
    assert torch.get_num_threads() == 1


def test_dtype_and_placement_defaults_on_cpu():
    assert resolve_dtype(None, cuda=False) is torch.float32
    assert resolve_dtype("float16", cuda=False) is torch.float16
    if not torch.cuda.is_available():
        assert placement(4) == {}


def test_from_config_loads_and_warms_up(model_dir):
    engine = LLMEngine.from_config(engine_config(model_dir, max_total_tokens=64))
    assert engine.info().max_total_tokens == 64
    assert engine.check_health()
