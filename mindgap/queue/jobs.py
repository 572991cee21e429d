"""Creating, cancelling and reading jobs: the producer side (the rewriter API).

A job is the hash ``P:job:<job>`` (status, total, done, failed, skipped, per-source counts,
created/updated/finished, last_error, options), indexed by creation time in ``P:jobs``;
its results are the stream ``P:results:<job>``.

Retention of results: they are read by plain ``XRANGE`` (``GET /v1/jobs/{id}/results``, which
a client may repeat from any ``after`` id), not by a consumer group, so no reader ever
acknowledges them; a job's results are kept as long as the job (expiring jobs belongs to
the hardening of the queue), and ``Queue.trim`` leaves them alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mindgap.jobs import JobState, JobStatus
from mindgap.queue.store import Store
from mindgap.schemas import SOURCES, Problem

_ENQUEUE_CHUNK = 500


def fingerprint(problem_ids: Sequence[str]) -> str:
    """What identifies a job's problems (count and hash of the ids, in the given order)."""
    digest = hashlib.sha256()
    for pid in problem_ids:
        digest.update(pid.encode())
        digest.update(b"\0")
    return f"{len(problem_ids)}:{digest.hexdigest()}"


def job_state(raw: dict[str, str]) -> JobState:
    """A job hash as a ``JobState``."""
    total = int(raw.get("total", 0))
    done, failed = int(raw.get("done", 0)), int(raw.get("failed", 0))
    skipped = int(raw.get("skipped", 0))
    finished = raw.get("finished")
    return JobState(
        id=raw["id"], status=JobStatus(raw["status"]), total=total, done=done, failed=failed,
        skipped=skipped, remaining=max(0, total - done - failed - skipped),
        counts={s: int(raw.get(s, 0)) for s in SOURCES},
        created=float(raw.get("created", 0.0)), updated=float(raw.get("updated", 0.0)),
        finished=float(finished) if finished else None, last_error=raw.get("last_error"),
        options=json.loads(raw.get("options") or "{}"),
        feed_trainer=raw.get("feed_trainer") == "1")


class Jobs:
    """The jobs of one queue."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._keys = store.keys

    def create(self, job_id: str, problems: Iterable[Problem],
               options: dict[str, Any] | None = None, *, feed_trainer: bool = True) -> bool:
        """Record the job and enqueue one task per problem; True when newly created.

        Idempotent and resumable: calling it again with the same id and problems enqueues
        only what a crashed earlier call missed. ``feed_trainer=False`` keeps the results
        out of the trainer's stream (they still go to the job's results stream).
        """
        if not job_id or ":" in job_id:
            raise ValueError(f"invalid job id {job_id!r}")
        problems = list(problems)
        ids = [p.id for p in problems]
        if len(set(ids)) != len(ids):
            raise ValueError(f"job {job_id}: duplicate problem ids")
        options_json = json.dumps(options or {}, sort_keys=True)
        scripts, job = self._store.scripts, self._keys.job(job_id)
        state = int(scripts.init_job(
            keys=[job, self._keys.jobs],
            args=[job_id, len(problems), options_json, "1" if feed_trainer else "0",
                  fingerprint(sorted(ids))]))
        if state == -1:
            raise ValueError(f"job {job_id} already exists with other problems")
        if state == 0:
            return False
        enqueued = self._keys.enqueued(job_id)
        for start in range(0, len(problems), _ENQUEUE_CHUNK):
            args: list[str] = [job_id, options_json]
            for problem in problems[start:start + _ENQUEUE_CHUNK]:
                args += [problem.id, problem.model_dump_json()]
            scripts.enqueue(keys=[job, enqueued, self._keys.tasks], args=args)
        scripts.enqueued(keys=[job, enqueued])
        return state == 1

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job (workers skip its tasks); False if already finished.

        Raises ``KeyError`` for an unknown job.
        """
        state = int(self._store.scripts.cancel(keys=[self._keys.job(job_id)]))
        if state == -1:
            raise KeyError(job_id)
        return state == 1

    def status(self, job_id: str) -> JobState | None:
        """The job's state, or None when unknown."""
        raw = self._store.redis.hgetall(self._keys.job(job_id))
        return job_state(raw) if raw else None

    def newest(self, limit: int = 100, offset: int = 0) -> list[JobState]:
        """Jobs, newest first."""
        ids = self._store.redis.zrevrange(self._keys.jobs, offset, offset + limit - 1)
        pipe = self._store.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._keys.job(job_id))
        return [job_state(raw) for raw in pipe.execute() if raw]

    def now(self) -> float:
        """The Redis clock (the one of the jobs' timestamps), as Unix time."""
        seconds, micros = self._store.redis.time()
        return seconds + micros / 1e6

    def results(self, job_id: str, after: str | None = None,
                batch: int = 256) -> Iterator[tuple[str, str]]:
        """The job's results in completion order after entry id ``after`` (exclusive):
        (entry id, the ``AlignedExample`` as stored JSON, ready for a JSON-lines answer)."""
        key = self._keys.results(job_id)
        start = f"({after}" if after else "-"
        while True:
            entries = self._store.redis.xrange(key, start, "+", count=batch)
            for entry_id, fields in entries:
                yield entry_id, fields["example"]
            if len(entries) < batch:
                return
            start = f"({entries[-1][0]}"

    def last_result_id(self, job_id: str) -> str | None:
        """The entry id of the job's newest result, None when it has none."""
        newest = self._store.redis.xrevrange(self._keys.results(job_id), "+", "-", count=1)
        return str(newest[0][0]) if newest else None
