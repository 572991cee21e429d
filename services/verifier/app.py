"""The verifier service: FastAPI over a ``LocalVerifier`` pool."""

from __future__ import annotations

import asyncio
from collections import Counter

from fastapi import Depends, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mindgap import __version__
from mindgap.config import ServiceSettings, VerifierSettings
from mindgap.http import bearer_auth, closing_lifespan, install_common, observe_requests
from mindgap.schemas import (
    VerifyBatchRequest,
    VerifyBatchResponse,
    VerifyRequest,
    VerifyResult,
)
from mindgap.verifier.metrics import VerifierMetrics
from mindgap.verifier.pool import LocalVerifier

READY_PROBE_TIMEOUT_S = 10.0
"""Longest wait of /readyz for its probe verification (busy workers answer late)."""


def create_app(pool: LocalVerifier | None = None,
               settings: VerifierSettings | None = None,
               service: ServiceSettings | None = None) -> FastAPI:
    """Build the app; it owns (and closes) the pool unless one is passed in."""
    settings = settings or VerifierSettings()
    service = service or ServiceSettings()
    verifier = pool or LocalVerifier(workers=settings.workers, timeout_s=settings.timeout_s,
                                     memory_mb=settings.memory_mb)
    metrics = VerifierMetrics(verifier)
    lifespan = closing_lifespan(verifier.close if pool is None else None)
    app = FastAPI(title="mindgap verifier", version=__version__, lifespan=lifespan,
                  description="Sandboxed checking of math answers against references.")
    install_common(app, settings.max_body_bytes)
    auth = [Depends(bearer_auth(service.api_key))]

    observe_requests(app, metrics.requests, metrics.latency)

    @app.post("/v1/verify", dependencies=auth, response_model=VerifyResult)
    async def verify_one(body: VerifyRequest) -> VerifyResult:
        """Verify one response against a reference."""
        result = await verifier.averify(body.response, body.reference)
        metrics.verdicts.labels(result.reason.value).inc()
        return result

    @app.post("/v1/verify/batch", dependencies=auth, response_model=VerifyBatchResponse)
    async def verify_batch(body: VerifyBatchRequest) -> Response:
        """Verify up to 1024 items in parallel; results in request order."""
        results = await asyncio.to_thread(verifier.verify_batch, body.items)
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
            return JSONResponse({"status": "ready", "workers": verifier.workers})
        return JSONResponse({"status": "not ready", "detail": probe.detail}, status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
