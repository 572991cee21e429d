"""Batch jobs: ``POST /v1/jobs`` (202), ``GET /v1/jobs[/{id}[/results]]``, ``DELETE
/v1/jobs/{id}`` (cancel)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from mindgap.jobs import (
    ENTRY_ID_PATTERN,
    JOB_ID_PATTERN,
    JobCreated,
    JobRequest,
    JobView,
    job_view,
)
from mindgap.queue import Jobs, entry_order
from mindgap.rewriter.data_root import read_dataset
from mindgap.rewriter.deps import Context, create_job
from mindgap.rewriter.progress import JobProgress, JobProgressList, newest_progress, read_progress
from mindgap.rewriter.rejections import Rejected, check_items, invalid

router = APIRouter()

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, max_length=128,
                            description="The job's id (as POST /v1/jobs answered it).")]
"""A job id in a path: checked before any Redis key is made of it (422 otherwise)."""

_NOT_FOUND = {404: {"description": "No such job."}}
_MAX_STREAM_PART = 2**64 - 1


async def _count_items(request: Request, context: Context) -> None:
    """413 for more inline items than ``max_job_items``, counted in the parsed JSON before
    any of them becomes a model."""
    try:
        body = await request.json()  # parsed once: FastAPI's body reads the same cache
    except ValueError:
        return  # the body's validation answers the malformed JSON
    items = body.get("items") if isinstance(body, dict) else None
    limit = context.settings.max_job_items
    if isinstance(items, list) and len(items) > limit:
        raise Rejected(413, f"{len(items)} items; a job holds at most {limit} "
                       "(MINDGAP_REWRITER_MAX_JOB_ITEMS)", max_job_items=limit)


def _view(jobs: Jobs, job_id: str) -> JobView:
    """The job as answered, or a 404."""
    state = jobs.status(job_id)
    if state is None:
        raise Rejected(404, f"no job {job_id!r}")
    return job_view(state, jobs.now())


def _start(after: str | None) -> tuple[int, int] | None:
    """``after`` in stream order (None: from the start); 422 when out of a stream's range."""
    if after is None:
        return None
    start = entry_order(after)
    if max(start) > _MAX_STREAM_PART:
        raise invalid([{"field": "after", "message": "not a stream entry id"}])
    return start


def _result_lines(jobs: Jobs, job_id: str, after: str | None,
                  last: str | None) -> Iterator[str]:
    """The job's results after ``after`` up to ``last`` (None: nothing), one a line."""
    if last is None:
        return
    bound = entry_order(last)
    for entry_id, raw in jobs.results(job_id, after):
        if entry_order(entry_id) > bound:
            return
        yield raw + "\n"


@router.post("/v1/jobs", status_code=202, response_model=JobCreated,
             dependencies=[Depends(_count_items)],
             responses={200: {"model": JobCreated, "description": "The job already existed "
                              "with this very request (idempotent resend)."},
                        409: {"description": "The job id is taken by another request (other "
                              "problems, content, options or feed_trainer)."},
                        413: {"description": "More than max_job_items problems."},
                        422: {"description": "Invalid rows, listed by index or line."},
                        429: {"description": "Too many open jobs; see Retry-After."}})
def post_job(body: JobRequest, context: Context) -> JSONResponse:
    """Queue a batch job from inline items or a server-side data set."""
    if body.items is not None:
        problems = body.items
        check_items(problems)
    else:
        assert body.dataset is not None
        problems = read_dataset(body.dataset, context.settings)
    job_id = body.job_id or uuid.uuid4().hex
    created = create_job(context, job_id, problems, body.options.model_dump(mode="json"),
                         feed_trainer=body.feed_trainer)
    state = _view(context.queue.jobs, job_id)
    answer = JobCreated(job_id=job_id, status=state.status, total=state.total,
                        created=created)
    return JSONResponse(answer.model_dump(), status_code=202 if created else 200,
                        headers={"Location": f"/v1/jobs/{job_id}"})


@router.get("/v1/jobs", response_model=JobProgressList)
def list_jobs(context: Context, limit: int = Query(100, ge=1, le=1000),
              offset: int = Query(0, ge=0, le=10**12)) -> JobProgressList:
    """Jobs, newest first, with their progress."""
    return JobProgressList(jobs=newest_progress(context.queue, limit, offset), limit=limit,
                           offset=offset)


@router.get("/v1/jobs/{job_id}", response_model=JobProgress, responses=_NOT_FOUND)
def job_status(job_id: JobId, context: Context) -> JobProgress:
    """A job's progress: counts, the work in workers' hands, rate and ETA (these move
    within a batch: per sampling round and per problem decided)."""
    progress = read_progress(context.queue, job_id)
    if progress is None:
        raise Rejected(404, f"no job {job_id!r}")
    return progress


@router.get("/v1/jobs/{job_id}/results", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}},
                             "description": "Aligned examples, one JSON object a line, in "
                             "completion order. Headers: X-Job-Status, and X-Last-Entry-Id "
                             "to pass as `after` next time."}, **_NOT_FOUND})
def job_results(job_id: JobId, context: Context, after: str | None = Query(
        None, pattern=ENTRY_ID_PATTERN, max_length=41,
        description="Only results after this entry id (an X-Last-Entry-Id).")
) -> StreamingResponse:
    """The job's results so far as JSON lines (works while the job runs)."""
    jobs = context.queue.jobs
    start = _start(after)
    state = _view(jobs, job_id)
    last = jobs.last_result_id(job_id)
    fresh = last is not None and (start is None or entry_order(last) > start)
    headers = {"X-Job-Status": state.status, "X-Last-Entry-Id": (last if fresh else after)
               or ""}
    return StreamingResponse(_result_lines(jobs, job_id, after, last if fresh else None),
                             media_type="application/x-ndjson", headers=headers)


@router.delete("/v1/jobs/{job_id}", response_model=JobView,
               responses={**_NOT_FOUND, 409: {"description": "The job already finished."}})
def cancel_job(job_id: JobId, context: Context) -> JobView:
    """Cancel a queued or running job: its queued tasks are removed, workers drop the ones
    in hand."""
    jobs = context.queue.jobs
    try:
        cancelled = jobs.cancel(job_id)
    except KeyError:
        raise Rejected(404, f"no job {job_id!r}") from None
    state = _view(jobs, job_id)
    if not cancelled:
        raise Rejected(409, f"job {job_id!r} already finished ({state.status})",
                       status=state.status)
    return state
