"""The server's two pure ASGI middlewares: admission (body size, requests and bytes in flight) and metrics.

Both see every request whatever happens inside the app, so a refusal or a crash is still measured, and a body
is limited by the bytes that actually arrive (`receive()` messages), not by what its Content-Length claims: a
chunked upload with no Content-Length is refused as soon as it passes the limit, without being read further.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


class _Refused(Exception):
    """Raised into the app by `receive()` after the middleware has answered for it: stop reading, stop working."""


@dataclass(frozen=True)
class BodyLimit:
    bytes: int
    message: str  # what a 413 says is accepted, e.g. "at most 1,048,576 bytes of JSON are accepted"


class Admission:
    """Refuses what the server will not take before it costs memory or CPU.

    - A body larger than its route's limit: 413 at once when Content-Length says so, else as soon as the bytes
      received pass it (the app is then stopped and its own answer dropped).
    - A POST to an API path when `max_in_flight` of them are already being received or answered, or when the
      bodies of those in flight already hold `max_body_bytes_in_flight` bytes: 503 with Retry-After.

    `error(path, status, message)` builds the response, so each route keeps its own error format.
    """

    def __init__(
        self,
        app,
        limits: dict[str, BodyLimit],
        default_limit: BodyLimit,
        api_paths,
        error,
        max_in_flight: int,
        max_body_bytes_in_flight: int,
        retry_after_s: int = 1,
    ):
        self.app, self.limits, self.default_limit, self.error = app, limits, default_limit, error
        self.api_paths = frozenset(api_paths)
        self.max_in_flight, self.max_body_bytes = max_in_flight, max_body_bytes_in_flight
        self.retry_after = str(retry_after_s)
        self.in_flight = 0  # API requests being received or answered
        self.body_bytes = 0  # bytes of their bodies received so far

    async def _answer(self, scope, send, status: int, message: str):
        response = self.error(scope["path"], status, message)
        if status == 503:
            response.headers["Retry-After"] = self.retry_after
        await response(scope, _no_body, send)

    def _too_large(self, limit: BodyLimit, size: str) -> str:
        return f"the request body is {size}; {limit.message}"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = self.limits.get(path, self.default_limit)
        length = _content_length(scope)
        if length == "invalid":
            return await self._answer(scope, send, 400, "the Content-Length header is not a whole number")
        if length is not None and length > limit.bytes:
            return await self._answer(scope, send, 413, self._too_large(limit, f"{length:,} bytes"))
        api = scope["method"] == "POST" and path in self.api_paths
        if api and self.in_flight >= self.max_in_flight:
            return await self._answer(
                scope,
                send,
                503,
                f"the server is answering {self.in_flight} requests (at most "
                f"{self.max_in_flight} at once); try again in a second",
            )
        if api and length is not None and self.body_bytes + length > self.max_body_bytes:
            return await self._answer(
                scope, send, 503, "the server is receiving too much data at once; try again in a second"
            )
        received, refused, started = 0, False, False

        async def receive_counted():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                received += size
                if api:
                    self.body_bytes += size
                status = (
                    413 if received > limit.bytes else 503 if api and self.body_bytes > self.max_body_bytes else None
                )
                if status and not refused:
                    refused = True
                    if not started:
                        await self._answer(
                            scope,
                            send,
                            status,
                            self._too_large(limit, f"over {limit.bytes:,} bytes")
                            if status == 413
                            else "the server is receiving too much data at once; try again in a second",
                        )
                if refused:
                    raise _Refused()
            return message

        async def send_unless_refused(message):
            nonlocal started
            if refused:  # the app's own answer to a request already refused here
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        if api:
            self.in_flight += 1
        try:
            await self.app(scope, receive_counted, send_unless_refused)
        except Exception:
            if not refused:
                raise
        finally:
            if api:
                self.in_flight -= 1
                self.body_bytes -= received


async def _no_body():
    return {"type": "http.disconnect"}


def _content_length(scope):
    """The Content-Length header as an int, None if absent, "invalid" if it is not a whole number."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            if not value.isdigit():
                return "invalid"
            return int(value) if len(value) <= 18 else 10**18  # longer is over every limit (and slow to convert)
    return None


class Metrics:
    """Counts every response by route and status, including 5xx from exceptions, and observes its latency.

    `record(endpoint, status, seconds)`; `endpoint` is the matched route's path, the request path for a refused
    API request, else "unmatched" (so a scan of random URLs cannot grow the label set).
    """

    def __init__(self, app, record, api_paths):
        self.app, self.record, self.api_paths = app, record, frozenset(api_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), None

        async def send_observed(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            self._record(scope, status or 500, start)  # the server error handler outside answers 500 for it
            raise
        # An app that returns without answering gets uvicorn's 500. (A cancelled request answers nothing.)
        self._record(scope, status or 500, start)

    def _record(self, scope, status: int, start: float) -> None:
        route = getattr(scope.get("route"), "path", None)
        endpoint = route or (scope["path"] if scope["path"] in self.api_paths else "unmatched")
        self.record(endpoint, status, time.perf_counter() - start)
