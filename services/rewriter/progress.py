"""A job's progress as the API answers it: its counts plus the work in workers' hands.

Workers complete each problem at the end of the sampling round that decided it, and their
heartbeats say how far the undecided problems in hand have got (rounds used of the most
they may take), so progress, rate and ETA move within a single long batch.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from mindgap.jobs import JobState, JobView, job_view
from mindgap.queue import Queue
from mindgap.queue.jobs import job_state


class JobProgress(JobView):
    """A job's state, rate and ETA, counting the work in hand."""

    in_hand: float = Field(description="Problems' worth of sampling done on this job's "
                           "undecided problems in live workers' hands.")
    progress: float = Field(ge=0.0, le=1.0, description="Share of the job settled (done, "
                            "failed or skipped), counting the work in hand.")


class JobProgressList(BaseModel):
    """Jobs, newest first."""

    jobs: list[JobProgress]
    limit: int
    offset: int


def job_progress(state: JobState, in_hand: float, *, now: float) -> JobProgress:
    """``state`` with rate and ETA measured on its done problems plus ``in_hand``."""
    view = job_view(state, now)
    open_ = state.finished is None and state.remaining > 0
    in_hand = min(max(0.0, in_hand), float(state.remaining)) if open_ else 0.0
    settled = state.total - state.remaining
    progress = min(1.0, (settled + in_hand) / state.total) if state.total else 1.0
    worked = state.done + in_hand
    rate = worked / view.elapsed_s if worked and view.elapsed_s > 0 else None
    if not open_:
        eta: float | None = 0.0
    else:
        eta = (state.remaining - in_hand) / rate if rate else None
    return JobProgress(**{**view.model_dump(), "rate": rate, "eta_s": eta},
                       in_hand=round(in_hand, 4), progress=round(progress, 4))


def _snapshot(queue: Queue, job_ids: list[str]) -> list[tuple[JobState, float]]:
    """Each job's state and the work in hand on its problems not yet done or failed, read
    in one transaction (the counts and the done sets agree, so progress never runs ahead
    or falls back as a worker records results); unknown jobs are left out."""
    shares = queue.heartbeats.shares(job_ids)
    pipe = queue.redis.pipeline(transaction=True)
    for job_id in job_ids:
        base, done, failed, *_ = queue.keys.job_keys(job_id)
        pipe.hgetall(base)
        pids = list(shares[job_id])
        if pids:
            pipe.smismember(done, pids)
            pipe.smismember(failed, pids)
    replies = iter(pipe.execute() if job_ids else [])
    out = []
    for job_id in job_ids:
        raw, pids = next(replies), list(shares[job_id])
        settled = ([a or b for a, b in zip(next(replies), next(replies), strict=True)]
                   if pids else [])
        in_hand = sum(shares[job_id][pid] for pid, gone in zip(pids, settled, strict=True)
                      if not gone)
        if raw:
            out.append((job_state(raw), in_hand))
    return out


def read_progress(queue: Queue, job_id: str) -> JobProgress | None:
    """One job's progress (None: no such job)."""
    found = _snapshot(queue, [job_id])
    return job_progress(*found[0], now=queue.jobs.now()) if found else None


def newest_progress(queue: Queue, limit: int, offset: int) -> list[JobProgress]:
    """The newest jobs' progress (one read of the heartbeats for all of them)."""
    ids = queue.redis.zrevrange(queue.keys.jobs, offset, offset + limit - 1)
    now = queue.jobs.now()
    return [job_progress(state, in_hand, now=now) for state, in_hand in _snapshot(queue, ids)]
