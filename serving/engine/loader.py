"""Load the model and tokenizer named by the configuration: a hub id or a local directory, placed and typed.

Source: a local directory is used as is; a hub id is downloaded once with `huggingface_hub.snapshot_download`
(revision, token, cache directory), fetching only what serving needs: the configuration and tokenizer files and
one set of weights, safetensors preferred over PyTorch pickles; progress goes to the log.
dtype: DTYPE when set; else bfloat16 on CUDA (float16 where bfloat16 is unsupported) and float32 on CPU.
Placement: on CUDA, over the first `num_gpus` GPUs (all visible ones when unset, like TGI): one GPU takes the
whole model, several get accelerate's balanced device map (layers spread sequentially, which makes a model fit,
not run faster), planned by `plan_device_map` on an empty model. Without CUDA everything stays on the CPU.
Torch threads: TORCH_NUM_THREADS, else every core this process may run on. On a quiet 2-core machine two threads
made the server 10-54% faster than one, although the HTTP worker shares the cores (`docs/performance.md`); on a
host whose cores other work keeps busy, OpenMP's spinning barriers make extra threads far slower: set
TORCH_NUM_THREADS there.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from serving.config import EngineConfig
from serving.engine.host_memory import keep_freed_memory
from serving.engine.packed_linear import pack_linears

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Files of a hub repository that serving needs besides the weights: configuration, tokenizer, chat template.
SUPPORT_SUFFIXES = (".json", ".model", ".txt", ".tiktoken", ".jinja")
PROGRESS_LOG_SECONDS = 10.0


class ModelLoadError(RuntimeError):
    """The model cannot be fetched or placed; the message is one line for the log."""


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


def usable_cores() -> int:
    """The cores this process may run on (all of the machine's where the OS has no affinity call)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_dtype(name: str | None, cuda: bool) -> torch.dtype:
    """The configured dtype, else the best default for the device."""
    if name:
        return DTYPES[name]
    if not cuda:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def select_repo_files(filenames: Iterable[str], trust_remote_code: bool = False) -> list[str]:
    """The files of a hub repository to download: top-level configuration and tokenizer files, and one set of
    weights: transformers-format safetensors (`model*.safetensors`), else any top-level safetensors, else
    `pytorch_model*.bin`. Other formats (ONNX, GGUF, TF, Flax, original checkpoints in subfolders) are skipped;
    the repository's Python files only with trust_remote_code."""
    top = sorted(name for name in filenames if "/" not in name)
    safetensors = [name for name in top if name.endswith(".safetensors")]
    weights = ([name for name in safetensors if fnmatch.fnmatch(name, "model*.safetensors")] or safetensors
               or [name for name in top if fnmatch.fnmatch(name, "pytorch_model*.bin")])
    support = [name for name in top if name.endswith(SUPPORT_SUFFIXES)
               and not (safetensors and name.startswith("pytorch_model") and name.endswith(".index.json"))]
    if trust_remote_code:
        support += [name for name in top if name.endswith(".py")]
    return sorted(set(weights + support))


def _size(count: float) -> str:
    """Bytes as a short human string."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


class _NoOutput:
    """A file that drops what tqdm writes: LogProgress logs instead."""

    def write(self, text: str) -> None:
        """Drop the text."""

    def flush(self) -> None:
        """Nothing to flush."""


class LogProgress(tqdm):
    """A tqdm that writes a log line every PROGRESS_LOG_SECONDS (and at the end) instead of drawing a bar."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("name", None)
        kwargs.update(disable=False, file=_NoOutput(), mininterval=PROGRESS_LOG_SECONDS)
        self._logged_at = 0.0
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Log the progress, at most every PROGRESS_LOG_SECONDS unless the bar is complete."""
        now = time.monotonic()
        complete = self.total is not None and self.total > 0 and self.n >= self.total
        if self.n and (complete or now - self._logged_at >= PROGRESS_LOG_SECONDS):
            self._logged_at = now
            done = _size(self.n) if self.unit == "B" else f"{self.n:g}"
            total = (_size(self.total) if self.unit == "B" else f"{self.total:g}") if self.total else "?"
            logger.info("%s: %s of %s", self.desc or "download", done, total)
        return True


def _first_line(error: BaseException) -> str:
    """An exception's first line, for a one-line log."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def download_model(config: EngineConfig) -> str:
    """A local directory holding the model: `model_id` itself when it is a directory, else a hub snapshot."""
    if Path(config.model_id).is_dir():
        logger.info("using the local model directory %s", config.model_id)
        return config.model_id
    from huggingface_hub import HfApi, snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    failures = (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError)
    hub = {"revision": config.revision, "token": config.hf_token}
    where = config.model_id + (f"@{config.revision}" if config.revision else "")
    started = time.monotonic()
    try:
        try:
            listing = HfApi().model_info(config.model_id, files_metadata=True, **hub)
        except failures as error:
            # Offline (HF_HUB_OFFLINE=1, no network): the revision's snapshot already in the cache will do.
            cached = try_to_load_from_cache(config.model_id, "config.json", cache_dir=config.cache_dir,
                                            revision=config.revision)
            if not isinstance(cached, str):
                raise
            path = str(Path(cached).parent)
            logger.info("the hub cannot be reached (%s): using the cached snapshot %s", _first_line(error), path)
            return path
        sizes = {sibling.rfilename: sibling.size or 0 for sibling in listing.siblings or []}
        selected = select_repo_files(sizes, config.trust_remote_code)
        if not any(name.endswith((".safetensors", ".bin")) for name in selected):
            raise ModelLoadError(f"the hub repository {where} has no safetensors or pytorch_model*.bin weights")
        logger.info("downloading %s (commit %s): %d of its %d files, %s: %s", where, listing.sha, len(selected),
                    len(sizes), _size(sum(sizes[name] for name in selected)), ", ".join(selected))
        path = snapshot_download(config.model_id, allow_patterns=selected, tqdm_class=LogProgress,
                                 cache_dir=config.cache_dir, **hub)
    except failures as error:
        raise ModelLoadError(f"cannot download {where} from the hub: {_first_line(error)}") from error
    logger.info("downloaded %s to %s in %.1f s", where, path, time.monotonic() - started)
    return path


def plan_device_map(model_config: Any, max_memory: Mapping[int | str, int | str], dtype: torch.dtype,
                    trust_remote_code: bool = False) -> dict[str, int | str]:
    """accelerate's balanced device map for the model described by `model_config` over the devices of
    `max_memory` (bytes or strings such as "10GiB" per device), planned on an empty model (no weights loaded).

    The memory is first balanced over the devices (`get_balanced_memory`) so the layers spread evenly instead of
    filling the first device; the model's decoder layers are never split. Raises ModelLoadError when the model
    does not fit in the given devices.
    """
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import get_balanced_memory

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(model_config, dtype=dtype, trust_remote_code=trust_remote_code)
    no_split = list(getattr(model, "_no_split_modules", None) or [])
    memory = dict(max_memory)
    if len(memory) > 1:
        memory = get_balanced_memory(model, max_memory=memory, no_split_module_classes=no_split, dtype=dtype)
    device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split, dtype=dtype)
    outside = sorted({str(where) for where in device_map.values() if where not in max_memory})
    if outside:
        raise ModelLoadError(f"the model does not fit in {len(max_memory)} device(s) with max_memory "
                             f"{dict(max_memory)}: it would need {', '.join(outside)}")
    return device_map


def _device_name(where: Any) -> str:
    """`cuda:N` for an accelerate device index, else the device's own name."""
    return f"cuda:{where}" if isinstance(where, int) else str(where)


def _span(modules: list[str]) -> str:
    """Module names with numbered runs collapsed: model.layers.0, model.layers.1 -> model.layers.0-1."""
    parts: list[list[Any]] = []  # [prefix, first, last] for numbered runs, [name, None, None] otherwise
    for name in modules:
        match = re.fullmatch(r"(.*)\.(\d+)", name)
        if match:
            prefix, number = match.group(1), int(match.group(2))
            if parts and parts[-1][0] == prefix and parts[-1][2] == number - 1:
                parts[-1][2] = number
                continue
            parts.append([prefix, number, number])
        else:
            parts.append([name, None, None])
    return ", ".join(name if first is None else f"{name}.{first}" + (f"-{last}" if last != first else "")
                     for name, first, last in parts)


def summarize_device_map(device_map: Mapping[str, Any]) -> dict[str, str]:
    """A short device map: consecutive modules on the same device as one entry, `{"": "cpu"}` for a model
    on one device, e.g. `{"model.embed_tokens, model.layers.0-15": "cuda:0", "model.layers.16-31, model.norm,
    lm_head": "cuda:1"}`."""
    groups: list[tuple[str, list[str]]] = []
    for name, where in device_map.items():
        device = _device_name(where)
        if groups and groups[-1][0] == device:
            groups[-1][1].append(name)
        else:
            groups.append((device, [name]))
    if len(groups) == 1:
        return {"": groups[0][0]}
    return {_span(modules): device for device, modules in groups}


def placement(num_gpus: int | None, model_config: Any = None, dtype: torch.dtype = torch.float32,
              memory_fraction: float = 1.0, trust_remote_code: bool = False) -> dict[str, Any]:
    """`from_pretrained` keyword arguments that place the model on the first `num_gpus` GPUs (none on CPU).

    Several GPUs get the device map `plan_device_map` makes from each GPU's free memory (times
    CUDA_MEMORY_FRACTION); a `num_gpus` above the visible count uses the visible ones and says so.
    """
    if not torch.cuda.is_available():
        if num_gpus and num_gpus > 1:
            logger.warning("SM_NUM_GPUS=%d but no GPU is visible: serving on the CPU", num_gpus)
        return {}
    visible = torch.cuda.device_count()
    count = min(num_gpus or visible, visible)
    if num_gpus and num_gpus > visible:
        logger.warning("SM_NUM_GPUS=%d but only %d GPU(s) are visible: using %d", num_gpus, visible, visible)
    if memory_fraction < 1.0:
        for index in range(count):
            torch.cuda.set_per_process_memory_fraction(memory_fraction, index)
    if count <= 1:
        return {"device_map": {"": 0}}
    memory = {i: int(torch.cuda.mem_get_info(i)[0] * memory_fraction) for i in range(count)}
    if model_config is None:
        return {"device_map": "balanced", "max_memory": memory}
    return {"device_map": plan_device_map(model_config, memory, dtype, trust_remote_code)}


def load_model(config: EngineConfig) -> LoadedModel:
    """Load, place and type the model and its tokenizer; the model is returned in eval mode."""
    torch.set_num_threads(config.torch_threads or max(1, usable_cores() // config.replicas))  # cores shared out
    if not torch.cuda.is_available():
        keep_freed_memory()  # a CPU step's activations stay mapped for the next one
    path = download_model(config)
    remote = {"trust_remote_code": True} if config.trust_remote_code else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **remote)
    cuda = torch.cuda.is_available()
    dtype = resolve_dtype(config.dtype, cuda)
    model_config = AutoConfig.from_pretrained(path, **remote) if cuda else None
    where = placement(config.num_gpus, model_config, dtype, config.memory_fraction, config.trust_remote_code)
    started = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **where, **remote)
    model.eval()
    num_parameters = sum(p.numel() for p in model.parameters())
    if config.packed_linear:
        pack_linears(model)
    device = model.get_input_embeddings().weight.device
    device_map = summarize_device_map(getattr(model, "hf_device_map", None) or {"": device})
    logger.info("loaded %s (%s) in %.1f s, device map %s", config.model_id, str(dtype).removeprefix("torch."),
                time.monotonic() - started, device_map)
    snapshot = re.search(r"/snapshots/([0-9a-f]{40})/?$", path)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=config.model_id,
        model_sha=snapshot.group(1) if snapshot else getattr(model.config, "_commit_hash", None),
        dtype=dtype,
        device=device,
        device_map=device_map,
        num_parameters=num_parameters,
    )
