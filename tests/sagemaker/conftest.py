"""SageMaker-facing tests (SAGEMAKER.md §6): the SDK's local mode over a stand-in docker (layer B) and boto3 and
the SDK through the local runtime stand-in (layer C). No AWS account, no cloud traffic: dummy credentials, a region,
telemetry off, and every runtime call pointed at 127.0.0.1."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from sagemaker_helpers import RuntimeProcess

pytest.importorskip("sagemaker", reason="the SageMaker SDK v2 is not installed (pip install '.[sagemaker]')")


@pytest.fixture(autouse=True)
def offline_aws(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Dummy credentials and region, no metadata service, no SDK telemetry or v2 warning."""
    config = tmp_path_factory.getbasetemp() / "sagemaker-config.yaml"
    if not config.exists():
        config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
                          "      TelemetryOptOut: true\n")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))


@pytest.fixture(scope="module")
def runtime(server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    """The runtime stand-in in front of the shared tiny-model server."""
    proc = RuntimeProcess(server.url, tmp_path_factory.mktemp("runtime"))
    try:
        yield proc
    finally:
        proc.stop()
