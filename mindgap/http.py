"""Pieces every mindgap FastAPI service shares: bearer auth, body limit, JSON bodies only
(415), clear 422s (documented as ``ValidationErrorBody``), request metrics, and a lifespan
that notices a shutdown signal."""

from __future__ import annotations

import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from email.message import Message as MimeHeader
from types import FrameType
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class FieldError(BaseModel):
    """One invalid field: where (``items.3.question``, ``path.job_id``) and why."""

    field: str
    message: str


class ValidationErrorBody(BaseModel):
    """The body of every 422: a one-line summary and each invalid field."""

    detail: str
    errors: list[FieldError]


def bearer_auth(api_key: str | None) -> Callable[[Request], Awaitable[None]]:
    """A dependency that demands ``Authorization: Bearer <api_key>`` when a key is set."""

    async def check(request: Request) -> None:
        if not api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Header values arrive as latin-1 text: compare their bytes with the key's UTF-8.
        sent = token.strip().encode("latin-1")
        if scheme.lower() != "bearer" or not secrets.compare_digest(sent, api_key.encode()):
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


def is_json(content_type: str) -> bool:
    """Whether a Content-Type names JSON (``application/json``, ``application/*+json``)."""
    header = MimeHeader()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json"))


class JsonOnly:
    """ASGI middleware: answer 415 to a body sent as anything but JSON, or with no
    Content-Type (every route of a mindgap service that takes a body takes JSON, and
    FastAPI would not parse an untyped body either)."""

    _BODY = b'{"detail":"unsupported content type: send the body as application/json"}'

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _refused(scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return False
        headers = dict(scope["headers"])
        declared = headers.get(b"content-type")
        if declared is None:
            return headers.get(b"content-length", b"0") != b"0" or (
                b"transfer-encoding" in headers)
        return not is_json(declared.decode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._refused(scope):
            await send({"type": "http.response.start", "status": 415,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(self._BODY)).encode())]})
            await send({"type": "http.response.body", "body": self._BODY})
            return
        await self.app(scope, receive, send)


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


class _Observed:
    """ASGI middleware of ``observe_requests`` (plain ASGI, so that ``receive`` still
    reports a client's disconnect to the routes)."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_code = 500

        async def noting_send(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(path, str(status_code)).inc()
            self.latency.labels(path).observe(time.perf_counter() - start)


def observe_requests(app: FastAPI, requests: Counter, latency: Histogram) -> None:
    """Count every request by route template and status, and time it."""
    app.add_middleware(_Observed, requests=requests, latency=latency)


def _document_422s(schema: dict[str, Any]) -> None:
    """Make every documented 422 of an OpenAPI ``schema`` a ``ValidationErrorBody``."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ValidationErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["ValidationErrorBody"] = body
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422")
            if answer is not None:
                answer["content"] = {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ValidationErrorBody"}}}


def install_common(app: FastAPI, max_body_bytes: int) -> None:
    """Add the body limit, the 415 of non-JSON bodies and the readable 422 handler to
    ``app``, and document its 422s as ``ValidationErrorBody``."""
    app.add_middleware(JsonOnly)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_422s(generate())  # generate() caches its schema in app.openapi_schema
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


@contextmanager
def _noticing_signals(stopping: threading.Event) -> Iterator[None]:
    """Set ``stopping`` on SIGTERM/SIGINT, then run the server's own handler (uvicorn's:
    it then waits for the open requests). Only in the main thread, only in front of a
    handler that is a function; the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def notice(sig: int, frame: FrameType | None) -> None:
        stopping.set()
        handler = previous[sig]
        if callable(handler):
            handler(sig, frame)

    chained = [sig for sig, handler in previous.items() if callable(handler)]
    for sig in chained:
        signal.signal(sig, notice)
    try:
        yield
    finally:
        for sig in chained:
            if signal.getsignal(sig) is notice:
                signal.signal(sig, previous[sig])


def closing_lifespan(close: Callable[[], None] | None, stopping: threading.Event | None = None
                     ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan that calls ``close`` at shutdown (None: nothing to close) and,
    given ``stopping``, sets it when a shutdown signal arrives, so that long waits can answer
    at once instead of holding up the server's graceful shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if stopping is None:
            yield
        else:
            with _noticing_signals(stopping):
                yield
        if close is not None:
            close()

    return lifespan
