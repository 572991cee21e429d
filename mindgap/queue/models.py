"""Typed views of the queue: tasks, stream depths, dead letters, stats, trim reports."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mindgap.schemas import Problem


@dataclass(frozen=True, slots=True)
class Task:
    """One problem of one job, as delivered to a rewriter worker."""

    entry_id: str
    job_id: str
    problem: Problem
    options: dict[str, Any]
    deliveries: int
    consumer: str


class StreamDepth(BaseModel):
    """A stream and its consumer group."""

    model_config = ConfigDict(frozen=True)

    length: int = Field(description="Entries in the stream (tasks: the backlog, undelivered "
                        "plus in flight, since acknowledged tasks are deleted).")
    undelivered: int = Field(description="Entries not yet delivered to the group.")
    pending: int = Field(description="Entries delivered but not acknowledged.")


class QueueStats(BaseModel):
    """Depths of the queue: for operators, metrics and autoscaling."""

    model_config = ConfigDict(frozen=True)

    tasks: StreamDepth
    aligned: StreamDepth
    trainer_lag: int = Field(description="Aligned entries the trainers have not trained on "
                             "(``AlignedStream.lag``).")
    dead_letters: int = Field(description="Entries in the dead-letter stream.")
    live_workers: list[str] = Field(description="Workers with a fresh heartbeat.")


class DeadLetter(BaseModel):
    """An entry of the dead-letter stream: a task that failed ``max_deliveries`` times, or a
    malformed task or aligned entry (then only some fields are set)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(description="The dead letter's entry id.")
    stream: Literal["tasks", "aligned"] = Field(description="Where the entry came from.")
    task_id: str = Field(description="The entry's id in that stream.")
    error: str
    job: str | None = None
    problem_id: str | None = None
    problem: str | None = Field(default=None, description="The task's problem (JSON).")
    options: str | None = Field(default=None, description="The task's options (JSON).")
    example: str | None = Field(default=None, description="An aligned entry's example.")
    deliveries: int | None = None
    consumer: str | None = None
    time: float | None = Field(default=None, description="Unix time (Redis clock).")


class TrimReport(BaseModel):
    """What one retention pass removed."""

    model_config = ConfigDict(frozen=True)

    aligned: int = Field(description="Aligned entries every consumer group had acknowledged.")
    consumers: list[str] = Field(description="Idle consumers without pending entries.")


class Requeue(IntEnum):
    """What ``AlignedStream.requeue`` did with a stale entry."""

    REQUEUED = 1
    """Dropped; its problem is a task again (the job reopened if it had finished)."""
    KEEP = 0
    """Not re-queued (its problem was re-queued before, its job is unknown, or the entry does
    not carry its problem): the trainer trains on it, corrected by its behavior log-probs."""
    SETTLED = -1
    """Not pending any more: dropped and re-queued earlier (a repeated call)."""
    CANCELLED = -2
    """Its job was cancelled: dropped, not re-queued."""


class StalenessCounts(BaseModel):
    """The trainers' staleness counters of one queue (``P:staleness``)."""

    dropped: int = Field(default=0, description="Stale examples dropped by a trainer.")
    requeued: int = Field(default=0, description="Of those, how many had their problem "
                          "re-queued for rewriting.")
    trained: dict[int, int] = Field(default_factory=dict, description="Model responses "
                                    "trained on, by staleness: versions between the one that "
                                    "sampled them and the trainer's at that step.")
