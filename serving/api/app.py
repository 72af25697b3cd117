"""The Flask app factory: one blueprint per API surface, and JSON error handlers (never an HTML page)."""

from __future__ import annotations

from flask import Flask

from serving.api import errors, openai, sagemaker, tgi
from serving.api.context import EXTENSION, Services
from serving.client import EngineClientProtocol
from serving.config import ServerConfig


def create_app(config: ServerConfig, client: EngineClientProtocol) -> Flask:
    """An app serving TGI's, OpenAI's and SageMaker's routes in front of `client`."""
    app = Flask(__name__)
    app.extensions[EXTENSION] = Services(config, client)
    for blueprint in (tgi.blueprint, openai.blueprint, sagemaker.blueprint):
        app.register_blueprint(blueprint)
    errors.register(app)
    return app
