"""``POST /v1/rewrite`` and its stable alias ``POST /rewrite``: a small job, waited for
(needs a live worker: 503 at once without one)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response

from mindgap.jobs import RewriteRequest, RewriteResponse
from mindgap.queue import FINISHED, JobState, JobStatus
from mindgap.rewriter.deps import Context, RewriterContext, create_job
from mindgap.rewriter.rejections import Rejected, check_items
from mindgap.schemas import Problem

router = APIRouter()


async def _wait(request: Request, context: RewriterContext, job_id: str,
                timeout_s: float) -> JobState:
    """Poll the job, backing off up to ``poll_interval_s``, until it finishes; 409 if it
    vanishes, 504 after ``timeout_s`` and 503 when the server is stopping (the job goes on
    in both), 499 when the client has gone (the job is cancelled: nobody will read it)."""
    jobs, max_pause_s = context.queue.jobs, context.settings.poll_interval_s
    deadline = time.monotonic() + timeout_s
    pause = 0.01
    while True:
        if await request.is_disconnected():
            await asyncio.to_thread(jobs.cancel, job_id)
            raise Rejected(499, f"client gone; job {job_id} cancelled", job_id=job_id)
        if context.stopping.is_set():
            raise Rejected(503, f"the server is stopping; job {job_id} goes on: poll "
                           f"/v1/jobs/{job_id}", job_id=job_id)
        state = await asyncio.to_thread(jobs.status, job_id)
        if state is None:
            raise Rejected(409, f"job {job_id} was deleted while waiting", job_id=job_id)
        if state.status in FINISHED:
            return state
        left = deadline - time.monotonic()
        if left <= 0:
            raise Rejected(504, f"job {job_id} not done after {timeout_s:g} s "
                           f"({state.done}/{state.total} done); it goes on: "
                           f"poll /v1/jobs/{job_id}", job_id=job_id)
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, max_pause_s)


def _answer(state: JobState, problems: list[Problem], raw: list[str]) -> str:
    """The ``RewriteResponse`` as JSON, splicing the stored examples in request order."""
    by_problem = {json.loads(line)["problem_id"]: line for line in raw}
    examples = ",".join(by_problem.get(p.id, "null") for p in problems)
    failed = [p.id for p in problems if p.id not in by_problem]
    return (f'{{"job_id":{json.dumps(state.id)},"status":{json.dumps(state.status)},'
            f'"examples":[{examples}],"failed":{json.dumps(failed)},'
            f'"last_error":{json.dumps(state.last_error)}}}')


_ANSWERS: dict[int | str, dict[str, Any]] = {
    409: {"description": "The job was cancelled or deleted meanwhile."},
    422: {"description": "Invalid items."},
    429: {"description": "Too many open jobs; see Retry-After."},
    503: {"description": "No worker is alive (no job is made), or the server is stopping "
          "(the job goes on: poll /v1/jobs/{job_id})."},
    504: {"description": "Not done within timeout_s; the job goes on "
          "(poll /v1/jobs/{job_id})."}}


async def _need_a_worker(context: RewriterContext) -> None:
    """503 at once when no worker has a fresh heartbeat: nobody would answer the job."""
    if not await asyncio.to_thread(context.queue.heartbeats.live):
        raise Rejected(503, "no rewriter worker is alive (no heartbeat); start `mindgap "
                       "worker`, or queue a batch job with POST /v1/jobs", live_workers=0)


@router.post("/rewrite", response_model=RewriteResponse, responses=_ANSWERS,
             summary="Rewrite (stable alias of /v1/rewrite)")
@router.post("/v1/rewrite", response_model=RewriteResponse, responses=_ANSWERS)
async def rewrite(body: RewriteRequest, context: Context, request: Request) -> Response:
    """Rewrite up to 64 problems and wait for them (needs running workers: 503 at once
    without one); a client that leaves cancels its job. ``/rewrite`` is the same route."""
    check_items(body.items)
    await _need_a_worker(context)
    jobs = context.queue.jobs
    job_id = f"sync-{uuid.uuid4().hex}"
    await asyncio.to_thread(create_job, context, job_id, body.items,
                            body.options.model_dump(mode="json"), feed_trainer=False)
    state = await _wait(request, context, job_id, body.timeout_s)
    if state.status == JobStatus.CANCELLED:
        raise Rejected(409, f"job {job_id} was cancelled", job_id=job_id)
    raw = await asyncio.to_thread(lambda: [r for _, r in jobs.results(job_id)])
    return Response(_answer(state, body.items, raw), media_type="application/json")
