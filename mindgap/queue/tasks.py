"""Claiming, completing, failing and touching tasks: the rewriter workers' side.

``P:tasks`` holds one entry per problem (fields ``job``, ``problem_id``, ``problem``,
``options``), read by the consumer group ``rewriters``; entries are deleted once
acknowledged, so its length is the backlog. Delivery is at-least-once (XAUTOCLAIM after a
visibility timeout); the effect is exactly-once per (job, problem): ``complete_many`` runs
one script per task that adds the problem to the job's done set and, only if it was new,
appends the result to the job's results (and the trainers' stream), updates the counters
and the status, and acknowledges the task. The ack never precedes the durable write.
``P:job:<job>:done`` / ``:failed`` are the guard; ``P:dead`` gets the dead letters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from mindgap.jobs import FINISHED, JobStatus
from mindgap.queue.keys import REWRITERS
from mindgap.queue.models import StreamDepth, Task
from mindgap.queue.store import Store
from mindgap.schemas import AlignedExample, Problem

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 4000
Raw = list[tuple[str, dict[str, str], int]]  # (entry id, fields, deliveries)


class Tasks:
    """The tasks stream of one queue, for rewriter workers.

    ``visibility_timeout_ms``: how long a claimed task may stay unacknowledged before another
    worker reclaims it (make it longer than a worker's batch, or call ``touch``).
    ``max_deliveries``: attempts per task before it goes to the dead-letter stream.
    """

    def __init__(self, store: Store, *, visibility_timeout_ms: int = 600_000,
                 max_deliveries: int = 3) -> None:
        if visibility_timeout_ms <= 0 or max_deliveries < 1:
            raise ValueError("visibility_timeout_ms must be > 0 and max_deliveries >= 1")
        self._store = store
        self._keys = store.keys
        self.visibility_timeout_ms = visibility_timeout_ms
        self.max_deliveries = max_deliveries
        self._cursors: dict[str, str] = {}

    def claim(self, consumer: str, count: int = 1, block_ms: int = 1000,
              min_idle_ms: int | None = None) -> list[Task]:
        """Up to ``count`` tasks: stalled ones first (idle > ``min_idle_ms``), then new ones.

        Blocks up to ``block_ms`` (0: not at all) for new entries when nothing was reclaimed.
        Tasks of cancelled, finished or unknown jobs are acknowledged and left out; reclaimed
        tasks delivered more than ``max_deliveries`` times (their workers died) and malformed
        entries go to the dead-letter stream.
        """
        min_idle = self.visibility_timeout_ms if min_idle_ms is None else min_idle_ms
        if min_idle <= 0 or count < 1:
            raise ValueError("min_idle_ms must be > 0 and count >= 1")
        raw = self._store.with_groups(lambda: self._read(consumer, count, block_ms, min_idle))
        return self._admit(consumer, raw)

    def _read(self, consumer: str, count: int, block_ms: int, min_idle: int) -> Raw:
        redis, key = self._store.redis, self._keys.tasks
        raw: Raw = []
        reply = redis.xautoclaim(key, REWRITERS, consumer, min_idle,
                                 self._cursors.get(consumer, "0-0"), count=count)
        self._cursors[consumer] = reply[0]
        reclaimed = [(eid, fields) for eid, fields in reply[1] if fields]
        if reclaimed:
            pipe = redis.pipeline(transaction=False)
            for eid, _ in reclaimed:
                pipe.xpending_range(key, REWRITERS, eid, eid, 1)
            for (eid, fields), pending in zip(reclaimed, pipe.execute(), strict=True):
                raw.append((eid, fields, int(pending[0]["times_delivered"]) if pending else 1))
        if len(raw) < count:
            block = None if raw else self._store.block(block_ms)
            reply = redis.xreadgroup(REWRITERS, consumer, {key: ">"}, count=count - len(raw),
                                     block=block)
            for _, entries in reply or []:
                raw += [(eid, fields, 1) for eid, fields in entries if fields]
        return raw

    def _parse(self, consumer: str, raw: Raw) -> list[Task]:
        """Tasks of well-formed entries; malformed or too often delivered ones dead-lettered."""
        tasks: list[Task] = []
        for eid, fields, deliveries in raw:
            try:
                problem = Problem.model_validate_json(fields["problem"])
                options = json.loads(fields["options"])
                job_id = fields["job"]
                if not isinstance(options, dict) or fields.get("problem_id") != problem.id:
                    raise ValueError("options must be an object; problem_id must match")
            except (KeyError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
                self._fail_raw(consumer, eid, fields, f"malformed task: {exc}", deliveries,
                               force=True)
                continue
            task = Task(eid, job_id, problem, options, deliveries, consumer)
            if deliveries > self.max_deliveries:
                self.fail(task, f"delivered {deliveries} times without completion "
                          "(worker died or timed out)")
                continue
            tasks.append(task)
        return tasks

    def _admit(self, consumer: str, raw: Raw) -> list[Task]:
        """The tasks of live jobs; the others acknowledged; queued jobs marked running."""
        tasks = self._parse(consumer, raw)
        if not tasks:
            return tasks
        jobs = sorted({t.job_id for t in tasks})
        pipe = self._store.redis.pipeline(transaction=False)
        for job_id in jobs:
            pipe.hget(self._keys.job(job_id), "status")
        status = dict(zip(jobs, pipe.execute(), strict=True))
        kept = []
        for task in tasks:
            state = status[task.job_id]
            if state is None or state in FINISHED:
                if state is None:
                    log.warning("task %s of unknown job %s acknowledged unprocessed",
                                task.entry_id, task.job_id)
                self._store.scripts.skip(keys=[self._keys.job(task.job_id), self._keys.tasks],
                                         args=[REWRITERS, task.entry_id])
                continue
            kept.append(task)
        for job_id in jobs:
            if status[job_id] == JobStatus.QUEUED:
                self._store.scripts.start(keys=[self._keys.job(job_id)])
        return kept

    def complete(self, task: Task, example: AlignedExample) -> bool:
        """Record the task's result exactly once and acknowledge the task, atomically.

        Returns False when nothing was written: the problem was already settled for the job
        (a redelivered duplicate), or the job was cancelled or deleted; the task is acked.
        """
        return self.complete_many([(task, example)])[0]

    def complete_many(self, done: Sequence[tuple[Task, AlignedExample]]) -> list[bool]:
        """``complete`` for many tasks in one round trip (each one atomic on its own)."""
        for task, example in done:
            if example.problem_id != task.problem.id:
                raise ValueError(f"example for problem {example.problem_id!r}, "
                                 f"task for {task.problem.id!r}")
        pipe = self._store.redis.pipeline(transaction=False)
        for task, example in done:
            self._store.scripts.complete(
                keys=[*self._keys.job_keys(task.job_id), self._keys.tasks, self._keys.aligned],
                args=[REWRITERS, task.entry_id, task.job_id, task.problem.id, example.source,
                      example.model_dump_json(), example.id], client=pipe)
        states = [int(state) for state in pipe.execute()]
        for (task, _), state in zip(done, states, strict=True):
            if state != 1:
                log.debug("task %s not recorded (%d)", task.entry_id, state)
        return [state == 1 for state in states]

    def fail(self, task: Task, error: str, max_deliveries: int | None = None, *,
             retry_now: bool = True) -> bool:
        """Report a failed attempt; True when the task went to the dead-letter stream.

        Below ``max_deliveries`` the task stays pending for redelivery: with ``retry_now``
        it is released (the next ``claim`` of any worker reclaims it), otherwise it waits for
        the visibility timeout. At ``max_deliveries`` it is dead-lettered with the error,
        counted failed in the job, and acknowledged.
        """
        return self._fail_raw(
            task.consumer, task.entry_id,
            {"job": task.job_id, "problem_id": task.problem.id,
             "problem": task.problem.model_dump_json(), "options": json.dumps(task.options)},
            error, task.deliveries, max_deliveries=max_deliveries, retry_now=retry_now) == 1

    def _fail_raw(self, consumer: str, entry_id: str, fields: dict[str, str], error: str,
                  deliveries: int, *, max_deliveries: int | None = None, retry_now: bool = True,
                  force: bool = False) -> int:
        job_id = fields.get("job", "")
        limit = self.max_deliveries if max_deliveries is None else max_deliveries
        return int(self._store.scripts.fail(
            keys=[*self._keys.job_keys(job_id), self._keys.tasks, self._keys.dead],
            args=[REWRITERS, consumer, entry_id, job_id, fields.get("problem_id", ""),
                  error[-_MAX_ERROR_CHARS:], deliveries, limit,
                  self.visibility_timeout_ms if retry_now else 0,
                  fields.get("problem", ""), fields.get("options", ""),
                  "1" if force else "0"]))

    def touch(self, tasks: Sequence[Task]) -> int:
        """Extend the lease on tasks still owned by their consumer; returns how many are."""
        total = 0
        by_consumer: dict[str, list[str]] = {}
        for task in tasks:
            by_consumer.setdefault(task.consumer, []).append(task.entry_id)
        for consumer, ids in by_consumer.items():
            total += int(self._store.scripts.touch(keys=[self._keys.tasks],
                                                   args=[REWRITERS, consumer, *ids]))
        return total

    def depth(self) -> StreamDepth:
        """The backlog: undelivered plus in-flight (pending) tasks."""
        undelivered, pending = self._store.group_depth(self._keys.tasks, REWRITERS)
        return StreamDepth(length=int(self._store.redis.xlen(self._keys.tasks)),
                           undelivered=undelivered, pending=pending)
