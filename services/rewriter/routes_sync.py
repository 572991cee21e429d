"""``POST /v1/rewrite``: a small job, waited for (needs running workers)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import APIRouter, Response

from mindgap.jobs import RewriteRequest, RewriteResponse
from mindgap.queue import FINISHED, Jobs, JobState, JobStatus
from mindgap.rewriter.deps import Context
from mindgap.rewriter.rejections import Rejected, reject_duplicate_ids
from mindgap.schemas import Problem

router = APIRouter()


async def _wait(jobs: Jobs, job_id: str, timeout_s: float, max_pause_s: float) -> JobState:
    """Poll the job, backing off up to ``max_pause_s``, until it finishes; 409 if it vanishes,
    504 after ``timeout_s`` (the job goes on)."""
    deadline = time.monotonic() + timeout_s
    pause = 0.01
    while True:
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


@router.post("/v1/rewrite", response_model=RewriteResponse,
             responses={409: {"description": "The job was cancelled or deleted meanwhile."},
                        422: {"description": "Invalid items."},
                        504: {"description": "Not done within timeout_s; the job goes on "
                              "(poll /v1/jobs/{job_id})."}})
async def rewrite(body: RewriteRequest, context: Context) -> Response:
    """Rewrite up to 64 problems and wait for them (needs running workers)."""
    reject_duplicate_ids(body.items)
    jobs = context.queue.jobs
    job_id = f"sync-{uuid.uuid4().hex}"
    await asyncio.to_thread(jobs.create, job_id, body.items,
                            body.options.model_dump(mode="json"), feed_trainer=False)
    state = await _wait(jobs, job_id, body.timeout_s, context.settings.poll_interval_s)
    if state.status == JobStatus.CANCELLED:
        raise Rejected(409, f"job {job_id} was cancelled", job_id=job_id)
    raw = await asyncio.to_thread(lambda: [r for _, r in jobs.results(job_id)])
    return Response(_answer(state, body.items, raw), media_type="application/json")
