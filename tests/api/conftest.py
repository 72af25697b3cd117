"""Fixtures of the API tests: the real app around a scripted engine client, and Flask's test client."""

from __future__ import annotations

import pytest
from api_helpers import FakeEngineClient, make_config

from serving.api.app import create_app
from serving.config import ServerConfig


@pytest.fixture
def engine() -> FakeEngineClient:
    """A fresh scripted engine client."""
    return FakeEngineClient()


@pytest.fixture
def config() -> ServerConfig:
    """TGI's default limits."""
    return make_config()


@pytest.fixture
def app(config, engine):
    """The real app around the scripted engine."""
    return create_app(config, engine)


@pytest.fixture
def http(app):
    """Flask's test client of the app."""
    return app.test_client()
