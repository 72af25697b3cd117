"""gunicorn's entry point: `gunicorn -k gevent 'serving.api.wsgi:app_from_env()'`."""

from __future__ import annotations

from flask import Flask

from serving.api.app import create_app
from serving.config import from_env
from serving.logs import setup_logging


def app_from_env() -> Flask:
    """The app for the configuration in the environment, talking to the engine at its configured address."""
    from serving.client import EngineClient

    config = from_env()
    setup_logging(config.server.log_level, role="http")
    return create_app(config.server, EngineClient(config.server.engine_addresses, config.server.engine_down_path))
