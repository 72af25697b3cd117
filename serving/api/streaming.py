"""Server-Sent Events as TGI frames them: `data:<compact json>`, `:` keep-alives, `[DONE]` on OpenAI routes.

JSON events have no space after `data:` (axum's `json_data`); `data: [DONE]` has one, as TGI sends it and as
`huggingface_hub`'s stream parser requires (it compares the line with `data: [DONE]` exactly).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator, Mapping

from flask import Response

from serving.api.catalogue import Error
from serving.api.context import FailureTally, failure_tally
from serving.api.errors import ApiError
from serving.api.feed import EventFeed, Step
from serving.api.wire import dumpb
from serving.client import EngineClientProtocol
from serving.messages import GenerateRequest

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b":\n\n"
DONE = b"data: [DONE]\n\n"

Render = Callable[[Step], Iterable[Mapping[str, Any]]]
RenderError = Callable[[ApiError], Mapping[str, Any]]
Trailer = Callable[[], Iterable[Mapping[str, Any]]]


def sse(value: Any) -> bytes:
    """One event; no space after `data:`, as axum writes it."""
    return b"data:" + dumpb(value) + b"\n\n"


def _events(feed: EventFeed, render: Render, render_error: RenderError, done: bool,
            trailer: Trailer = tuple, tally: FailureTally | None = None) -> Iterator[bytes]:
    """The SSE bytes of a feed: each step rendered, an error as one last event, then `[DONE]` if `done`.

    `trailer` runs after the last step of a stream that ended without error. Leaving early (the HTTP client
    went away) closes the feed, which aborts the engine requests, and counts the request as `dropped`.
    """
    try:
        for step in feed.steps(KEEPALIVE_SECONDS):
            if step is None:
                yield KEEPALIVE
            elif isinstance(step, ApiError):
                yield sse(render_error(step))
                break
            else:
                try:
                    frames = b"".join(sse(event) for event in render(step))  # one write per step
                except ValueError:  # not JSON-serialisable (a lone surrogate): TGI's error
                    logger.exception("a stream event could not be serialised")
                    yield sse(render_error(ApiError.serialization()))
                    break
                yield frames
        else:
            yield from map(sse, trailer())
        if done:
            yield DONE
    except GeneratorExit:
        if tally is not None:
            tally.fail(Error.DROPPED)
        raise
    finally:
        feed.close()


def _error_events(error: ApiError, render_error: RenderError, done: bool) -> Iterator[bytes]:
    """A stream that is only an error event (TGI reports validation errors inside the stream)."""
    yield sse(render_error(error))
    if done:
        yield DONE


def _sse_response(body: Iterator[bytes], headers: Mapping[str, str], feed: EventFeed | None = None) -> Response:
    """A 200 `text/event-stream` response; closing it (a disconnect included) closes `feed`."""
    response = Response(body, 200, content_type="text/event-stream",
                        headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    if feed is not None:
        response.call_on_close(feed.close)
    return response


def stream(client: EngineClientProtocol, build: Callable[[], list[GenerateRequest]], headers: Mapping[str, str],
           render: Render, render_error: RenderError, done: bool,
           trailer: Trailer = tuple, http_errors: bool = False) -> Response:
    """Validate (`build`), start the engine requests and stream them.

    A validation error becomes the stream's only event, as in TGI; with `http_errors` (OpenAI's routes) it is an
    HTTP error, and so is an engine failure that comes first (an input too long for the context). The first engine
    event is awaited before the response starts, so that template errors and client failures are still plain HTTP
    errors. An error event, or a client that went away, counts the request as failed (once).
    """
    tally = failure_tally()

    def render_counted_error(error: ApiError) -> Mapping[str, Any]:
        if tally is not None:
            tally.fail(error.kind)
        return render_error(error)

    try:
        requests = build()
    except ApiError as error:
        if http_errors:
            raise
        return _sse_response(_error_events(error, render_counted_error, done), headers)
    feed = EventFeed(client, requests)
    feed.first(every_failure=http_errors)
    return _sse_response(_events(feed, render, render_counted_error, done, trailer, tally), headers, feed)
