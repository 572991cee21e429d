"""Jobs: their statuses and state (as the queue stores them), and the rewriter API's
request/response models.

Nothing here needs Redis, so HTTP clients (``mindgap submit --follow``) use the status names
too; :mod:`mindgap.queue` reads and writes the state.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mindgap.datasets import ProblemSelection
from mindgap.schemas import AlignedExample, Problem, RewriteOptions

MAX_SYNC_ITEMS = 64
"""Largest number of items one synchronous ``POST /v1/rewrite`` may carry."""

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ENTRY_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"


class JobStatus(StrEnum):
    """Where a job is: queued, running, then one of the finished statuses."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    CANCELLED = "cancelled"


FINISHED: frozenset[JobStatus] = frozenset({
    JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_FAILURES, JobStatus.CANCELLED})
"""The statuses a job never leaves."""


class JobState(BaseModel):
    """A job as the queue records it (``Queue.jobs.status``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: JobStatus
    total: int
    done: int
    failed: int
    skipped: int = Field(description="Tasks acknowledged unprocessed (a cancelled job).")
    requeued: int = Field(default=0, description="Problems a trainer re-queued because their "
                          "example was too stale to train on (online rewriting); each is done "
                          "again, so it counts in done once.")
    remaining: int
    counts: dict[str, int] = Field(description="Done examples per source: self, guided, expert.")
    created: float = Field(description="Unix time (Redis clock).")
    updated: float
    finished: float | None
    last_error: str | None
    options: dict[str, Any]
    feed_trainer: bool


# --- Requests and responses -----------------------------------------------------------


class DatasetSpec(ProblemSelection):
    """A data set the server reads itself (the path must exist on the server)."""

    path: str = Field(min_length=1, max_length=4096,
                      description="A .jsonl/.json/.parquet file, or a folder written by "
                      "Hugging Face `save_to_disk`, under the server's data root (a relative "
                      "path is relative to it).")

    @field_validator("path")
    @classmethod
    def _printable(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("the path contains a NUL character")
        return value


class JobRequest(BaseModel):
    """A batch job: inline ``items`` or a server-side ``dataset``, and how to rewrite them."""

    model_config = ConfigDict(extra="forbid")

    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN,
                               description="Client-chosen id (idempotent: resending the very "
                               "same request under it returns the existing job; another "
                               "request under a taken id gets 409).")
    items: list[Problem] | None = Field(default=None, min_length=1)
    dataset: DatasetSpec | None = None
    options: RewriteOptions = Field(default_factory=RewriteOptions)
    feed_trainer: bool = Field(default=True, description="Also send the results to the "
                               "trainer's stream.")

    @model_validator(mode="after")
    def _one_source(self) -> JobRequest:
        if (self.items is None) == (self.dataset is None):
            raise ValueError("give exactly one of items or dataset")
        return self


class JobCreated(BaseModel):
    """The answer to ``POST /v1/jobs``."""

    job_id: str
    status: JobStatus
    total: int
    created: bool = Field(description="False when the job already existed (idempotent resend).")


class JobView(JobState):
    """A job's progress: its state plus rate and ETA."""

    elapsed_s: float = Field(description="Seconds since creation (until finished, if it is).")
    rate: float | None = Field(description="Done problems per second since creation.")
    eta_s: float | None = Field(description="Seconds left at the current rate; null when "
                                "unknown, 0 when finished.")


class JobList(BaseModel):
    """Jobs, newest first."""

    jobs: list[JobView]
    limit: int
    offset: int


class RewriteRequest(BaseModel):
    """A synchronous rewrite of up to ``MAX_SYNC_ITEMS`` problems."""

    model_config = ConfigDict(extra="forbid")

    items: list[Problem] = Field(min_length=1, max_length=MAX_SYNC_ITEMS)
    options: RewriteOptions = Field(default_factory=RewriteOptions)
    timeout_s: float = Field(default=600.0, ge=1.0, le=3600.0,
                             description="Seconds to wait for the workers; then 504 with the "
                             "job id (the job keeps running).")


class RewriteResponse(BaseModel):
    """Aligned examples in item order; null where the item failed (see ``failed``)."""

    job_id: str
    status: JobStatus
    examples: list[AlignedExample | None]
    failed: list[str] = Field(description="Ids of the problems that failed.")
    last_error: str | None = None


def job_view(state: JobState, now: float) -> JobView:
    """A job's state plus rate and ETA, given the current time (Redis clock)."""
    end = state.finished if state.finished is not None else now
    elapsed = max(0.0, end - state.created)
    rate = state.done / elapsed if state.done and elapsed > 0 else None
    if state.finished is not None or state.remaining == 0:
        eta: float | None = 0.0
    else:
        eta = state.remaining / rate if rate else None
    return JobView(**state.model_dump(), elapsed_s=elapsed, rate=rate, eta_s=eta)


def dataset_error_line(message: str, path: str) -> int | None:
    """The line number in a ``DatasetError`` message ``path:line: ...``, if it has one."""
    if message.startswith(f"{path}:"):
        match = re.match(r"(\d+):", message[len(path) + 1:])
        if match:
            return int(match.group(1))
    return None


__all__ = [
    "FINISHED",
    "MAX_SYNC_ITEMS",
    "DatasetSpec",
    "JobCreated",
    "JobList",
    "JobRequest",
    "JobState",
    "JobStatus",
    "JobView",
    "RewriteRequest",
    "RewriteResponse",
    "job_view",
]
