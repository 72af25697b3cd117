"""Fixtures of the compatibility suite: the shared tiny-model server, one with every TGI option set, an EOS prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from compat_helpers import API_KEY, find_eos_prompt

from servers import ServerProcess, running_server

OPTIONS = {
    "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
    "API_KEY": API_KEY,
    "CORS_ALLOW_ORIGIN": "https://app.example,https://other.example",
    "PAYLOAD_LIMIT": "4000",
    "MAX_TOTAL_TOKENS": "128",
    "MAX_INPUT_TOKENS": "64",
    "MAX_BEST_OF": "1",
    "MAX_STOP_SEQUENCES": "2",
    "MAX_TOP_N_TOKENS": "3",
    "MAX_CLIENT_BATCH_SIZE": "2",
    "MAX_CONCURRENT_REQUESTS": "2",
    "COMPUTE_TYPE": "1-tiny-cpu",
}


@pytest.fixture(scope="session")
def options_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with two HTTP workers and every option of the issue set to a non-default value."""
    with running_server(tiny_model_dir, tmp_path_factory.mktemp("options-server"), **OPTIONS) as proc:
        yield proc


@pytest.fixture(autouse=True)
def close_hub_session() -> Iterator[None]:
    """huggingface_hub keeps one HTTP session for every client; closing it after each test leaves no keep-alive
    connection that would hold a server's graceful stop for its whole timeout."""
    yield
    from huggingface_hub.utils import close_session

    close_session()


@pytest.fixture(scope="session")
def eos_prompt(server: ServerProcess) -> str:
    """A prompt whose greedy continuation on the shared server ends with EOS."""
    return find_eos_prompt(server.url)
