"""Fixtures shared by every test package: tiny models built locally, and real server processes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from servers import ServerProcess, running_server


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a chat template, saved like a hub model."""
    from serving.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model_no_template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny model without a chat template."""
    from serving.testing.tiny_model import TinyModelSpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model-no-template"), TinyModelSpec(chat_template=False))


@pytest.fixture(scope="session")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server on the tiny model, shared by the integration tests that do not change its settings."""
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("server"), MAX_TOTAL_TOKENS="256") as proc:
        yield proc
