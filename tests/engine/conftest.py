"""Tiny local models for the engine tests: built once per session, never downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch

from engine_helpers import engine_config
from serving.engine.engine import LLMEngine
from serving.engine.loader import LoadedModel, load_model

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def model_dir(tiny_model_dir: Path) -> Path:
    """The shared tiny Llama with its chat template."""
    return tiny_model_dir


@pytest.fixture(scope="session")
def no_template_dir(tiny_model_no_template_dir: Path) -> Path:
    """The same model without a chat template."""
    return tiny_model_no_template_dir


@pytest.fixture(scope="session")
def loaded(model_dir: Path) -> LoadedModel:
    """The tiny model loaded once; engines share it (the engine never changes the model)."""
    return load_model(engine_config(model_dir))


@pytest.fixture
def make_engine(loaded: LoadedModel, model_dir: Path) -> Iterator[Callable[..., LLMEngine]]:
    """Build an engine over the shared model with configuration overrides; each is closed after the test (which
    ends its grammar process, if it started one)."""
    engines: list[LLMEngine] = []

    def make(**overrides: object) -> LLMEngine:
        engines.append(LLMEngine(loaded, engine_config(model_dir, **overrides)))
        return engines[-1]

    yield make
    for engine in engines:
        engine.close()
