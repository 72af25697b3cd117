"""What every handler needs, stored on the app by `create_app`: the configuration, engine client and metrics."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from flask import current_app, g

from serving.api.catalogue import Error
from serving.api.metrics import Metrics
from serving.client import EngineClientProtocol
from serving.config import ServerConfig
from serving.messages import ModelInfo

EXTENSION = "serving"


@dataclass(frozen=True)
class Services:
    """The configuration, engine client (which records each generation's metrics) and metrics of one app."""

    config: ServerConfig
    client: EngineClientProtocol
    metrics: Metrics

    def info(self, refresh: bool = False) -> ModelInfo:
        """The loaded model's facts (the client caches them; `refresh` asks the engine for the current adapters)."""
        return self.client.info(refresh)


def services() -> Services:
    """The services of the app serving the current request."""
    return current_app.extensions[EXTENSION]


@dataclass
class FailureTally:
    """One counted HTTP request's failure, counted once under the first reason (a client that hung up is
    `dropped`, and nothing else however many of its generations that ended)."""

    metrics: Metrics
    counted: bool = False

    def fail(self, error: Error) -> None:
        """Count the request as failed under `error`'s label, unless it already was."""
        if not self.counted:
            self.counted = True
            self.metrics.failure(error)


def count_request(generations: int = 1) -> None:
    """Count a generation request (`tgi_request_count`); its failure is then counted too (`failure_tally`)."""
    metrics = services().metrics
    metrics.request(generations)
    g.failure_tally = FailureTally(metrics)


def failure_tally() -> FailureTally | None:
    """The current request's failure tally, when it is a counted request."""
    return g.get("failure_tally")


def new_id() -> str:
    """A fresh unique id (32 hex digits) for a request or a call."""
    return uuid.uuid4().hex


def unix_now() -> int:
    """The current time in unix seconds, for `created`."""
    return int(time.time())
