"""Worker heartbeats: which rewriter workers are alive and what each is doing (what the
rewriter's ``/readyz`` counts, the backpressure shares the room among, and job progress
reads the work in hand from).

A worker calls ``beat`` every few seconds from a background thread (and at once when its
state changes); it sets ``P:workers:<consumer>`` to a ``WorkerBeat`` (JSON) with a TTL and
records the expiry (Redis clock) in the sorted set ``P:workers``, so ``live`` lists live
workers without a ``SCAN``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mindgap.queue.store import Store


class WorkerState(StrEnum):
    """What a worker's engine is doing."""

    IDLE = "idle"
    """Waiting for tasks (or paused by backpressure)."""
    GENERATING = "generating"
    """A batch in hand: sampling and verifying."""
    RELOADING = "reloading"
    """Loading new weights (a new policy version); no tasks taken meanwhile."""


class WorkerBeat(BaseModel):
    """One worker's last heartbeat."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    consumer: str
    state: WorkerState = WorkerState.IDLE
    since: float = Field(default=0.0, description="Unix time the state began (worker clock).")
    tasks: int = Field(default=0, description="Tasks in hand.")
    in_hand: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Per job, per problem in hand: the share of its "
        "work done (samples drawn of the most it may take; 1 once decided).")
    completed: int = Field(default=0, description="Tasks this worker has completed.")
    model: str | None = None
    policy_version: int | None = None
    reloads: int = Field(default=0, description="Policy versions loaded since it started.")
    last_reload_s: float | None = Field(default=None, description="Seconds the last policy "
                                        "reload took.")


class Heartbeats:
    """The heartbeats of one queue's workers."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def beat(self, consumer: str, ttl_s: int = 30, info: dict[str, Any] | None = None) -> None:
        """Mark ``consumer`` alive for ``ttl_s`` seconds; ``info`` (``WorkerBeat`` fields) is
        stored as its JSON value."""
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        keys = self._store.keys
        value = json.dumps({**(info or {}), "consumer": consumer})
        self._store.scripts.heartbeat(keys=[keys.worker(consumer), keys.workers],
                                      args=[consumer, int(ttl_s), value])

    def gone(self, consumer: str) -> None:
        """Forget a worker at once (on a clean shutdown)."""
        pipe = self._store.redis.pipeline()
        pipe.delete(self._store.keys.worker(consumer))
        pipe.zrem(self._store.keys.workers, consumer)
        pipe.execute()

    def live(self) -> list[str]:
        """Consumers with a fresh heartbeat, sorted."""
        return sorted(self._store.scripts.live(keys=[self._store.keys.workers]))

    def workers(self) -> list[WorkerBeat]:
        """The last heartbeat of each live worker, by consumer (an unreadable one counts as
        a bare, idle beat: the worker is alive all the same)."""
        names = self.live()
        if not names:
            return []
        values = self._store.redis.mget([self._store.keys.worker(n) for n in names])
        beats = []
        for name, value in zip(names, values, strict=True):
            try:
                beat = WorkerBeat.model_validate_json(value or "{}")
            except ValidationError:
                beat = WorkerBeat(consumer=name)
            beats.append(beat.model_copy(update={"consumer": name}))
        return beats

    def shares(self, job_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Per job of ``job_ids``: its problems in live workers' hands, each with the share
        of its work done (a task reclaimed by another worker: the furthest). Problems done
        meanwhile may still be listed: check them against the job's done and failed sets."""
        shares: dict[str, dict[str, float]] = {job_id: {} for job_id in job_ids}
        for beat in self.workers():
            for job_id, problems in beat.in_hand.items():
                if job_id in shares:
                    for pid, share in problems.items():
                        shares[job_id][pid] = max(share, shares[job_id].get(pid, 0.0))
        return shares
