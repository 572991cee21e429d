"""Pieces every mindgap FastAPI service shares: bearer auth, body limit, clear 422s."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def bearer_auth(api_key: str | None) -> Callable[[Request], Awaitable[None]]:
    """A dependency that demands ``Authorization: Bearer <api_key>`` when a key is set."""

    async def check(request: Request) -> None:
        if not api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), api_key):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong API key",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


class BodyLimit:
    """ASGI middleware: answer 413 when a request body exceeds ``max_bytes`` (declared or sent).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        body = (b'{"detail":"request body larger than %d bytes"}' % self.max_bytes)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            if not started:
                await self._reject(send)


class _TooLarge(BaseException):
    """Raised from ``receive``; a BaseException so body parsers cannot turn it into a 400."""


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
              for e in exc.errors()]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
    return JSONResponse(status_code=422, content={"detail": summary, "errors": errors})


LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                      2.5, 5, 10, 30)
"""Request latency buckets in seconds; a service with longer requests appends its own."""


class RequestMetrics:
    """A service's own Prometheus registry, holding its HTTP request counter and latency
    histogram (``mindgap_<service>_requests``, ``mindgap_<service>_request_seconds``) for
    :func:`observe_requests`; subclasses add their metrics to ``registry``."""

    def __init__(self, service: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(f"mindgap_{service}_requests", "HTTP requests",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram(f"mindgap_{service}_request_seconds", "HTTP request latency",
                                 ["route"], registry=self.registry, buckets=buckets)


def observe_requests(app: FastAPI, requests: Counter, latency: Histogram) -> None:
    """Count every request by route template and status, and time it."""

    @app.middleware("http")
    async def observe(request: Request,
                      call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        path = getattr(request.scope.get("route"), "path", "unmatched")
        requests.labels(path, str(response.status_code)).inc()
        latency.labels(path).observe(time.perf_counter() - start)
        return response


def install_common(app: FastAPI, max_body_bytes: int) -> None:
    """Add the body limit and the readable 422 handler to ``app``."""
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error)


def closing_lifespan(close: Callable[[], None] | None
                     ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan that calls ``close`` at shutdown (None: nothing to close)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if close is not None:
            close()

    return lifespan
