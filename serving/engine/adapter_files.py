"""Find and read a LoRA adapter in PEFT's format (`adapter_config.json` + `adapter_model.safetensors`) and check
that it fits the base model; every refusal is one line that names the adapter.

Source: a local directory as is; a path that is not a directory is NOT_FOUND; anything else is a hub id
(`owner/name` or `owner/name@revision`) downloaded like the base model (token, cache directory, HF_HUB_OFFLINE),
only its two files. Served: LoRA on the attention and MLP projections of the decoder layers (q, k, v, o, gate, up,
down), with scale `lora_alpha / r` (`/ sqrt(r)` with `use_rslora`), `rank_pattern` and `alpha_pattern` matched as
peft matches them, any `target_modules` and `layers_to_transform` (the saved keys say which modules and layers the
adapter has). Refused (LOAD_FAILED): other modules (embeddings, lm_head), `modules_to_save`, DoRA, biases, other
PEFT types, ranks over MAX_LORA_RANK, matrices whose shapes do not fit the base model. `fan_in_fan_out` only
describes Conv1D base layers: peft ignores it for the linear layers of these models, and so does this.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from serving.config import EngineConfig
from serving.engine.adapter_registry import AdapterError
from serving.messages import AdapterSpec, AdapterStatus

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PROJECTIONS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
               "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
KEY = re.compile(r"(?:base_model\.model\.)?(?P<module>model\.layers\.(?P<layer>\d+)\.(?P<parent>\w+)\."
                 r"(?P<name>\w+))\.lora_(?P<matrix>[AB])(?:\.default)?\.weight")
# settings of a LoRA config that change what the adapter computes beyond A and B: refused when set
REFUSED_SETTINGS = {"use_dora": "DoRA", "modules_to_save": "modules_to_save", "layer_replication": "layer_replication",
                    "lora_bias": "LoRA biases", "trainable_token_indices": "trainable tokens",
                    "target_parameters": "target_parameters"}


@dataclass(frozen=True)
class ProjectionShapes:
    """The base model's decoder: its layer count and each projection's (in_features, out_features)."""

    layers: int
    modules: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class AdapterWeights:
    """An adapter read and checked: for each (layer, projection) its A [r, in] and its B [out, r] times the
    scale, in the model's dtype on the CPU."""

    rank: int
    target_modules: tuple[str, ...]
    modules: dict[tuple[int, str], tuple[Tensor, Tensor]]


def _fail(status: AdapterStatus, name: str, reason: str) -> AdapterError:
    """An error whose message names the adapter."""
    return AdapterError(status, f"adapter {name!r}: {reason}")


def adapter_directory(spec: AdapterSpec, config: EngineConfig) -> Path:
    """The local directory holding the adapter's files: the source itself, or a hub snapshot of its two files."""
    source = spec.source.strip()
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if source.startswith(("/", ".", "~")) or path.exists():
        raise _fail(AdapterStatus.NOT_FOUND, spec.name, f"no such directory {source}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, _, revision = source.partition("@")
    try:
        return Path(snapshot_download(repo, revision=revision or None, token=config.hf_token,
                                      cache_dir=config.cache_dir, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise _fail(AdapterStatus.NOT_FOUND, spec.name, f"cannot download {source} from the hub: {first}") from None


def _config(directory: Path, name: str) -> dict[str, Any]:
    """The adapter's LoRA configuration, checked for what this server does not serve."""
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise _fail(AdapterStatus.LOAD_FAILED, name, f"{CONFIG_FILE} is missing in {directory}") from None
    except (OSError, ValueError) as error:
        raise _fail(AdapterStatus.LOAD_FAILED, name, f"{CONFIG_FILE} cannot be read: {error}") from None
    if not isinstance(config, dict):
        raise _fail(AdapterStatus.LOAD_FAILED, name, f"{CONFIG_FILE} is not a JSON object")
    if config.get("peft_type", "LORA") != "LORA":
        raise _fail(AdapterStatus.LOAD_FAILED, name, f"peft_type {config['peft_type']} is not supported (LORA is)")
    for key, what in REFUSED_SETTINGS.items():
        if config.get(key):
            raise _fail(AdapterStatus.LOAD_FAILED, name, f"{what} ({key}) is not supported")
    if config.get("bias", "none") != "none":
        raise _fail(AdapterStatus.LOAD_FAILED, name, f"bias={config['bias']!r} is not supported (only 'none')")
    return config


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's per-module override: the first pattern that matches the end of the module's name."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def _tensors(directory: Path, name: str) -> dict[str, Tensor]:
    """The adapter's saved tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / WEIGHTS_FILE
    if not path.is_file():
        other = " (adapter_model.bin is not read: save it as safetensors)" if (directory / "adapter_model.bin"
                                                                               ).is_file() else ""
        raise _fail(AdapterStatus.LOAD_FAILED, name, f"{WEIGHTS_FILE} is missing in {directory}{other}")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise _fail(AdapterStatus.LOAD_FAILED, name, f"{WEIGHTS_FILE} cannot be read: {error}") from None


def read_adapter(directory: Path, name: str, shapes: ProjectionShapes, max_rank: int,
                 dtype: torch.dtype) -> AdapterWeights:
    """Read and check the adapter in `directory` against the base model's projections."""
    config = _config(directory, name)
    pairs: dict[tuple[int, str], dict[str, Tensor]] = {}
    full_names: dict[tuple[int, str], str] = {}
    for key, tensor in _tensors(directory, name).items():
        match = KEY.fullmatch(key)
        if match is None or PROJECTIONS.get(match["name"]) != match["parent"]:
            module = re.sub(r"(\.(lora_\w+?|base_layer))?(\.default)?(\.weight|\.bias)?$", "",
                            key.removeprefix("base_model.model."), count=1)
            raise _fail(AdapterStatus.LOAD_FAILED, name, f"module {module} is not supported: LoRA is served on "
                        f"the decoder layers' {', '.join(PROJECTIONS)} only")
        layer = int(match["layer"])
        if layer >= shapes.layers:
            raise _fail(AdapterStatus.LOAD_FAILED, name, f"{match['module']} does not exist: the base model has "
                        f"{shapes.layers} layers")
        pairs.setdefault((layer, match["name"]), {})[match["matrix"]] = tensor
        full_names[(layer, match["name"])] = match["module"]
    if not pairs:
        raise _fail(AdapterStatus.LOAD_FAILED, name, f"{WEIGHTS_FILE} holds no LoRA matrices")
    alpha, ranks, alphas = config.get("lora_alpha", 8), config.get("rank_pattern") or {}, \
        config.get("alpha_pattern") or {}
    modules: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}
    for (layer, projection), pair in sorted(pairs.items()):
        module = full_names[(layer, projection)]
        if set(pair) != {"A", "B"}:
            raise _fail(AdapterStatus.LOAD_FAILED, name, f"{module} has lora_{''.join(pair)} without its pair")
        a, b = pair["A"], pair["B"]
        fan_in, fan_out = shapes.modules[projection]
        rank = a.shape[0] if a.dim() == 2 else 0
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != fan_in or b.shape != (fan_out, rank) or rank == 0:
            raise _fail(AdapterStatus.LOAD_FAILED, name, f"{module}: lora_A {tuple(a.shape)} and lora_B "
                        f"{tuple(b.shape)} do not fit the base model's {fan_in} -> {fan_out} projection")
        if rank > max_rank:
            raise _fail(AdapterStatus.LOAD_FAILED, name, f"rank {rank} of {module} is over MAX_LORA_RANK={max_rank}")
        expected = _pattern_value(ranks, module, config.get("r", rank))
        if expected != rank:
            raise _fail(AdapterStatus.LOAD_FAILED, name, f"{module} has rank {rank} where its config says {expected}")
        module_alpha = _pattern_value(alphas, module, alpha)
        scale = module_alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        modules[(layer, projection)] = (a.to(dtype), (b.float() * scale).to(dtype))
    return AdapterWeights(rank=max(a.shape[0] for a, _ in modules.values()),
                          target_modules=tuple(p for p in PROJECTIONS if any(p == m for _, m in modules)),
                          modules=modules)
