"""`serving.config.from_env`: every variable, its aliases, its defaults and its one-line errors."""

from __future__ import annotations

from json import dumps as json_dumps

import pytest

from serving import config as config_module
from serving.config import ConfigError, from_env

BASE = {"HF_MODEL_ID": "org/model"}


@pytest.mark.parametrize("env, path, expected", [
    ({}, "engine.model_id", "org/model"),
    ({"HF_MODEL_ID": "", "MODEL_ID": "tgi/model"}, "engine.model_id", "tgi/model"),
    ({"HF_MODEL_REVISION": "abc"}, "engine.revision", "abc"),
    ({"HF_TOKEN": "t1"}, "engine.hf_token", "t1"),
    ({"HUGGING_FACE_HUB_TOKEN": "t2"}, "engine.hf_token", "t2"),
    ({"HF_MODEL_TRUST_REMOTE_CODE": "true"}, "engine.trust_remote_code", True),
    ({"HF_MODEL_TRUST_REMOTE_CODE": "FALSE"}, "engine.trust_remote_code", False),
    ({}, "engine.trust_remote_code", False),
    ({"SM_NUM_GPUS": "4"}, "engine.num_gpus", 4),
    ({"SM_NUM_GPUS": ""}, "engine.num_gpus", None),
    ({"DTYPE": "bf16"}, "engine.dtype", "bfloat16"),
    ({"DTYPE": "float16"}, "engine.dtype", "float16"),
    ({"MAX_INPUT_TOKENS": "100"}, "engine.max_input_tokens", 100),
    ({"MAX_INPUT_LENGTH": "90"}, "engine.max_input_tokens", 90),
    ({"MAX_TOTAL_TOKENS": "200"}, "engine.max_total_tokens", 200),
    ({"MAX_BATCH_PREFILL_TOKENS": "512"}, "engine.max_batch_prefill_tokens", 512),
    ({"MAX_BATCH_TOTAL_TOKENS": "4096"}, "engine.max_batch_total_tokens", 4096),
    ({"MAX_BATCH_SIZE": "8"}, "engine.max_batch_size", 8),
    ({}, "engine.packed_linear", True),
    ({"CPU_PACKED_LINEAR": "false"}, "engine.packed_linear", False),
    ({}, "engine.lean_forward", True),
    ({"LEAN_FORWARD": "0"}, "engine.lean_forward", False),
    ({}, "engine.prefix_caching", True),
    ({"PREFIX_CACHING": "false"}, "engine.prefix_caching", False),
    ({}, "engine.max_concurrent_requests", 128),
    ({}, "engine.replicas", 1),
    ({"ENGINE_REPLICAS": "2"}, "engine.replicas", 2),
    ({"ENGINE_REPLICAS": "2"}, "server.engine_replicas", 2),
    ({"ENGINE_REPLICAS": "3", "MAX_CONCURRENT_REQUESTS": "10"}, "engine.max_concurrent_requests", 4),
    ({"MAX_CONCURRENT_REQUESTS": "3"}, "engine.max_concurrent_requests", 3),
    ({}, "server.port", 8080),
    ({"PORT": "3000"}, "server.port", 3000),
    ({"PORT": "3000", "SAGEMAKER_BIND_TO_PORT": "9001"}, "server.port", 9001),
    ({"SAGEMAKER_BIND_TO_PORT": ""}, "server.port", 8080),
    ({}, "server.workers", 1),
    ({"SAGEMAKER_MODEL_SERVER_WORKERS": "3"}, "server.workers", 3),
    ({"SAGEMAKER_MODEL_SERVER_WORKERS": ""}, "server.workers", 1),
    ({"HOSTNAME": "127.0.0.1"}, "server.host", "127.0.0.1"),
    ({"HOSTNAME": "a1b2c3d4e5f6"}, "server.host", "0.0.0.0"),
    ({}, "server.shutdown_grace_seconds", 30.0),
    ({"MAX_STOP_SEQUENCES": "8"}, "server.max_stop_sequences", 8),
    ({"LOG_LEVEL": "WARN"}, "server.log_level", "warning"),
    ({"SAGEMAKER_PROGRAM": "", "SAGEMAKER_REGION": "us-east-1", "MESSAGES_API_ENABLED": "true", "HF_TASK": "x"},
     "server.port", 8080),
    # The HF LLM DLC's SageMaker names, then TGI's own names for the same settings.
    ({}, "engine.model_source", "HF_MODEL_ID"),
    ({"HF_MODEL_ID": "", "MODEL_ID": "tgi/model"}, "engine.model_source", "MODEL_ID"),
    ({"REVISION": "v2"}, "engine.revision", "v2"),
    ({"HF_MODEL_REVISION": "main", "REVISION": "v2"}, "engine.revision", "main"),
    ({"HF_API_TOKEN": "t3"}, "engine.hf_token", "t3"),
    ({"HF_TOKEN": "t1", "HUGGING_FACE_HUB_TOKEN": "t2"}, "engine.hf_token", "t1"),
    ({"TRUST_REMOTE_CODE": "true"}, "engine.trust_remote_code", True),
    ({"HF_MODEL_TRUST_REMOTE_CODE": "false", "TRUST_REMOTE_CODE": "true"}, "engine.trust_remote_code", False),
    ({"NUM_SHARD": "2"}, "engine.num_gpus", 2),
    ({"SM_NUM_GPUS": "1", "NUM_SHARD": "2"}, "engine.num_gpus", 1),
    ({"SHARDED": "false"}, "engine.num_gpus", 1),
    ({"SHARDED": "true", "SM_NUM_GPUS": "4"}, "engine.num_gpus", 4),
    ({}, "engine.dtype", None),
    ({"HF_MODEL_QUANTIZE": ""}, "engine.dtype", None),
    ({"HF_MODEL_QUANTIZE": "false"}, "engine.dtype", None),
    ({"QUANTIZE": "None"}, "engine.dtype", None),
    ({"HF_HUB_CACHE": "/data/hub"}, "engine.cache_dir", "/data/hub"),
    ({"HUGGINGFACE_HUB_CACHE": "/data/old"}, "engine.cache_dir", "/data/old"),
    ({}, "engine.memory_fraction", 1.0),
    ({"CUDA_MEMORY_FRACTION": "0.9"}, "engine.memory_fraction", 0.9),
    ({"GRACEFUL_TERMINATION_TIMEOUT": "20"}, "server.shutdown_grace_seconds", 20.0),
    ({"SHUTDOWN_GRACE_SECONDS": "5", "GRACEFUL_TERMINATION_TIMEOUT": "20"}, "server.shutdown_grace_seconds", 5.0),
    ({"SM_NUM_GPUS": json_dumps(4), "MAX_TOTAL_TOKENS": json_dumps(512)}, "engine.num_gpus", 4),
    # What the SDK injects (empty values included) and TGI settings with no effect here are accepted and named.
    ({}, "ignored", ()),
    ({"SAGEMAKER_PROGRAM": "", "SAGEMAKER_SUBMIT_DIRECTORY": "", "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
      "SAGEMAKER_REGION": "us-east-1"}, "ignored", ("SAGEMAKER_CONTAINER_LOG_LEVEL", "SAGEMAKER_REGION")),
    ({"MESSAGES_API_ENABLED": "true", "HF_TASK": "text-generation", "CUDA_GRAPHS": "0", "SPECULATE": "2"},
     "ignored", ("MESSAGES_API_ENABLED", "HF_TASK", "SPECULATE", "CUDA_GRAPHS")),
])
def test_values_and_aliases(env, path, expected):
    config = from_env({**BASE, **env})
    value = config
    for name in path.split("."):
        value = getattr(value, name)
    assert value == expected


@pytest.mark.parametrize("env, variable", [
    ({"MAX_TOTAL_TOKENS": "lots"}, "MAX_TOTAL_TOKENS"),
    ({"MAX_TOTAL_TOKENS": "0"}, "MAX_TOTAL_TOKENS"),
    ({"MAX_INPUT_TOKENS": "10", "MAX_INPUT_LENGTH": "10"}, "MAX_INPUT_LENGTH"),
    ({"MAX_INPUT_TOKENS": "10", "MAX_TOTAL_TOKENS": "10"}, "MAX_INPUT_TOKENS"),
    ({"SM_NUM_GPUS": "-1"}, "SM_NUM_GPUS"),
    ({"DTYPE": "int3"}, "DTYPE"),
    ({"HF_MODEL_TRUST_REMOTE_CODE": "maybe"}, "HF_MODEL_TRUST_REMOTE_CODE"),
    ({"HF_MODEL_QUANTIZE": "gptq"}, "HF_MODEL_QUANTIZE"),
    ({"PORT": "70000"}, "PORT"),
    ({"SAGEMAKER_MODEL_SERVER_WORKERS": "zero"}, "SAGEMAKER_MODEL_SERVER_WORKERS"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"HF_MODEL_QUANTIZE": "bitsandbytes"}, "HF_MODEL_QUANTIZE"),
    ({"HF_MODEL_QUANTIZE": "true"}, "HF_MODEL_QUANTIZE"),
    ({"QUANTIZE": "awq"}, "QUANTIZE"),
    ({"SM_NUM_GPUS": "two"}, "SM_NUM_GPUS"),
    ({"SM_NUM_GPUS": "0"}, "SM_NUM_GPUS"),
    ({"SHARDED": "false", "SM_NUM_GPUS": "2"}, "SHARDED"),
    ({"SHARDED": "true", "NUM_SHARD": "1"}, "SHARDED"),
    ({"SHARDED": "sometimes"}, "SHARDED"),
    ({"CUDA_MEMORY_FRACTION": "1.5"}, "CUDA_MEMORY_FRACTION"),
    ({"CUDA_MEMORY_FRACTION": "0"}, "CUDA_MEMORY_FRACTION"),
    ({"SAGEMAKER_BIND_TO_PORT": "http"}, "SAGEMAKER_BIND_TO_PORT"),
    ({"DTYPE": "int8"}, "DTYPE"),
    ({"LORA_ADAPTERS": "=/x"}, "LORA_ADAPTERS"),
    ({"LORA_ADAPTERS": "a=/x,a=/y"}, "LORA_ADAPTERS"),
    ({"MAX_LORA_RANK": "0"}, "MAX_LORA_RANK"),
    ({"ROPE_SCALING": "dynamic"}, "ROPE_SCALING"),
    ({"KV_CACHE_DTYPE": "fp8_e5m2"}, "KV_CACHE_DTYPE"),
    ({"TOKENIZER_CONFIG_PATH": "/x.json"}, "TOKENIZER_CONFIG_PATH"),
    ({"ENGINE_REPLICAS": "0"}, "ENGINE_REPLICAS"),
    ({"ENGINE_REPLICAS": "2", "SERVING_ENGINE_REPLICA": "2"}, "SERVING_ENGINE_REPLICA"),
])
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError) as error:
        from_env({**BASE, **env})
    message = str(error.value)
    assert variable in message and "\n" not in message


def test_lora_adapters_in_tgi_format():
    engine = from_env({**BASE, "LORA_ADAPTERS": "org/one, org/two@v2 ,local=/opt/adapters/x,hub=org/three@main"}).engine
    assert [(spec.name, spec.source) for spec in engine.lora_adapters] == [
        ("org/one", "org/one"), ("org/two", "org/two@v2"), ("local", "/opt/adapters/x"), ("hub", "org/three@main")]
    assert engine.max_lora_adapters == 8 and engine.max_lora_rank == 64
    many = ",".join(f"a{i}=/d{i}" for i in range(10))
    assert from_env({**BASE, "LORA_ADAPTERS": many}).engine.max_lora_adapters == 10
    assert from_env({**BASE, "MAX_LORA_ADAPTERS": "2", "MAX_LORA_RANK": "16"}).engine.max_lora_rank == 16


def test_model_falls_back_to_opt_ml_model_then_the_default_model(tmp_path, monkeypatch):
    sagemaker_dir = tmp_path / "opt-ml-model"
    default_dir = tmp_path / "default"
    monkeypatch.setattr(config_module, "SAGEMAKER_MODEL_DIR", sagemaker_dir)
    monkeypatch.setattr(config_module, "DEFAULT_MODEL_DIR", default_dir)
    with pytest.raises(ConfigError, match="HF_MODEL_ID"):
        from_env({})
    default_dir.mkdir()
    (default_dir / "config.json").write_text("{}")
    assert from_env({}).engine.model_id == str(default_dir)
    sagemaker_dir.mkdir()
    (sagemaker_dir / "config.json").write_text("{}")
    assert from_env({}).engine.model_id == str(sagemaker_dir)
    assert from_env({"HF_MODEL_ID": "org/m"}).engine.model_id == "org/m"


def test_opt_ml_model_with_files_but_no_config_asks_for_hf_model_id(tmp_path, monkeypatch):
    sagemaker_dir = tmp_path / "opt-ml-model"
    (sagemaker_dir / "my-model").mkdir(parents=True)
    monkeypatch.setattr(config_module, "SAGEMAKER_MODEL_DIR", sagemaker_dir)
    with pytest.raises(ConfigError, match="HF_MODEL_ID accepts") as error:
        from_env({})
    assert "\n" not in str(error.value)
    assert from_env({"HF_MODEL_ID": str(sagemaker_dir / "my-model")}).engine.model_source == "HF_MODEL_ID"


def test_serving_model_dir_stands_in_for_opt_ml_model(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "SAGEMAKER_MODEL_DIR", tmp_path / "absent")
    (tmp_path / "mounted").mkdir()
    (tmp_path / "mounted" / "config.json").write_text("{}")
    engine = from_env({"SERVING_MODEL_DIR": str(tmp_path / "mounted")}).engine
    assert engine.model_id == str(tmp_path / "mounted")
    assert engine.model_source == str(tmp_path / "absent")


def test_embedded_default_model_is_named_as_the_source(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "SAGEMAKER_MODEL_DIR", tmp_path / "absent")
    monkeypatch.setattr(config_module, "DEFAULT_MODEL_DIR", tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert from_env({}).engine.model_source == "embedded default model"


def test_engine_and_server_share_one_engine_address():
    config = from_env({**BASE, "SERVING_ENGINE_ADDRESS": "ipc:///tmp/x.sock"})
    assert config.engine.engine_address == config.server.engine_address == "ipc:///tmp/x.sock"


@pytest.mark.parametrize("address, replicas, expected", [
    ("ipc:///tmp/x.sock", 1, ("ipc:///tmp/x.sock",)),
    ("ipc:///tmp/x.sock", 3, ("ipc:///tmp/x.sock", "ipc:///tmp/x.sock.1", "ipc:///tmp/x.sock.2")),
    ("tcp://127.0.0.1:5550", 2, ("tcp://127.0.0.1:5550", "tcp://127.0.0.1:5551")),
])
def test_each_engine_replica_has_its_own_socket(address, replicas, expected):
    config = from_env({**BASE, "SERVING_ENGINE_ADDRESS": address, "ENGINE_REPLICAS": str(replicas)})
    assert config.server.engine_addresses == expected
    for replica, replica_address in enumerate(expected):
        engine = from_env({**BASE, "SERVING_ENGINE_ADDRESS": address, "ENGINE_REPLICAS": str(replicas),
                           "SERVING_ENGINE_REPLICA": str(replica), "SERVING_ENGINE_HEARTBEAT": "/tmp/beat"}).engine
        assert (engine.engine_address, engine.replica) == (replica_address, replica)
        assert engine.heartbeat_path == ("/tmp/beat" if replica == 0 else f"/tmp/beat.{replica}")
