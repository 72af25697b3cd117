"""The HTTP workers' handle on the engine process: generate, tokenize, info and health over a local socket."""

from __future__ import annotations

from typing import Iterator, Protocol

from serving.messages import (
    EngineEvent,
    GenerateRequest,
    HealthResult,
    ModelInfo,
    TokenizeRequest,
    TokenizeResult,
)


class EngineClientProtocol(Protocol):
    """What the API layer needs from the engine; tests substitute a fake with the same methods."""

    def generate(self, request: GenerateRequest) -> Iterator[EngineEvent]:
        """Yield `Admitted`, then `TokenDelta`s, then one `Finished`; or a `Failed` at any point, which ends it.

        Closing the iterator early (the HTTP client went away) aborts the request in the engine.
        """
        ...

    def tokenize(self, request: TokenizeRequest) -> TokenizeResult:
        """Tokenize text or a chat; a failure comes back in `TokenizeResult.error`."""
        ...

    def info(self) -> ModelInfo:
        """The loaded model's facts and resolved limits (cached after the first call)."""
        ...

    def health(self, timeout: float = 1.5) -> HealthResult | None:
        """The engine's health, or None when it did not answer within `timeout` seconds."""
        ...
