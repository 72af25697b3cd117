"""The Flask app factory: one blueprint per API surface, JSON error handlers (never an HTML page), auth and CORS."""

from __future__ import annotations

import os

from flask import Flask

from serving.api import access, adapters, docs, errors, openai, requestlog, sagemaker, tgi, vertex
from serving.api.catalogue import Error
from serving.api.context import EXTENSION, Services
from serving.api.errors import ApiError
from serving.api.metrics import MeteredClient, Metrics
from serving.client import EngineClientProtocol
from serving.config import ServerConfig


def create_app(config: ServerConfig, client: EngineClientProtocol) -> Flask:
    """An app serving TGI's, OpenAI's and SageMaker's routes in front of `client`."""
    app = Flask(__name__)
    app.url_map.merge_slashes = False  # `/v1//chat/completions` is a 404 like TGI's, not a redirect past the key check
    metrics = Metrics(config.metrics_dir)
    app.extensions[EXTENSION] = Services(config, MeteredClient(client, metrics), metrics)
    for blueprint in (tgi.blueprint, openai.blueprint, sagemaker.blueprint, vertex.blueprint, adapters.blueprint,
                      docs.blueprint):
        app.register_blueprint(blueprint)
    errors.register(app)
    requestlog.register(app)
    access.register(app, config)
    if config.drain_path is not None:
        app.before_request(lambda: refuse_when_draining(config.drain_path))
    return app


def refuse_when_draining(drain_path: str) -> None:
    """503 for every new request once the launcher began a shutdown (it created `drain_path`)."""
    if os.path.exists(drain_path):
        raise ApiError(Error.SHUTTING_DOWN, "The server is shutting down and accepts no new requests")
