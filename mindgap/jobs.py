"""Jobs over HTTP: the rewriter API's request/response models, worker heartbeats.

Heartbeats: a worker calls :func:`worker_heartbeat` every few seconds; it sets
``<prefix>:workers:<consumer>`` with a TTL and records the expiry (Redis clock) in the sorted
set ``<prefix>:workers``, so :func:`live_workers` lists live workers without a ``SCAN``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mindgap.datasets import PRESETS
from mindgap.queue import JobStatus, Queue
from mindgap.schemas import AlignedExample, Problem, RewriteOptions

MAX_SYNC_ITEMS = 64
"""Largest number of items one synchronous ``POST /v1/rewrite`` may carry."""

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ENTRY_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"


# --- Requests and responses -----------------------------------------------------------


class DatasetSpec(BaseModel):
    """A data set the server reads itself (the path must exist on the server)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096,
                      description="A .jsonl/.json/.parquet file, or a folder written by "
                      "Hugging Face `save_to_disk`, readable by the server.")
    preset: str = Field(default="mindgap", description="Field mapping: "
                        + ", ".join(sorted(PRESETS)) + ".",
                        json_schema_extra={"enum": sorted(PRESETS)})
    split: str = Field(default="train", min_length=1, max_length=256,
                       description="Split of a Hugging Face folder with several splits.")
    limit: int | None = Field(default=None, ge=1, description="Most problems to read.")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known: {', '.join(sorted(PRESETS))}")
        return value

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
                               description="Client-chosen id (idempotent: resubmitting the "
                               "same problems under it returns the existing job).")
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


class JobView(BaseModel):
    """A job's progress."""

    id: str
    status: JobStatus
    total: int
    done: int
    failed: int
    skipped: int
    remaining: int
    counts: dict[str, int] = Field(description="Done examples per source: self, guided, expert.")
    created: float = Field(description="Unix time (Redis clock).")
    updated: float
    finished: float | None
    elapsed_s: float = Field(description="Seconds since creation (until finished, if it is).")
    rate: float | None = Field(description="Done problems per second since creation.")
    eta_s: float | None = Field(description="Seconds left at the current rate; null when "
                                "unknown, 0 when finished.")
    last_error: str | None
    options: dict[str, Any]
    feed_trainer: bool


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


def job_view(raw: dict[str, Any], now: float) -> JobView:
    """A ``Queue.job_status`` dict plus rate and ETA, given the current time (Redis clock)."""
    end = raw["finished"] if raw["finished"] is not None else now
    elapsed = max(0.0, end - raw["created"])
    rate = raw["done"] / elapsed if raw["done"] and elapsed > 0 else None
    if raw["finished"] is not None or raw["remaining"] == 0:
        eta: float | None = 0.0
    else:
        eta = raw["remaining"] / rate if rate else None
    return JobView(**raw, elapsed_s=elapsed, rate=rate, eta_s=eta)


def dataset_error_line(message: str, path: str) -> int | None:
    """The line number in a ``DatasetError`` message ``path:line: ...``, if it has one."""
    if message.startswith(f"{path}:"):
        match = re.match(r"(\d+):", message[len(path) + 1:])
        if match:
            return int(match.group(1))
    return None


# --- Worker heartbeats ------------------------------------------------------------------

# KEYS: worker key, index. ARGV: consumer, ttl seconds, value. Redis clock for the expiry.
_LUA_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return 1
"""

# KEYS: index. Drop expired entries, return the live ones.
_LUA_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def workers_key(queue: Queue) -> str:
    """The sorted set of workers by heartbeat expiry."""
    return f"{queue.prefix}:workers"


def worker_key(queue: Queue, consumer: str) -> str:
    """The worker's heartbeat key (expires ``ttl_s`` after the last beat)."""
    return f"{queue.prefix}:workers:{consumer}"


def worker_heartbeat(queue: Queue, consumer: str, ttl_s: int = 30,
                     info: dict[str, Any] | None = None) -> None:
    """Mark ``consumer`` alive for ``ttl_s`` seconds; ``info`` is stored as its JSON value."""
    if ttl_s < 1:
        raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
    value = json.dumps({"consumer": consumer, **(info or {})})
    queue.redis.eval(_LUA_HEARTBEAT, 2, worker_key(queue, consumer), workers_key(queue),
                     consumer, int(ttl_s), value)


def worker_gone(queue: Queue, consumer: str) -> None:
    """Forget a worker at once (on a clean shutdown)."""
    pipe = queue.redis.pipeline()
    pipe.delete(worker_key(queue, consumer))
    pipe.zrem(workers_key(queue), consumer)
    pipe.execute()


def live_workers(queue: Queue) -> list[str]:
    """Consumers with a fresh heartbeat, sorted."""
    return sorted(queue.redis.eval(_LUA_LIVE, 1, workers_key(queue)))


__all__ = [
    "MAX_SYNC_ITEMS",
    "DatasetSpec",
    "JobCreated",
    "JobList",
    "JobRequest",
    "JobView",
    "RewriteRequest",
    "RewriteResponse",
    "job_view",
    "live_workers",
    "worker_gone",
    "worker_heartbeat",
]
