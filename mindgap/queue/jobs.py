"""Creating, cancelling and reading jobs: the producer side (the rewriter API).

A job is the hash ``P:job:<job>`` (status, total, done, failed, skipped, per-source counts,
created/updated/finished, last_error, options, the fingerprint of its problem ids and the
digest of its whole request), indexed by creation time in ``P:jobs``; the open ones (queued,
running) are the set ``P:jobs:open``; its results are the stream ``P:results:<job>``, the
entry ids of its tasks the list ``P:job:<job>:tasks`` (so a cancel deletes the queued ones
in bulk).

Retention: results are read by plain ``XRANGE`` (``GET /v1/jobs/{id}/results``, which a
client may repeat from any ``after`` id), not by a consumer group, so no reader ever
acknowledges them; they are kept as long as the job, and ``Queue.trim`` leaves them alone.
A job created with ``ttl_s`` expires (hash, results, guard sets) that long after it ends;
``P:jobs:expiring`` remembers when, so that creating a job drops expired ids from
``P:jobs``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mindgap.jobs import JobState, JobStatus
from mindgap.queue.keys import REWRITERS
from mindgap.queue.store import Store
from mindgap.schemas import SOURCES, Problem

_ENQUEUE_CHUNK = 500
_DROP_CHUNK = 1000


class JobConflict(ValueError):
    """The job id is taken by another request (other problems, content or options)."""


class TooManyOpenJobs(RuntimeError):
    """As many jobs as allowed are queued or running already."""


def fingerprint(problem_ids: Sequence[str]) -> str:
    """What identifies a job's problems (count and hash of the ids, in the given order)."""
    digest = hashlib.sha256()
    for pid in problem_ids:
        digest.update(pid.encode())
        digest.update(b"\0")
    return f"{len(problem_ids)}:{digest.hexdigest()}"


def request_digest(problems: Sequence[tuple[str, str]], options_json: str,
                   feed_trainer: bool) -> str:
    """What identifies a whole job request: its problems as (id, JSON) in id order, its
    options and where its results go (the order of the problems does not count)."""
    digest = hashlib.sha256(f"{options_json}\0{int(feed_trainer)}\0".encode())
    for _, problem_json in sorted(problems):
        digest.update(problem_json.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def job_state(raw: dict[str, str]) -> JobState:
    """A job hash as a ``JobState``."""
    total = int(raw.get("total", 0))
    done, failed = int(raw.get("done", 0)), int(raw.get("failed", 0))
    skipped = int(raw.get("skipped", 0))
    finished = raw.get("finished")
    return JobState(
        id=raw["id"], status=JobStatus(raw["status"]), total=total, done=done, failed=failed,
        skipped=skipped, requeued=int(raw.get("requeued", 0)),
        remaining=max(0, total - done - failed - skipped),
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
               options: dict[str, Any] | None = None, *, feed_trainer: bool = True,
               ttl_s: float | None = None, max_open: int | None = None) -> bool:
        """Record the job and enqueue one task per problem; True when newly created.

        Idempotent and resumable: calling it again with the same id and request enqueues
        only what a crashed earlier call missed. ``feed_trainer=False`` keeps the results
        out of the trainer's stream (they still go to the job's results stream). The job
        expires ``ttl_s`` after it ends (None: never). Raises ``JobConflict`` when the id
        is taken by another request, ``TooManyOpenJobs`` when ``max_open`` jobs are open.
        """
        if not job_id or ":" in job_id:
            raise ValueError(f"invalid job id {job_id!r}")
        rows = [(p.id, p.model_dump_json()) for p in problems]
        ids = [pid for pid, _ in rows]
        if len(set(ids)) != len(ids):
            raise ValueError(f"job {job_id}: duplicate problem ids")
        options_json = json.dumps(options or {}, sort_keys=True)
        scripts, job = self._store.scripts, self._keys.job(job_id)
        state = int(scripts.init_job(
            keys=[*self._keys.job_keys(job_id), self._keys.jobs],
            args=[job_id, len(rows), options_json, "1" if feed_trainer else "0",
                  fingerprint(sorted(ids)), request_digest(rows, options_json, feed_trainer),
                  "" if ttl_s is None else repr(float(ttl_s)),
                  "" if max_open is None else max_open]))
        if state == -1:
            raise JobConflict(f"job {job_id} already exists with other problems")
        if state == -2:
            raise JobConflict(f"job {job_id} already exists with the same problem ids but "
                              "other content, options or feed_trainer")
        if state == -3:
            raise TooManyOpenJobs(f"{max_open} jobs are queued or running already")
        if state == 0:
            return False
        enqueued = self._keys.enqueued(job_id)
        for start in range(0, len(rows), _ENQUEUE_CHUNK):
            args: list[str] = [job_id, options_json]
            for row in rows[start:start + _ENQUEUE_CHUNK]:
                args += row
            scripts.enqueue(keys=[job, enqueued, self._keys.tasks, self._keys.job_tasks(job_id)],
                            args=args)
        scripts.enqueued(keys=[job, enqueued])
        return state == 1

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False if it had finished already.

        Its undelivered tasks are deleted here in bulk (counted skipped); workers skip the
        ones in hand. Raises ``KeyError`` for an unknown job.
        """
        state = int(self._store.scripts.cancel(keys=list(self._keys.job_keys(job_id))))
        if state == -1:
            raise KeyError(job_id)
        drop = [self._keys.job(job_id), self._keys.job_tasks(job_id), self._keys.tasks]
        while int(self._store.scripts.drop_queued(keys=drop, args=[REWRITERS, _DROP_CHUNK])):
            pass  # also finishes the drop of an earlier cancel that was cut short
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
