"""The image's entrypoint: `python -m serving` as SageMaker starts it (`serve`, other arguments ignored), its one-line
configuration errors, the start-up log of the model's source, and the Dockerfile's exec-form entrypoint and label."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest

from serving import config as config_module
from serving import launcher
from servers import REPO_ROOT

DOCKERFILE = REPO_ROOT / "container" / "Dockerfile"


@pytest.fixture
def runs(monkeypatch, tmp_path):
    """Launcher.run replaced by a recorder; a clean environment naming a model."""
    started = []
    monkeypatch.setattr(launcher.Launcher, "run", lambda self: started.append(self.config) or 0)
    monkeypatch.setattr(launcher, "setup_logging", lambda *args, **kwargs: None)  # keep caplog's handler
    for name in list(os.environ):
        if name.startswith(("HF_", "SM_", "SAGEMAKER_", "MAX_", "QUANTIZE", "MODEL_ID")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("HOSTNAME", raising=False)
    monkeypatch.setenv("HF_MODEL_ID", str(tmp_path))
    return started


@pytest.mark.parametrize("argv, ignored", [
    ([], None),
    (["serve"], None),
    (["serve", "--json-output"], "--json-output"),
    (["train"], "train"),
])
def test_serve_is_accepted_and_other_arguments_ignored(runs, caplog, argv, ignored):
    with caplog.at_level(logging.INFO, logger="serving.launcher"):
        assert launcher.main(argv) == 0
    assert len(runs) == 1
    assert ("ignoring arguments" in caplog.text) == (ignored is not None)
    if ignored:
        assert f"ignoring arguments {ignored}" in caplog.text


def test_a_configuration_error_exits_2_with_one_line(runs, monkeypatch, capsys):
    monkeypatch.setenv("HF_MODEL_QUANTIZE", "awq")
    assert launcher.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("serving: configuration error: HF_MODEL_QUANTIZE='awq'")
    assert runs == []


def test_sagemaker_sdk_variables_are_tolerated_and_named(runs, monkeypatch, caplog):
    for name, value in {"SAGEMAKER_PROGRAM": "", "SAGEMAKER_SUBMIT_DIRECTORY": "", "SAGEMAKER_REGION": "us-east-1",
                        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SM_NUM_GPUS": "1", "HF_TASK": "text-generation",
                        "MESSAGES_API_ENABLED": "true", "HF_MODEL_QUANTIZE": "false"}.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.INFO, logger="serving.launcher"):
        assert launcher.main(["serve"]) == 0
    assert "ignored: MESSAGES_API_ENABLED, HF_TASK, SAGEMAKER_CONTAINER_LOG_LEVEL, SAGEMAKER_REGION" in caplog.text


def test_bind_to_port_wins(runs, monkeypatch):
    monkeypatch.setenv("PORT", "80")
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9123")
    assert launcher.main(["serve"]) == 0
    assert runs[0].server.port == 9123
    assert "0.0.0.0:9123" in launcher.gunicorn_command(runs[0])


def test_the_embedded_default_model_is_said_loudly(runs, monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("HF_MODEL_ID")
    monkeypatch.setattr(config_module, "SAGEMAKER_MODEL_DIR", tmp_path / "absent")
    monkeypatch.setattr(config_module, "DEFAULT_MODEL_DIR", tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with caplog.at_level(logging.INFO, logger="serving.launcher"):
        assert launcher.main(["serve"]) == 0
    warning = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warning) == 1 and "serving the embedded default model" in warning[0].getMessage()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_entrypoint_is_exec_form_with_serve_and_the_port_label():
    instructions = dockerfile_instructions()
    final = instructions[max(i for i, (name, _) in enumerate(instructions) if name == "FROM"):]
    values = {name: args for name, args in final}
    assert json.loads(values["ENTRYPOINT"]) == ["/opt/venv/bin/python", "-m", "serving"]
    assert json.loads(values["CMD"]) == ["serve"]
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in values["LABEL"]
    assert values["FROM"] == "runtime", "the final stage is the runtime base, not the build stage"
    assert [args for name, args in instructions if name == "ARG"][0].startswith("BASE_IMAGE="), \
        "the base image is a build argument"
