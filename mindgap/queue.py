"""Redis Streams job queue shared by the rewriter API, the rewriter workers and the trainer.

Keys (``P`` is the prefix, ``mindgap`` by default; use a hash tag such as ``{mindgap}`` on
Redis Cluster so that every key lands in one slot, which the Lua scripts need):

- ``P:tasks``: one entry per problem (fields ``job``, ``problem_id``, ``problem``, ``options``),
  read by the consumer group ``rewriters``. Entries are deleted once acknowledged, so its
  length is the backlog (undelivered plus in-flight tasks): the number to autoscale on.
- ``P:aligned``: results for the trainer (fields ``job``, ``example_id``, ``example``), read
  by the consumer group ``trainers``. Never trimmed on write; ``trim_aligned`` removes only
  entries that every group has acknowledged.
- ``P:results:<job>``: the job's own results (field ``example``), read by ``iter_results``
  (``GET /v1/jobs/{id}/results``); independent of what the trainer consumes or trims.
- ``P:trained``: hash, trainer consumer -> how many of its pending ``aligned`` entries it has
  already trained on (a trainer acknowledges only once a checkpoint holds them); not lag.
- ``P:dead``: dead letters: tasks that failed ``max_deliveries`` times, malformed entries.
- ``P:job:<job>``: the job hash (status, total, done, failed, skipped, per-source counts
  ``self``/``guided``/``expert``, created/updated/finished, last_error, options).
- ``P:job:<job>:done`` / ``:failed``: problem ids settled for the job (exactly-once guard).
- ``P:jobs``: sorted set of job ids by creation time.

Delivery is at-least-once (consumer groups, XAUTOCLAIM after a visibility timeout); the
effect is exactly-once per (job, problem): ``complete_task`` runs one Lua script that adds
the problem id to the job's done set and, only if it was new, appends the result to both
streams, updates the counters and the status, and acknowledges the task. The ack never
precedes the durable write (one script is one transaction, in the AOF as MULTI/EXEC).
Every command here is safe to retry after a connection error, so the client retries them.
The API is synchronous (thread-safe); from asyncio, use ``def`` endpoints or ``to_thread``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
from pydantic import ValidationError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from mindgap.schemas import AlignedExample, Problem

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "completed", "completed_with_failures", "cancelled"]
FINISHED: frozenset[str] = frozenset({"completed", "completed_with_failures", "cancelled"})
REWRITERS = "rewriters"
TRAINERS = "trainers"
_ENQUEUE_CHUNK = 500
_MAX_ERROR_CHARS = 4000

# Shared Lua: current time (Redis clock, so all workers agree) and the job's settlement.
_LUA_COMMON = """
local function now()
  local t = redis.call('TIME')
  return tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000)
end
local function settle(job, status, ts)
  local h = redis.call('HMGET', job, 'total', 'done', 'failed')
  local total, done, failed = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  local new = status
  if done + failed >= total then
    if failed > 0 then new = 'completed_with_failures' else new = 'completed' end
    redis.call('HSET', job, 'finished', ts)
  elseif status == 'queued' then
    new = 'running'
  end
  redis.call('HSET', job, 'status', new, 'updated', ts)
end
"""

# KEYS: job, jobs index. ARGV: job id, total, options, feed_trainer, fingerprint.
# Returns 1 created, 0 exists and fully enqueued, 2 exists and enqueueing must resume,
# -1 exists with other problems.
_LUA_INIT_JOB = _LUA_COMMON + """
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
if fp then
  if fp ~= ARGV[5] then return -1 end
  if redis.call('HGET', KEYS[1], 'enqueued') == '1' then return 0 end
  return 2
end
local ts = now()
local total = tonumber(ARGV[2])
local status = 'queued'
if total == 0 then status = 'completed' end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'status', status, 'total', total, 'done', 0,
  'failed', 0, 'skipped', 0, 'self', 0, 'guided', 0, 'expert', 0, 'created', ts,
  'updated', ts, 'options', ARGV[3], 'feed_trainer', ARGV[4], 'fingerprint', ARGV[5],
  'enqueued', '0')
if total == 0 then redis.call('HSET', KEYS[1], 'finished', ts) end
redis.call('ZADD', KEYS[2], ts, ARGV[1])
return 1
"""

# KEYS: job, enqueued set, tasks. ARGV: job id, options, then (problem id, problem) pairs.
_LUA_ENQUEUE = """
local h = redis.call('HMGET', KEYS[1], 'enqueued', 'status')
if h[1] ~= '0' or h[2] == 'cancelled' then return 0 end
local n = 0
for i = 3, #ARGV, 2 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[3], '*', 'job', ARGV[1], 'problem_id', ARGV[i],
      'problem', ARGV[i + 1], 'options', ARGV[2])
    n = n + 1
  end
end
return n
"""

# KEYS: job, enqueued set.
_LUA_ENQUEUED = """
if redis.call('HGET', KEYS[1], 'enqueued') == '0' then
  redis.call('HSET', KEYS[1], 'enqueued', '1')
end
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: job, done, failed, tasks, aligned, results.
# ARGV: group, task entry id, job id, problem id, source, example json, example id.
# Returns 1 written, 0 duplicate, -1 unknown job, -2 cancelled job.
_LUA_COMPLETE = _LUA_COMMON + """
local function ack()
  local n = redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[4], ARGV[2])
  return n
end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then ack() return -1 end
if status == 'cancelled' then
  if ack() == 1 then redis.call('HINCRBY', KEYS[1], 'skipped', 1) end
  return -2
end
if redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 1 then ack() return 0 end
if redis.call('SADD', KEYS[2], ARGV[4]) == 0 then ack() return 0 end
redis.call('XADD', KEYS[6], '*', 'example', ARGV[6])
if redis.call('HGET', KEYS[1], 'feed_trainer') == '1' then
  redis.call('XADD', KEYS[5], '*', 'job', ARGV[3], 'example_id', ARGV[7], 'example', ARGV[6])
end
redis.call('HINCRBY', KEYS[1], ARGV[5], 1)
redis.call('HINCRBY', KEYS[1], 'done', 1)
settle(KEYS[1], status, now())
ack()
return 1
"""

# KEYS: job, done, failed, tasks, dead.
# ARGV: group, consumer, task entry id, job id, problem id, error, deliveries seen by the
# caller, max deliveries, release idle ms (0: keep), problem json, options json,
# force ('1': dead-letter now).
# Returns 1 dead-lettered, 2 settled without a dead letter (cancelled job, already done,
# unknown job), 0 left for redelivery, -1 not pending (settled elsewhere).
_LUA_FAIL = _LUA_COMMON + """
local p = redis.call('XPENDING', KEYS[4], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then return -1 end
local deliveries = math.max(tonumber(p[1][4]), tonumber(ARGV[7]))
local ts = now()
local status = redis.call('HGET', KEYS[1], 'status')
if deliveries < tonumber(ARGV[8]) and ARGV[12] ~= '1' then
  if status then redis.call('HSET', KEYS[1], 'last_error', ARGV[6], 'updated', ts) end
  if tonumber(ARGV[9]) > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[4], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[9], 'JUSTID')
  end
  return 0
end
local dead = false
if not status then
  dead = ARGV[12] == '1'
elseif status ~= 'cancelled' and redis.call('SISMEMBER', KEYS[2], ARGV[5]) == 0
    and redis.call('SADD', KEYS[3], ARGV[5]) == 1 then
  dead = true
  redis.call('HINCRBY', KEYS[1], 'failed', 1)
  redis.call('HSET', KEYS[1], 'last_error', ARGV[6])
  settle(KEYS[1], status, ts)
end
if dead then
  redis.call('XADD', KEYS[5], '*', 'stream', 'tasks', 'task_id', ARGV[3], 'job', ARGV[4],
    'problem_id', ARGV[5], 'problem', ARGV[10], 'options', ARGV[11], 'error', ARGV[6],
    'deliveries', deliveries, 'consumer', ARGV[2], 'time', ts)
end
local acked = redis.call('XACK', KEYS[4], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[4], ARGV[3])
if status == 'cancelled' and acked == 1 then
  redis.call('HINCRBY', KEYS[1], 'skipped', 1)
end
if dead then return 1 end
return 2
"""

# KEYS: job, tasks. ARGV: group, task entry id. Ack a task of a cancelled/finished/unknown job.
_LUA_SKIP = """
local acked = redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
if acked == 1 and redis.call('HGET', KEYS[1], 'status') == 'cancelled' then
  redis.call('HINCRBY', KEYS[1], 'skipped', 1)
end
return acked
"""

# KEYS: job. Mark a queued job running.
_LUA_START = _LUA_COMMON + """
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'updated', now())
  return 1
end
return 0
"""

# KEYS: job. Returns 1 cancelled now, 0 already finished, -1 unknown.
_LUA_CANCEL = _LUA_COMMON + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status ~= 'queued' and status ~= 'running' then return 0 end
local ts = now()
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated', ts, 'finished', ts)
return 1
"""

# KEYS: tasks. ARGV: group, consumer, entry ids... Reset the idle time of the entries this
# consumer still owns (a lease extension); returns how many it still owns.
_LUA_TOUCH = """
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"""


@dataclass(frozen=True, slots=True)
class Task:
    """One problem of one job, as delivered to a rewriter worker."""

    entry_id: str
    job_id: str
    problem: Problem
    options: dict[str, Any]
    deliveries: int
    consumer: str


def hysteresis(lag: int, high_water: int, low_water: int, paused: bool) -> bool:
    """Whether to pause: start when ``lag > high_water``, stay until ``lag <= low_water``."""
    if not 0 <= low_water <= high_water:
        raise ValueError(f"need 0 <= low_water <= high_water, got {low_water}, {high_water}")
    return lag > low_water if paused else lag > high_water


@dataclass
class Backpressure:
    """Pause taking tasks while the trainer lags: hysteresis state for one worker.

    ``check()`` reads the trainer lag at most every ``interval_s`` seconds.
    """

    queue: Queue
    high_water: int
    low_water: int
    interval_s: float = 1.0
    paused: bool = False
    lag: int = 0
    _checked: float = field(default=float("-inf"), repr=False)

    def __post_init__(self) -> None:
        hysteresis(0, self.high_water, self.low_water, False)  # validates the marks

    def check(self) -> bool:
        """True while the worker should not claim tasks."""
        now = time.monotonic()
        if now - self._checked >= self.interval_s:
            self._checked = now
            self.lag = self.queue.trainer_lag()
            self.paused = hysteresis(self.lag, self.high_water, self.low_water, self.paused)
        return self.paused


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``"ms-seq"``) as a key that sorts like the stream."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: str) -> str:
    ms, seq = entry_order(entry_id)
    return f"{ms}-{seq + 1}"


def _fingerprint(problem_ids: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for pid in problem_ids:
        digest.update(pid.encode())
        digest.update(b"\0")
    return f"{len(problem_ids)}:{digest.hexdigest()}"


def _is_nogroup(exc: redis.ResponseError) -> bool:
    return str(exc).startswith("NOGROUP")


class Queue:
    """The mindgap job queue on one Redis (see the module docstring for the keys).

    ``visibility_timeout_ms``: how long a claimed task may stay unacknowledged before another
    worker reclaims it (make it longer than a worker's batch, or call ``touch``).
    ``max_deliveries``: attempts per task before it goes to the dead-letter stream.
    """

    def __init__(self, client: redis.Redis, prefix: str = "mindgap", *,
                 visibility_timeout_ms: int = 600_000, max_deliveries: int = 3,
                 create_groups: bool = True) -> None:
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the Redis client needs decode_responses=True")
        if visibility_timeout_ms <= 0 or max_deliveries < 1:
            raise ValueError("visibility_timeout_ms must be > 0 and max_deliveries >= 1")
        self.redis = client
        self.prefix = prefix
        self.visibility_timeout_ms = visibility_timeout_ms
        self.max_deliveries = max_deliveries
        self.tasks_key = f"{prefix}:tasks"
        self.aligned_key = f"{prefix}:aligned"
        self.dead_key = f"{prefix}:dead"
        self.jobs_key = f"{prefix}:jobs"
        self.trained_key = f"{prefix}:trained"
        timeout = client.get_connection_kwargs().get("socket_timeout")
        self._max_block_ms = 3_600_000 if timeout is None else max(0, int(timeout * 1000) - 1000)
        self._cursors: dict[str, str] = {}
        self._init_job = client.register_script(_LUA_INIT_JOB)
        self._enqueue = client.register_script(_LUA_ENQUEUE)
        self._enqueued = client.register_script(_LUA_ENQUEUED)
        self._complete = client.register_script(_LUA_COMPLETE)
        self._fail = client.register_script(_LUA_FAIL)
        self._skip = client.register_script(_LUA_SKIP)
        self._start = client.register_script(_LUA_START)
        self._cancel = client.register_script(_LUA_CANCEL)
        self._touch = client.register_script(_LUA_TOUCH)
        if create_groups:
            self.ensure_groups()

    @classmethod
    def from_url(cls, url: str = "redis://127.0.0.1:6379/0", prefix: str = "mindgap", *,
                 retries: int = 20, socket_timeout: float = 30.0, **kwargs: Any) -> Queue:
        """Connect with retries on connection errors (about 15 s of backoff with 20 retries)."""
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=socket_timeout,
            socket_connect_timeout=5.0, socket_keepalive=True, health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries))
        return cls(client, prefix, **kwargs)

    def close(self) -> None:
        """Close the client's connections."""
        self.redis.close()

    # --- keys ----------------------------------------------------------------------------

    def job_key(self, job_id: str) -> str:
        """The job's hash."""
        return f"{self.prefix}:job:{job_id}"

    def results_key(self, job_id: str) -> str:
        """The job's results stream."""
        return f"{self.prefix}:results:{job_id}"

    def _job_keys(self, job_id: str) -> tuple[str, str, str]:
        base = self.job_key(job_id)
        return base, f"{base}:done", f"{base}:failed"

    def ensure_groups(self) -> None:
        """Create the streams and their consumer groups when missing (reading from the start)."""
        for stream, group in ((self.tasks_key, REWRITERS), (self.aligned_key, TRAINERS)):
            try:
                self.redis.xgroup_create(stream, group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    # --- producer (rewriter API) ---------------------------------------------------------

    def create_job(self, job_id: str, problems: Iterable[Problem],
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
        job, _, _ = self._job_keys(job_id)
        state = int(self._init_job(
            keys=[job, self.jobs_key],
            args=[job_id, len(problems), options_json, "1" if feed_trainer else "0",
                  _fingerprint(sorted(ids))]))
        if state == -1:
            raise ValueError(f"job {job_id} already exists with other problems")
        if state == 0:
            return False
        enqueued = f"{job}:enqueued"
        for start in range(0, len(problems), _ENQUEUE_CHUNK):
            args: list[str] = [job_id, options_json]
            for problem in problems[start:start + _ENQUEUE_CHUNK]:
                args += [problem.id, problem.model_dump_json()]
            self._enqueue(keys=[job, enqueued, self.tasks_key], args=args)
        self._enqueued(keys=[job, enqueued])
        return state == 1

    def cancel_job(self, job_id: str) -> bool:
        """Cancel a queued or running job (workers skip its tasks); False if already finished.

        Raises ``KeyError`` for an unknown job.
        """
        state = int(self._cancel(keys=[self.job_key(job_id)]))
        if state == -1:
            raise KeyError(job_id)
        return state == 1

    def is_cancelled(self, job_id: str) -> bool:
        """Whether the job was cancelled."""
        return self.redis.hget(self.job_key(job_id), "status") == "cancelled"

    def delete_job(self, job_id: str) -> bool:
        """Forget a job and its results (its remaining tasks are then acked unprocessed)."""
        job, done, failed = self._job_keys(job_id)
        pipe = self.redis.pipeline()
        pipe.delete(job, done, failed, f"{job}:enqueued", self.results_key(job_id))
        pipe.zrem(self.jobs_key, job_id)
        return bool(pipe.execute()[0])

    # --- job views -----------------------------------------------------------------------

    @staticmethod
    def _job_view(raw: dict[str, str]) -> dict[str, Any]:
        total = int(raw.get("total", 0))
        done, failed = int(raw.get("done", 0)), int(raw.get("failed", 0))
        skipped = int(raw.get("skipped", 0))
        finished = raw.get("finished")
        return {
            "id": raw.get("id"),
            "status": raw.get("status"),
            "total": total,
            "done": done,
            "failed": failed,
            "skipped": skipped,
            "remaining": max(0, total - done - failed - skipped),
            "counts": {s: int(raw.get(s, 0)) for s in ("self", "guided", "expert")},
            "created": float(raw.get("created", 0.0)),
            "updated": float(raw.get("updated", 0.0)),
            "finished": float(finished) if finished else None,
            "last_error": raw.get("last_error"),
            "options": json.loads(raw.get("options") or "{}"),
            "feed_trainer": raw.get("feed_trainer") == "1",
        }

    def job_status(self, job_id: str) -> dict[str, Any] | None:
        """The job's state, or None when unknown."""
        raw = self.redis.hgetall(self.job_key(job_id))
        return self._job_view(raw) if raw else None

    def list_jobs(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Jobs, newest first."""
        ids = self.redis.zrevrange(self.jobs_key, offset, offset + limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.job_key(job_id))
        return [self._job_view(raw) for raw in pipe.execute() if raw]

    def iter_results(self, job_id: str, after: str | None = None,
                     batch: int = 256) -> Iterator[tuple[str, AlignedExample]]:
        """The job's results in completion order, after entry id ``after`` (exclusive)."""
        for entry_id, raw in self.iter_results_raw(job_id, after, batch):
            yield entry_id, AlignedExample.model_validate_json(raw)

    def iter_results_raw(self, job_id: str, after: str | None = None,
                         batch: int = 256) -> Iterator[tuple[str, str]]:
        """Like ``iter_results`` but yields the stored JSON (ready for a JSON-lines response)."""
        key = self.results_key(job_id)
        start = f"({after}" if after else "-"
        while True:
            entries = self.redis.xrange(key, start, "+", count=batch)
            for entry_id, fields in entries:
                yield entry_id, fields["example"]
            if len(entries) < batch:
                return
            start = f"({entries[-1][0]}"

    def results_count(self, job_id: str) -> int:
        """How many results the job has."""
        return int(self.redis.xlen(self.results_key(job_id)))

    # --- rewriter workers ----------------------------------------------------------------

    def claim_tasks(self, consumer: str, count: int = 1, block_ms: int = 1000,
                    min_idle_ms: int | None = None) -> list[Task]:
        """Up to ``count`` tasks: stalled ones first (idle > ``min_idle_ms``), then new ones.

        Blocks up to ``block_ms`` (0: not at all) for new entries when nothing was reclaimed.
        Tasks of cancelled, finished or unknown jobs are acknowledged and left out; reclaimed
        tasks delivered more than ``max_deliveries`` times (their workers died) and malformed
        entries go to the dead-letter stream.
        """
        try:
            return self._claim(consumer, count, block_ms, min_idle_ms)
        except redis.ResponseError as exc:
            if not _is_nogroup(exc):
                raise
            self.ensure_groups()
            return self._claim(consumer, count, block_ms, min_idle_ms)

    def _claim(self, consumer: str, count: int, block_ms: int,
               min_idle_ms: int | None) -> list[Task]:
        min_idle = self.visibility_timeout_ms if min_idle_ms is None else min_idle_ms
        if min_idle <= 0 or count < 1:
            raise ValueError("min_idle_ms must be > 0 and count >= 1")
        raw: list[tuple[str, dict[str, str], int]] = []
        cursor = self._cursors.get(consumer, "0-0")
        reply = self.redis.xautoclaim(self.tasks_key, REWRITERS, consumer, min_idle, cursor,
                                      count=count)
        self._cursors[consumer] = reply[0]
        reclaimed = [(eid, fields) for eid, fields in reply[1] if fields]
        if reclaimed:
            pipe = self.redis.pipeline(transaction=False)
            for eid, _ in reclaimed:
                pipe.xpending_range(self.tasks_key, REWRITERS, eid, eid, 1)
            for (eid, fields), pending in zip(reclaimed, pipe.execute(), strict=True):
                raw.append((eid, fields, int(pending[0]["times_delivered"]) if pending else 1))
        if len(raw) < count:
            block = min(block_ms, self._max_block_ms) if block_ms > 0 and not raw else None
            reply = self.redis.xreadgroup(REWRITERS, consumer, {self.tasks_key: ">"},
                                          count=count - len(raw), block=block)
            for _, entries in reply or []:
                raw += [(eid, fields, 1) for eid, fields in entries if fields]
        return self._admit(consumer, raw)

    def _admit(self, consumer: str, raw: list[tuple[str, dict[str, str], int]]) -> list[Task]:
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
                self.fail_task(task, f"delivered {deliveries} times without completion "
                               "(worker died or timed out)")
                continue
            tasks.append(task)
        if not tasks:
            return tasks
        jobs = sorted({t.job_id for t in tasks})
        pipe = self.redis.pipeline(transaction=False)
        for job_id in jobs:
            pipe.hget(self.job_key(job_id), "status")
        status = dict(zip(jobs, pipe.execute(), strict=True))
        kept = []
        for task in tasks:
            state = status[task.job_id]
            if state is None or state in FINISHED:
                if state is None:
                    log.warning("task %s of unknown job %s acknowledged unprocessed",
                                task.entry_id, task.job_id)
                self._skip(keys=[self.job_key(task.job_id), self.tasks_key],
                           args=[REWRITERS, task.entry_id])
                continue
            kept.append(task)
        for job_id in jobs:
            if status[job_id] == "queued":
                self._start(keys=[self.job_key(job_id)])
        return kept

    def complete_task(self, task: Task, example: AlignedExample) -> bool:
        """Record the task's result exactly once and acknowledge the task, atomically.

        Returns False when nothing was written: the problem was already settled for the job
        (a redelivered duplicate), or the job was cancelled or deleted; the task is acked.
        """
        return self.complete_tasks([(task, example)])[0]

    def complete_tasks(self, done: Sequence[tuple[Task, AlignedExample]]) -> list[bool]:
        """``complete_task`` for many tasks in one round trip (each one atomic on its own)."""
        for task, example in done:
            if example.problem_id != task.problem.id:
                raise ValueError(f"example for problem {example.problem_id!r}, "
                                 f"task for {task.problem.id!r}")
        pipe = self.redis.pipeline(transaction=False)
        for task, example in done:
            job, done_set, failed = self._job_keys(task.job_id)
            self._complete(
                keys=[job, done_set, failed, self.tasks_key, self.aligned_key,
                      self.results_key(task.job_id)],
                args=[REWRITERS, task.entry_id, task.job_id, task.problem.id, example.source,
                      example.model_dump_json(), example.id], client=pipe)
        states = [int(state) for state in pipe.execute()]
        for (task, _), state in zip(done, states, strict=True):
            if state != 1:
                log.debug("task %s not recorded (%d)", task.entry_id, state)
        return [state == 1 for state in states]

    def fail_task(self, task: Task, error: str, max_deliveries: int | None = None, *,
                  retry_now: bool = True) -> bool:
        """Report a failed attempt; True when the task went to the dead-letter stream.

        Below ``max_deliveries`` the task stays pending for redelivery: with ``retry_now``
        it is released (the next ``claim_tasks`` of any worker reclaims it), otherwise it
        waits for the visibility timeout. At ``max_deliveries`` it is dead-lettered with the
        error, counted failed in the job, and acknowledged.
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
        job, done, failed = self._job_keys(job_id)
        limit = self.max_deliveries if max_deliveries is None else max_deliveries
        return int(self._fail(
            keys=[job, done, failed, self.tasks_key, self.dead_key],
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
            total += int(self._touch(keys=[self.tasks_key], args=[REWRITERS, consumer, *ids]))
        return total

    def read_dead(self, count: int = 100,
                  after: str | None = None) -> list[tuple[str, dict[str, str]]]:
        """Dead letters, oldest first, after entry id ``after`` (exclusive)."""
        return self.redis.xrange(self.dead_key, f"({after}" if after else "-", "+", count=count)

    # --- trainer -------------------------------------------------------------------------

    def publish_aligned(self, examples: Sequence[AlignedExample], job_id: str = "") -> list[str]:
        """Append examples to the trainers' stream directly (an import of existing aligned
        data, tests); returns their entry ids. Jobs' results arrive through ``complete_task``."""
        pipe = self.redis.pipeline(transaction=False)
        for example in examples:
            pipe.xadd(self.aligned_key, {"job": job_id, "example_id": example.id,
                                         "example": example.model_dump_json()})
        return [str(entry_id) for entry_id in pipe.execute()]

    def read_aligned(self, consumer: str, count: int = 64, block_ms: int = 1000, *,
                     pending: bool = False, after: str = "0") -> list[tuple[str, AlignedExample]]:
        """New aligned examples for this trainer consumer (group ``trainers``).

        ``pending=True`` re-reads this consumer's delivered but unacknowledged entries with
        ids after ``after`` instead (after a restart), oldest first, without blocking.
        Acknowledge with ``ack_aligned``.
        """
        stream_id = after if pending else ">"
        block = min(block_ms, self._max_block_ms) if block_ms > 0 and not pending else None
        try:
            reply = self.redis.xreadgroup(TRAINERS, consumer, {self.aligned_key: stream_id},
                                          count=count, block=block)
        except redis.ResponseError as exc:
            if not _is_nogroup(exc):
                raise
            self.ensure_groups()
            reply = self.redis.xreadgroup(TRAINERS, consumer, {self.aligned_key: stream_id},
                                          count=count, block=block)
        out: list[tuple[str, AlignedExample]] = []
        for _, entries in reply or []:
            for eid, fields in entries:
                try:
                    out.append((eid, AlignedExample.model_validate_json(fields["example"])))
                except (TypeError, KeyError, ValidationError) as exc:
                    self._dead_aligned(eid, fields, f"malformed aligned entry: {exc}")
        return out

    def _dead_aligned(self, entry_id: str, fields: dict[str, str] | None, error: str) -> None:
        pipe = self.redis.pipeline()
        if fields:  # None: the entry was deleted while pending
            pipe.xadd(self.dead_key, {"stream": "aligned", "task_id": entry_id, "error": error,
                                      **fields})
        pipe.xack(self.aligned_key, TRAINERS, entry_id)
        pipe.execute()

    def ack_aligned(self, entry_ids: Sequence[str]) -> int:
        """Acknowledge consumed aligned entries; returns how many were pending."""
        if not entry_ids:
            return 0
        return int(self.redis.xack(self.aligned_key, TRAINERS, *entry_ids))

    def set_trained(self, consumer: str, count: int) -> None:
        """Record how many of ``consumer``'s pending aligned entries it has trained on (0
        removes the record); ``trainer_lag`` does not count them."""
        if count > 0:
            self.redis.hset(self.trained_key, consumer, count)
        else:
            self.redis.hdel(self.trained_key, consumer)

    def aligned_last_id(self) -> str:
        """The id of the newest entry ever added to the trainers' stream (``0-0``: none)."""
        try:
            return str(self.redis.xinfo_stream(self.aligned_key)["last-generated-id"])
        except redis.ResponseError:  # no such stream
            return "0-0"

    def aligned_delivered_through(self, entry_id: str) -> bool:
        """Whether the trainers group has been handed every aligned entry up to ``entry_id``."""
        info = self._group(self.aligned_key, TRAINERS)
        delivered = info["last-delivered-id"] if info else "0-0"
        return entry_order(str(delivered)) >= entry_order(entry_id)

    def _group(self, stream: str, group: str) -> dict[str, Any] | None:
        try:
            groups = self.redis.xinfo_groups(stream)
        except redis.ResponseError:  # no such stream
            return None
        return next((g for g in groups if g["name"] == group), None)

    def _lag(self, stream: str, group: str) -> tuple[int, int]:
        """(undelivered, pending) entries of a group; undelivered is an upper bound when Redis
        cannot tell exactly (deleted entries in the unread range)."""
        info = self._group(stream, group)
        if info is None:
            return int(self.redis.xlen(stream)), 0
        lag = info.get("lag")
        if lag is None:
            read = info.get("entries-read")
            added = self.redis.xinfo_stream(stream).get("entries-added")
            lag = added - read if read is not None and added is not None else \
                self.redis.xlen(stream)
        return int(lag), int(info["pending"])

    def trainer_lag(self) -> int:
        """Aligned entries the trainers have not trained on: undelivered plus pending, less
        the pending ones a trainer reports trained (``set_trained``) but not yet acknowledged."""
        undelivered, pending = self._lag(self.aligned_key, TRAINERS)
        trained = sum(int(v) for v in self.redis.hvals(self.trained_key))
        return undelivered + max(0, pending - trained)

    def should_pause(self, high_water: int, low_water: int, paused: bool = False) -> bool:
        """Hysteresis on the trainer lag; pass the previous answer as ``paused``."""
        return hysteresis(self.trainer_lag(), high_water, low_water, paused)

    def trim_aligned(self) -> int:
        """Delete aligned entries that every consumer group has acknowledged; returns how many.

        Unread or pending entries are never removed.
        """
        groups = self.redis.xinfo_groups(self.aligned_key)
        if not groups:
            return 0
        bounds = []
        for g in groups:
            if int(g["pending"]):
                bounds.append(self.redis.xpending(self.aligned_key, g["name"])["min"])
            else:
                bounds.append(_next_id(g["last-delivered-id"]))
        return int(self.redis.xtrim(self.aligned_key, minid=min(bounds, key=entry_order),
                                    approximate=False))

    # --- operations ----------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Queue depths: for metrics and autoscaling."""
        tasks_undelivered, tasks_pending = self._lag(self.tasks_key, REWRITERS)
        aligned_undelivered, aligned_pending = self._lag(self.aligned_key, TRAINERS)
        return {
            "tasks_backlog": int(self.redis.xlen(self.tasks_key)),
            "tasks_undelivered": tasks_undelivered,
            "tasks_pending": tasks_pending,
            "aligned_length": int(self.redis.xlen(self.aligned_key)),
            "aligned_undelivered": aligned_undelivered,
            "aligned_pending": aligned_pending,
            "dead_length": int(self.redis.xlen(self.dead_key)),
        }

    def prune_consumers(self, min_idle_ms: int = 3_600_000) -> list[str]:
        """Remove consumers idle longer than ``min_idle_ms`` that hold no pending entries."""
        removed = []
        for stream, group in ((self.tasks_key, REWRITERS), (self.aligned_key, TRAINERS)):
            try:
                consumers = self.redis.xinfo_consumers(stream, group)
            except redis.ResponseError:
                continue
            for c in consumers:
                if int(c["pending"]) == 0 and int(c["idle"]) >= min_idle_ms:
                    self.redis.xgroup_delconsumer(stream, group, c["name"])
                    removed.append(c["name"])
        return removed
