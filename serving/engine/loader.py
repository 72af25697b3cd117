"""Load the model and tokenizer named by the configuration: a hub id or a local directory, placed and typed.

dtype: DTYPE when set; else bfloat16 on CUDA (float16 where bfloat16 is unsupported) and float32 on CPU.
Placement: on CUDA, over the first `num_gpus` GPUs (all visible ones when unset, like TGI): one GPU takes the
whole model, several get accelerate's balanced device map (layers spread sequentially, which makes a model fit,
not run faster). Without CUDA everything stays on the CPU. Torch threads: TORCH_NUM_THREADS, else all cores but
one (the HTTP workers need one; the default on a busy machine is several times slower).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from serving.config import EngineConfig

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """The model in eval mode, its tokenizer, and the facts `/info` reports about them."""

    model: Any
    tokenizer: Any
    model_id: str
    model_sha: str | None
    dtype: torch.dtype
    device: torch.device
    device_map: dict[str, str]
    num_parameters: int


def resolve_dtype(name: str | None, cuda: bool) -> torch.dtype:
    """The configured dtype, else the best default for the device."""
    if name:
        return DTYPES[name]
    if not cuda:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def placement(num_gpus: int | None) -> dict[str, Any]:
    """`from_pretrained` keyword arguments that place the model on the first `num_gpus` GPUs (none on CPU)."""
    if not torch.cuda.is_available():
        return {}
    count = min(num_gpus or torch.cuda.device_count(), torch.cuda.device_count())
    if count <= 1:
        return {"device_map": {"": 0}}
    memory = {i: torch.cuda.mem_get_info(i)[0] for i in range(count)}
    return {"device_map": "balanced", "max_memory": memory}


def load_model(config: EngineConfig) -> LoadedModel:
    """Load, place and type the model and its tokenizer; the model is returned in eval mode."""
    torch.set_num_threads(config.torch_threads or max(1, (os.cpu_count() or 1) - 1))
    hub: dict[str, Any] = {}
    if config.revision:
        hub["revision"] = config.revision
    if config.hf_token:
        hub["token"] = config.hf_token
    if config.trust_remote_code:
        hub["trust_remote_code"] = True
    tokenizer = AutoTokenizer.from_pretrained(config.model_id, **hub)
    dtype = resolve_dtype(config.dtype, torch.cuda.is_available())
    model = AutoModelForCausalLM.from_pretrained(config.model_id, dtype=dtype, **placement(config.num_gpus), **hub)
    model.eval()
    device = model.get_input_embeddings().weight.device
    device_map = getattr(model, "hf_device_map", None) or {"": device}
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=config.model_id,
        model_sha=getattr(model.config, "_commit_hash", None),
        dtype=dtype,
        device=device,
        device_map={name: f"cuda:{where}" if isinstance(where, int) else str(where)
                    for name, where in device_map.items()},
        num_parameters=sum(p.numel() for p in model.parameters()),
    )
