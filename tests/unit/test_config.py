"""`serving.config.from_env`: every variable, its aliases, its defaults and its one-line errors."""

from __future__ import annotations

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
    ({}, "engine.max_concurrent_requests", 128),
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
])
def test_values_and_aliases(env, path, expected):
    config = from_env({**BASE, **env})
    section, name = path.split(".")
    assert getattr(getattr(config, section), name) == expected


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
])
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError) as error:
        from_env({**BASE, **env})
    message = str(error.value)
    assert variable in message and "\n" not in message


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


def test_engine_and_server_share_one_engine_address():
    config = from_env({**BASE, "SERVING_ENGINE_ADDRESS": "ipc:///tmp/x.sock"})
    assert config.engine.engine_address == config.server.engine_address == "ipc:///tmp/x.sock"
