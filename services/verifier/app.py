"""The verifier service: FastAPI over a ``LocalVerifier`` pool."""

from __future__ import annotations

import asyncio
from collections import Counter

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mindgap import __version__, offline_docs
from mindgap.config import ServiceSettings, VerifierSettings
from mindgap.http import bearer_auth, closing_lifespan, install_common, observe_requests
from mindgap.schemas import (
    VerifyBatchRequest,
    VerifyBatchResponse,
    VerifyRequest,
    VerifyResult,
)
from mindgap.verifier.metrics import VerifierMetrics
from mindgap.verifier.pool import LocalVerifier, QueueFull

READY_PROBE_TIMEOUT_S = 10.0
"""Longest wait of /readyz for its probe verification (busy workers answer late)."""
TOO_MANY: dict[int | str, dict[str, object]] = {
    429: {"description": "This client has too many items queued; retry after `Retry-After` "
                         "seconds."}}
CLIENT_CLOSED = 499
"""The status logged for a request whose client left before its answer (nginx's code)."""


def client_key(request: Request, api_key: str | None) -> str:
    """Whose queue a request counts against: the API key when one is set, else the address."""
    if api_key:
        return "api-key"
    return f"address:{request.client.host}" if request.client else "address:unknown"


async def answer(request: Request, verifier: LocalVerifier, items: list[VerifyRequest],
                 client: str) -> list[VerifyResult] | Response:
    """Results of ``items``, or a 429 when the client's queue is full; the work is cancelled
    (queued items dropped, running ones interrupted) when the client disconnects."""
    try:
        ticket = verifier.submit_many(items, client=client, deadline_from_now=True)
    except QueueFull as exc:
        return JSONResponse({"detail": f"too many items queued: {exc}"}, status_code=429,
                            headers={"Retry-After": str(exc.retry_after_s)})
    waiter = asyncio.wrap_future(ticket.future)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        gone = not waiter.done()  # the client left, or the request's own task was cancelled
        if gone:
            ticket.cancel()
    return Response(status_code=CLIENT_CLOSED) if gone else waiter.result()


async def _disconnect(request: Request) -> None:
    """Return when the client disconnects (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(pool: LocalVerifier | None = None,
               settings: VerifierSettings | None = None,
               service: ServiceSettings | None = None) -> FastAPI:
    """Build the app; it owns (and closes) the pool unless one is passed in."""
    settings = settings or VerifierSettings()
    service = service or ServiceSettings()
    verifier = pool or LocalVerifier(workers=settings.workers, timeout_s=settings.timeout_s,
                                     memory_mb=settings.memory_mb,
                                     max_queued_per_client=settings.max_queued_per_client)
    metrics = VerifierMetrics(verifier)
    lifespan = closing_lifespan(verifier.close if pool is None else None)
    app = FastAPI(title="mindgap verifier", version=__version__, lifespan=lifespan,
                  description="Sandboxed checking of math answers against references.",
                  docs_url=None, redoc_url=None)
    install_common(app, settings.max_body_bytes)
    app.include_router(offline_docs.router)  # /docs, /redoc with no CDN
    auth = [Depends(bearer_auth(service.api_key))]

    observe_requests(app, metrics.requests, metrics.latency)

    @app.post("/v1/verify", dependencies=auth, response_model=VerifyResult, responses=TOO_MANY)
    @app.post("/verify", dependencies=auth, response_model=VerifyResult, responses=TOO_MANY,
              summary="Verify one (stable alias of /v1/verify)")
    async def verify_one(body: VerifyRequest, request: Request) -> VerifyResult | Response:
        """Verify one response against a reference."""
        results = await answer(request, verifier, [body], client_key(request, service.api_key))
        if isinstance(results, Response):
            return results
        metrics.verdicts.labels(results[0].reason.value).inc()
        return results[0]

    @app.post("/v1/verify/batch", dependencies=auth, response_model=VerifyBatchResponse,
              responses=TOO_MANY)
    async def verify_batch(body: VerifyBatchRequest, request: Request) -> Response:
        """Verify up to 1024 items in parallel; results in request order."""
        results = await answer(request, verifier, body.items,
                               client_key(request, service.api_key))
        if isinstance(results, Response):
            return results
        for reason, count in Counter(r.reason.value for r in results).items():
            metrics.verdicts.labels(reason).inc(count)
        # Already validated models: serialise once, without a second validation pass.
        return Response(VerifyBatchResponse.model_construct(results=results).model_dump_json(),
                        media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "The worker pool cannot verify yet."}})
    async def readyz() -> JSONResponse:
        """Readiness: a sandbox worker verifies a known pair correctly, within the probe time."""
        try:
            probe = await asyncio.wait_for(verifier.averify("\\boxed{2}", "2"),
                                           READY_PROBE_TIMEOUT_S)
        except TimeoutError:
            return JSONResponse({"status": "not ready", "detail": "no sandbox worker answered "
                                 f"within {READY_PROBE_TIMEOUT_S:.0f} s"}, status_code=503)
        if probe.correct:
            return JSONResponse({"status": "ready", "workers": verifier.live_workers()})
        return JSONResponse({"status": "not ready", "detail": probe.detail}, status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
