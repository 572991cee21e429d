"""``/healthz`` (the process answers) and ``/readyz`` (Redis, the verifier, a live worker)."""

from __future__ import annotations

import asyncio

import httpx
import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from mindgap.queue import Queue
from mindgap.rewriter.deps import Context

READY_PROBE_TIMEOUT_S = 5.0
"""Longest wait of /readyz for each probe: the Redis ping, the heartbeats, the verifier."""

router = APIRouter()


async def _redis_check(queue: Queue) -> tuple[str, list[str]]:
    """Whether Redis answers ("ok" or why not), and the workers with a fresh heartbeat."""
    try:
        await asyncio.wait_for(asyncio.to_thread(queue.redis.ping), READY_PROBE_TIMEOUT_S)
        workers = await asyncio.wait_for(asyncio.to_thread(queue.heartbeats.live),
                                         READY_PROBE_TIMEOUT_S)
    except (redis.RedisError, TimeoutError) as exc:  # the type only: messages name hosts
        return f"unreachable: {type(exc).__name__}", []
    return "ok", workers


async def _verifier_check(url: str | None) -> str:
    """The verifier service's readiness ("ok" or why not); "local" when there is none."""
    if not url:
        return "local"
    try:
        async with httpx.AsyncClient(timeout=READY_PROBE_TIMEOUT_S) as client:
            code = (await client.get(url.rstrip("/") + "/readyz")).status_code
    except httpx.HTTPError as exc:
        return f"unreachable: {str(exc) or type(exc).__name__}"
    return "ok" if code == 200 else f"not ready (HTTP {code})"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis, the verifier or every worker "
                                        "is missing."}})
async def readyz(context: Context) -> JSONResponse:
    """Readiness: Redis answers, the verifier is ready (or local), a worker is alive."""
    redis_check, workers = await _redis_check(context.queue)
    verifier_check = await _verifier_check(context.verifier_url)
    checks = {"redis": redis_check, "verifier": verifier_check,
              "workers": len(workers) if workers else "no worker heartbeat"}
    ready = redis_check == "ok" and verifier_check in ("ok", "local") and bool(workers)
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks,
                         "workers": workers}, status_code=200 if ready else 503)
