"""The rewriter service: FastAPI in front of the Redis queue (workers hold the model).

Routes: ``POST /v1/jobs`` (batch job, 202), ``GET /v1/jobs[/{id}[/results]]``,
``DELETE /v1/jobs/{id}`` (cancel) in :mod:`~mindgap.rewriter.routes_jobs`; ``POST
/v1/rewrite`` and its alias ``POST /rewrite`` (synchronous, up to 64 items; 503 without a
live worker) in :mod:`~mindgap.rewriter.routes_sync`; ``/healthz``, ``/readyz`` (Redis,
verifier, a live worker) in :mod:`~mindgap.rewriter.health`; ``/metrics`` in
:mod:`~mindgap.rewriter.metrics`; ``/docs`` and ``/redoc`` (no CDN) in
:mod:`~mindgap.offline_docs`; the job console ``/ui`` in :mod:`~mindgap.rewriter.ui`.
Refusals are :class:`~mindgap.rewriter.rejections.Rejected`; the routes get the queue and
settings from :mod:`~mindgap.rewriter.deps`.
"""

from __future__ import annotations

import threading

from fastapi import Depends, FastAPI

from mindgap import __version__, offline_docs
from mindgap.config import QueueSettings, RewriterSettings, ServiceSettings, VerifierSettings
from mindgap.http import bearer_auth, closing_lifespan, install_common, observe_requests
from mindgap.queue import Queue
from mindgap.rewriter import health, metrics, routes_jobs, routes_sync, ui
from mindgap.rewriter.deps import RewriterContext
from mindgap.rewriter.rejections import install_rejections


def create_app(queue: Queue | None = None, settings: RewriterSettings | None = None,
               service: ServiceSettings | None = None) -> FastAPI:
    """Build the app; it owns (and closes) the queue unless one is passed in.

    Without arguments everything comes from the environment: ``QueueSettings`` (the queue),
    ``RewriterSettings``, ``ServiceSettings`` and ``VerifierSettings.url`` (gates /readyz).
    """
    settings = settings or RewriterSettings()
    service = service or ServiceSettings()
    owned = queue is None
    if queue is None:
        where = QueueSettings()
        queue = Queue.from_url(where.redis_url, where.prefix, create_groups=False)
    counters = metrics.RewriterMetrics(queue)
    stopping = threading.Event()  # set by SIGTERM/SIGINT: waiting /v1/rewrite calls answer
    app = FastAPI(title="mindgap rewriter", version=__version__, docs_url=None, redoc_url=None,
                  lifespan=closing_lifespan(queue.close if owned else None, stopping),
                  description="Rewrite math problems into on-policy training examples: jobs "
                  "on a Redis queue, done by rewriter workers.")
    app.state.rewriter = RewriterContext(queue=queue, settings=settings,
                                         verifier_url=VerifierSettings().url,
                                         registry=counters.registry, stopping=stopping,
                                         api_key=service.api_key)
    install_common(app, settings.max_body_bytes)
    install_rejections(app)
    observe_requests(app, counters.requests, counters.latency)
    auth = [Depends(bearer_auth(service.api_key))]
    app.include_router(routes_jobs.router, dependencies=auth)
    app.include_router(routes_sync.router, dependencies=auth)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(offline_docs.router)
    app.include_router(ui.router)
    return app
