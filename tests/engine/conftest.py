"""Tiny local models for the engine tests: built once per session, never downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from engine_helpers import engine_config
from serving.engine.engine import LLMEngine
from serving.engine.loader import LoadedModel, load_model

torch.set_num_threads(1)


def _scale_up_weights(model_dir: Path) -> None:
    """Redraw the matrices with a large spread: default-initialised tiny models just repeat their last token,
    which would make every greedy comparison pass trivially."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.25, generator=generator)
    model.save_pretrained(model_dir)


@pytest.fixture(scope="session")
def model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny Llama (with its chat template), its weights scaled so that greedy output varies."""
    path = tmp_path_factory.mktemp("tiny-scaled") / "model"
    shutil.copytree(tiny_model_dir, path)
    _scale_up_weights(path)
    return path


@pytest.fixture(scope="session")
def no_template_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model without a chat template."""
    path = tmp_path_factory.mktemp("tiny-no-template") / "model"
    shutil.copytree(model_dir, path, ignore=shutil.ignore_patterns("chat_template.jinja"))
    return path


@pytest.fixture(scope="session")
def loaded(model_dir: Path) -> LoadedModel:
    """The tiny model loaded once; engines share it (the engine never changes the model)."""
    return load_model(engine_config(model_dir))


@pytest.fixture
def make_engine(loaded: LoadedModel, model_dir: Path) -> Callable[..., LLMEngine]:
    """Build an engine over the shared model with configuration overrides."""

    def make(**overrides: object) -> LLMEngine:
        return LLMEngine(loaded, engine_config(model_dir, **overrides))

    return make
