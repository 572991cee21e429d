"""What the rewriter's routes share: one ``RewriterContext`` on ``app.state``, handed to each
route by the ``Context`` dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from mindgap.config import RewriterSettings
from mindgap.queue import Queue


@dataclass(frozen=True, slots=True)
class RewriterContext:
    """The app's queue, settings, verifier URL (None: answers are checked locally, by the
    workers) and metrics registry."""

    queue: Queue
    settings: RewriterSettings
    verifier_url: str | None
    registry: CollectorRegistry


async def rewriter_context(request: Request) -> RewriterContext:
    """The context ``create_app`` put on ``app.state.rewriter``."""
    context: RewriterContext = request.app.state.rewriter
    return context


Context = Annotated[RewriterContext, Depends(rewriter_context)]
"""A route parameter typed ``Context`` receives the app's ``RewriterContext``."""
