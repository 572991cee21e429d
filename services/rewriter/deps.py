"""What the rewriter's routes share: one ``RewriterContext`` on ``app.state``, handed to each
route by the ``Context`` dependency, and ``create_job``: a job created within the limits."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from prometheus_client import CollectorRegistry

from mindgap.config import RewriterSettings
from mindgap.queue import Queue
from mindgap.queue.jobs import JobConflict, TooManyOpenJobs
from mindgap.rewriter.rejections import Rejected
from mindgap.schemas import Problem

RETRY_AFTER_S = 10
"""The Retry-After of a 429 (too many open jobs)."""


@dataclass(frozen=True, slots=True)
class RewriterContext:
    """The app's queue, settings, verifier URL (None: answers are checked locally, by the
    workers), metrics registry, ``stopping`` (set when the server is told to stop), and the
    API key (None: open; the job console signs in with it)."""

    queue: Queue
    settings: RewriterSettings
    verifier_url: str | None
    registry: CollectorRegistry
    stopping: threading.Event
    api_key: str | None = None


async def rewriter_context(request: Request) -> RewriterContext:
    """The context ``create_app`` put on ``app.state.rewriter``."""
    context: RewriterContext = request.app.state.rewriter
    return context


Context = Annotated[RewriterContext, Depends(rewriter_context)]
"""A route parameter typed ``Context`` receives the app's ``RewriterContext``."""


def create_job(context: RewriterContext, job_id: str, problems: list[Problem],
               options: dict[str, Any], *, feed_trainer: bool) -> bool:
    """``Jobs.create`` with the settings' expiry and open-job cap; True when new.

    409 when the id is taken by another request, 429 (with Retry-After) when
    ``max_open_jobs`` jobs are open.
    """
    settings = context.settings
    try:
        return context.queue.jobs.create(job_id, problems, options, feed_trainer=feed_trainer,
                                         ttl_s=settings.job_ttl_s,
                                         max_open=settings.max_open_jobs)
    except JobConflict as exc:
        raise Rejected(409, str(exc), job_id=job_id) from None
    except TooManyOpenJobs as exc:
        raise HTTPException(429, f"{exc}; retry later (MINDGAP_REWRITER_MAX_OPEN_JOBS)",
                            headers={"Retry-After": str(RETRY_AFTER_S)}) from None
