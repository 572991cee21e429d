"""The aligned stream ``P:aligned``: results for the trainers (consumer group ``trainers``).

Entries have the fields ``job``, ``example_id``, ``example`` and, for a job's results,
``problem``, ``options`` (the task's) and ``result_id`` (the job's result entry), with which a
trainer re-queues the problem of an example too stale to train on (``requeue``, counted
in the hash ``P:staleness`` beside the staleness of what it trains on). A trainer reads new entries
(``read_new``), reports how many of its pending ones it has trained on (``set_trained``,
kept in the hash ``P:trained``) and acknowledges them once a checkpoint holds them
(``ack``). ``lag`` is the one definition of the trainer lag, used by the workers'
backpressure. ``trim`` deletes only what every consumer group has acknowledged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis
from pydantic import ValidationError

from mindgap.queue.keys import TRAINERS, entry_order, next_id
from mindgap.queue.models import Requeue, StalenessCounts, StreamDepth
from mindgap.queue.store import Store
from mindgap.schemas import AlignedExample

Entries = list[tuple[str, AlignedExample]]


class AlignedStream:
    """The trainers' stream of one queue."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._key = store.keys.aligned

    def publish(self, examples: Sequence[AlignedExample], job_id: str = "") -> list[str]:
        """Append examples directly (an import of existing aligned data); returns their entry
        ids. Jobs' results arrive through ``Tasks.complete``."""
        pipe = self._store.redis.pipeline(transaction=False)
        for example in examples:
            pipe.xadd(self._key, {"job": job_id, "example_id": example.id,
                                  "example": example.model_dump_json()})
        return [str(entry_id) for entry_id in pipe.execute()]

    def read_new(self, consumer: str, count: int = 64, block_ms: int = 1000) -> Entries:
        """Entries never delivered to the group, for this trainer consumer, waiting up to
        ``block_ms`` (0: not at all). Acknowledge them with ``ack``."""
        return self._read(consumer, ">", count, self._store.block(block_ms))

    def read_pending(self, consumer: str, count: int = 64, after: str = "0") -> Entries:
        """This consumer's delivered but unacknowledged entries with ids after ``after``,
        oldest first, without waiting (what a restarted trainer reads first)."""
        return self._read(consumer, after, count, None)

    def _read(self, consumer: str, stream_id: str, count: int, block: int | None) -> Entries:
        reply = self._store.with_groups(lambda: self._store.redis.xreadgroup(
            TRAINERS, consumer, {self._key: stream_id}, count=count, block=block))
        out: Entries = []
        for _, entries in reply or []:
            for eid, fields in entries:
                try:
                    out.append((eid, AlignedExample.model_validate_json(fields["example"])))
                except (TypeError, KeyError, ValidationError) as exc:
                    self._dead(eid, fields, f"malformed aligned entry: {exc}")
        return out

    def _dead(self, entry_id: str, fields: dict[str, str] | None, error: str) -> None:
        pipe = self._store.redis.pipeline()
        if fields:  # None: the entry was deleted while pending
            pipe.xadd(self._store.keys.dead, {"stream": "aligned", "task_id": entry_id,
                                              "error": error, **fields})
        pipe.xack(self._key, TRAINERS, entry_id)
        pipe.execute()

    def ack(self, entry_ids: Sequence[str]) -> int:
        """Acknowledge consumed entries; returns how many were pending."""
        if not entry_ids:
            return 0
        return int(self._store.redis.xack(self._key, TRAINERS, *entry_ids))

    def requeue(self, entry_id: str, example: AlignedExample) -> Requeue:
        """Drop the pending entry ``entry_id`` (holding ``example``) as too stale and re-queue
        its problem for rewriting: atomically, and at most once per problem of a job
        (``lua/requeue.lua``); see ``Requeue`` for the outcomes."""
        entry = self._store.redis.xrange(self._key, entry_id, entry_id)
        job_id = entry[0][1].get("job", "") if entry else ""
        if not job_id:  # an imported example (AlignedStream.publish), or a deleted entry
            return Requeue.KEEP if entry else Requeue.SETTLED
        keys = self._store.keys
        return Requeue(int(self._store.scripts.requeue(
            keys=[*keys.job_keys(job_id), keys.tasks, self._key, keys.staleness],
            args=[TRAINERS, entry_id, example.problem_id, example.source])))

    def count_trained(self, staleness: Mapping[int, int]) -> None:
        """Add model responses trained on, by staleness, to the queue's counters."""
        if staleness:
            pipe = self._store.redis.pipeline(transaction=False)
            for versions, count in staleness.items():
                pipe.hincrby(self._store.keys.staleness, f"trained:{versions}", count)
            pipe.execute()

    def staleness(self) -> StalenessCounts:
        """The trainers' staleness counters (dropped, re-queued, trained by staleness)."""
        raw = self._store.redis.hgetall(self._store.keys.staleness)
        trained = {int(k.split(":", 1)[1]): int(v) for k, v in raw.items()
                   if k.startswith("trained:")}
        return StalenessCounts(dropped=int(raw.get("dropped", 0)),
                               requeued=int(raw.get("requeued", 0)), trained=trained)

    def set_trained(self, consumer: str, count: int) -> None:
        """Record how many of ``consumer``'s pending entries it has trained on (0 removes the
        record); ``lag`` does not count them."""
        if count > 0:
            self._store.redis.hset(self._store.keys.trained, consumer, count)
        else:
            self._store.redis.hdel(self._store.keys.trained, consumer)

    def last_id(self) -> str:
        """The id of the newest entry ever added to the stream (``0-0``: none)."""
        try:
            return str(self._store.redis.xinfo_stream(self._key)["last-generated-id"])
        except redis.ResponseError:  # no such stream
            return "0-0"

    def delivered_through(self, entry_id: str) -> bool:
        """Whether the trainers group has been handed every entry up to ``entry_id``."""
        info = self._store.group(self._key, TRAINERS)
        delivered = info["last-delivered-id"] if info else "0-0"
        return entry_order(str(delivered)) >= entry_order(entry_id)

    def depth(self) -> StreamDepth:
        """Entries in the stream, undelivered and pending in the trainers group."""
        undelivered, pending = self._store.group_depth(self._key, TRAINERS)
        return StreamDepth(length=int(self._store.redis.xlen(self._key)),
                           undelivered=undelivered, pending=pending)

    def lag(self) -> int:
        """The trainer lag: entries the trainers have not trained on, i.e. undelivered plus
        pending, less the pending ones a trainer reports trained (``set_trained``) but has
        not yet acknowledged (it acknowledges at checkpoints)."""
        undelivered, pending = self._store.group_depth(self._key, TRAINERS)
        trained = sum(int(v) for v in self._store.redis.hvals(self._store.keys.trained))
        return undelivered + max(0, pending - trained)

    def trim(self) -> int:
        """Delete the entries that every consumer group has acknowledged; returns how many.

        Entries are delivered in id order, so below a group's oldest pending entry (or after
        its last delivered one, when none is pending) everything is acknowledged; unread or
        pending entries are never removed.
        """
        try:
            groups = self._store.redis.xinfo_groups(self._key)
        except redis.ResponseError:  # no such stream
            return 0
        if not groups:
            return 0
        bounds = []
        for g in groups:
            if int(g["pending"]):
                bounds.append(self._store.redis.xpending(self._key, g["name"])["min"])
            else:
                bounds.append(next_id(g["last-delivered-id"]))
        return int(self._store.redis.xtrim(self._key, minid=min(bounds, key=entry_order),
                                           approximate=False))
