"""Loading a model: a local directory or a (simulated) hub download; dtype, placement, threads, `/info` facts."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from transformers import AutoModelForCausalLM

from engine_helpers import engine_config
from serving.engine import loader as loader_module
from serving.engine.engine import LLMEngine
from serving.engine.packed_linear import PackedLinear
from serving.engine.loader import (
    LogProgress,
    ModelLoadError,
    download_model,
    load_model,
    placement,
    resolve_dtype,
    select_repo_files,
)


def test_load_a_local_directory(model_dir):
    loaded = load_model(engine_config(model_dir, dtype="bfloat16", torch_threads=1))
    assert loaded.dtype is torch.bfloat16 and loaded.model.dtype is torch.bfloat16
    assert not loaded.model.training
    assert loaded.device == torch.device("cpu") and loaded.device_map == {"": "cpu"}
    assert loaded.model_id == str(model_dir) and loaded.model_sha is None
    plain = AutoModelForCausalLM.from_pretrained(model_dir)  # counted before the linear layers were packed
    assert loaded.num_parameters == sum(p.numel() for p in plain.parameters())
    packed = any(isinstance(module, PackedLinear) for module in loaded.model.modules())
    assert packed is torch.ops.mkldnn._is_mkldnn_bf16_supported()  # oneDNN packs bfloat16 only with AVX512-BF16/AMX
    assert torch.get_num_threads() == 1


def test_threads_default_to_every_usable_core(model_dir):
    from serving.engine.loader import usable_cores

    try:
        load_model(engine_config(model_dir, torch_threads=None))
        assert torch.get_num_threads() == usable_cores() >= 1
    finally:
        torch.set_num_threads(1)


def test_a_float32_model_is_packed(model_dir):
    loaded = load_model(engine_config(model_dir))
    assert any(isinstance(module, PackedLinear) for module in loaded.model.modules())


def test_packing_can_be_turned_off(model_dir):
    loaded = load_model(engine_config(model_dir, packed_linear=False))
    assert not any(isinstance(module, PackedLinear) for module in loaded.model.modules())


def test_dtype_and_placement_defaults_on_cpu():
    assert resolve_dtype(None, cuda=False) is torch.float32
    assert resolve_dtype("float16", cuda=False) is torch.float16
    if not torch.cuda.is_available():
        assert placement(4) == {}


def test_from_config_loads_and_warms_up(model_dir):
    engine = LLMEngine.from_config(engine_config(model_dir, max_total_tokens=64))
    assert engine.info().max_total_tokens == 64
    assert engine.check_health()


# Hub downloads, without the hub: `snapshot_download` is replaced by a recorder over a local directory.

LLAMA_REPO = [
    ".gitattributes", "LICENSE.txt", "README.md", "USE_POLICY.md", "config.json", "generation_config.json",
    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
    "original/consolidated.00.pth", "original/params.json", "original/tokenizer.model", "special_tokens_map.json",
    "tokenizer.json", "tokenizer_config.json",
]


@pytest.mark.parametrize("files, trust, expected", [
    (LLAMA_REPO, False, [
        "LICENSE.txt", "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json"]),
    # Both formats: safetensors only, and not the pickle index.
    (["config.json", "model.safetensors", "pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5",
      "flax_model.msgpack", "onnx/model.onnx", "tokenizer.model", "chat_template.jinja"], False,
     ["chat_template.jinja", "config.json", "model.safetensors", "tokenizer.model"]),
    # Mistral-style repos carry the original consolidated checkpoint beside the transformers shards.
    (["config.json", "consolidated.safetensors", "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors", "params.json", "tokenizer.model.v3"], False,
     ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "params.json"]),
    # Only other safetensors names: take them.
    (["config.json", "weights.safetensors", "merges.txt", "vocab.json"], False,
     ["config.json", "merges.txt", "vocab.json", "weights.safetensors"]),
    # No safetensors: the PyTorch pickles, not training state.
    (["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
      "pytorch_model.bin.index.json", "training_args.bin", "tokenizer.json"], False,
     ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
      "pytorch_model.bin.index.json", "tokenizer.json"]),
    # Remote code is fetched only when it may run.
    (["config.json", "model.safetensors", "modeling_custom.py", "configuration_custom.py"], False,
     ["config.json", "model.safetensors"]),
    (["config.json", "model.safetensors", "modeling_custom.py", "configuration_custom.py"], True,
     ["config.json", "configuration_custom.py", "model.safetensors", "modeling_custom.py"]),
])
def test_select_repo_files_prefers_safetensors(files, trust, expected):
    assert select_repo_files(files, trust) == expected


class FakeHub:
    """Stands in for `HfApi.model_info` (a listing) and records `snapshot_download` calls (a local directory)."""

    def __init__(self, files: list[str], snapshot: Path, error: Exception | None = None, cached: bool = False) -> None:
        self.files = files
        self.snapshot = snapshot
        self.error = error
        self.cached = cached
        self.calls: list[dict] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "FakeHub":
        """Replace the two hub entry points the loader uses."""
        hub = self

        class FakeApi:
            def model_info(self, repo_id: str, **kwargs):
                hub.calls.append({"repo_id": repo_id, "listing": True, **kwargs})
                if hub.error is not None:
                    raise hub.error
                return SimpleNamespace(sha="a" * 40, siblings=[SimpleNamespace(rfilename=name, size=1000)
                                                               for name in hub.files])

        def try_to_load_from_cache(repo_id: str, filename: str, **kwargs):
            hub.calls.append({"repo_id": repo_id, "cached": filename, **kwargs})
            return str(hub.snapshot / filename) if hub.cached else None

        monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)
        monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", try_to_load_from_cache)
        return self

    def snapshot_download(self, repo_id: str, **kwargs):
        self.calls.append({"repo_id": repo_id, **kwargs})
        progress = kwargs["tqdm_class"](total=3000, unit="B", desc="Downloading bytes")
        progress.update(3000)
        progress.close()
        return str(self.snapshot)


def test_a_hub_id_is_downloaded_with_revision_token_and_patterns(model_dir, monkeypatch, caplog):
    hub = FakeHub(LLAMA_REPO, model_dir).install(monkeypatch)
    config = engine_config("meta-llama/Llama-3.2-1B", revision="v1.0", hf_token="hf_secret", cache_dir="/data/hub",
                           torch_threads=1)
    with caplog.at_level(logging.INFO, logger="serving.engine.loader"):
        loaded = load_model(config)
    listing, download = hub.calls
    assert listing == {"repo_id": "meta-llama/Llama-3.2-1B", "listing": True, "files_metadata": True,
                       "revision": "v1.0", "token": "hf_secret"}
    assert download == {"repo_id": "meta-llama/Llama-3.2-1B", "revision": "v1.0", "token": "hf_secret",
                        "cache_dir": "/data/hub", "allow_patterns": select_repo_files(LLAMA_REPO),
                        "tqdm_class": LogProgress}
    assert loaded.model_id == "meta-llama/Llama-3.2-1B"
    log = caplog.text
    assert "downloading meta-llama/Llama-3.2-1B@v1.0 (commit aaaa" in log
    assert "9 of its 15 files, 9.0 kB: LICENSE.txt, config.json" in log
    assert "Downloading bytes: 3.0 kB of 3.0 kB" in log
    assert "hf_secret" not in log


def test_a_local_directory_is_used_as_is(model_dir, monkeypatch):
    FakeHub([], model_dir, AssertionError("no hub")).install(monkeypatch)
    assert download_model(engine_config(model_dir)) == str(model_dir)


@pytest.mark.parametrize("files, error, message", [
    (["config.json", "model.onnx", "tokenizer.json"], None, "has no safetensors or pytorch_model*.bin weights"),
    ([], OSError("401 Client Error: Unauthorized for url\nmore detail"), "cannot download org/gated from the hub: "
     "401 Client Error: Unauthorized for url"),
])
def test_download_failures_are_one_line(model_dir, monkeypatch, files, error, message):
    FakeHub(files, model_dir, error).install(monkeypatch)
    with pytest.raises(ModelLoadError) as raised:
        download_model(engine_config("org/gated"))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_offline_a_cached_snapshot_is_used(model_dir, monkeypatch, caplog):
    hub = FakeHub([], model_dir, OSError("offline mode is enabled"), cached=True).install(monkeypatch)
    with caplog.at_level(logging.INFO, logger="serving.engine.loader"):
        assert download_model(engine_config("org/cached", revision="main")) == str(model_dir)
    assert hub.calls[-1] == {"repo_id": "org/cached", "cached": "config.json", "cache_dir": None, "revision": "main"}
    assert "the hub cannot be reached (offline mode is enabled): using the cached snapshot" in caplog.text


def test_progress_is_logged_not_drawn(caplog, capsys, monkeypatch):
    monkeypatch.setattr(loader_module, "PROGRESS_LOG_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="serving.engine.loader"):
        bar = LogProgress(total=2_000_000_000, unit="B", desc="Downloading bytes")
        bar.update(500_000_000)
        bar.update(1_500_000_000)
        bar.close()
    assert "Downloading bytes: 2.0 GB of 2.0 GB" in caplog.text
    assert capsys.readouterr() == ("", "")
