"""``Queue``: one mindgap queue on one Redis, as its roles, plus the operators' views."""

from __future__ import annotations

from typing import Any

import redis

from mindgap.queue.aligned import AlignedStream
from mindgap.queue.heartbeats import Heartbeats
from mindgap.queue.jobs import Jobs
from mindgap.queue.keys import REWRITERS, TRAINERS, Keys
from mindgap.queue.models import DeadLetter, QueueStats, TrimReport
from mindgap.queue.policy import PolicyVersions
from mindgap.queue.store import Store, connect
from mindgap.queue.tasks import Tasks


class Queue:
    """The roles of one queue: ``jobs`` (the API), ``tasks`` (workers), ``aligned``
    (trainers), ``heartbeats`` (workers' liveness), ``policy`` (the trainer's published
    weights, which workers follow); ``stats``, ``dead`` and ``trim`` are
    for operators (``mindgap queue``).

    ``visibility_timeout_ms`` and ``max_deliveries`` configure ``tasks`` (see ``Tasks``).
    The API is synchronous (thread-safe); from asyncio, use ``def`` endpoints or
    ``to_thread``.
    """

    def __init__(self, client: redis.Redis, prefix: str = "mindgap", *,
                 visibility_timeout_ms: int = 600_000, max_deliveries: int = 3,
                 create_groups: bool = True) -> None:
        self.store = Store(client, prefix)
        self.jobs = Jobs(self.store)
        self.tasks = Tasks(self.store, visibility_timeout_ms=visibility_timeout_ms,
                           max_deliveries=max_deliveries)
        self.aligned = AlignedStream(self.store)
        self.heartbeats = Heartbeats(self.store)
        self.policy = PolicyVersions(self.store)
        if create_groups:
            self.store.ensure_groups()

    @classmethod
    def from_url(cls, url: str = "redis://127.0.0.1:6379/0", prefix: str = "mindgap", *,
                 retries: int = 3, socket_timeout: float | None = None,
                 **kwargs: Any) -> Queue:
        """Connect with bounded waits and a few retries on connection errors (see
        ``connect``; the socket timeout defaults to ``QueueSettings.socket_timeout_s``)."""
        return cls(connect(url, retries=retries, socket_timeout=socket_timeout), prefix,
                   **kwargs)

    @property
    def redis(self) -> redis.Redis:
        """The client."""
        return self.store.redis

    @property
    def keys(self) -> Keys:
        """The key names."""
        return self.store.keys

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self.store.keys.prefix

    def close(self) -> None:
        """Close the client's connections."""
        self.store.redis.close()

    def stats(self) -> QueueStats:
        """Stream depths, the trainer lag, dead letters, live workers."""
        return QueueStats(tasks=self.tasks.depth(), aligned=self.aligned.depth(),
                          trainer_lag=self.aligned.lag(),
                          dead_letters=int(self.redis.xlen(self.keys.dead)),
                          live_workers=self.heartbeats.live())

    def dead(self, limit: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first, after entry id ``after`` (exclusive)."""
        entries = self.redis.xrange(self.keys.dead, f"({after}" if after else "-", "+",
                                    count=limit)
        return [DeadLetter.model_validate({**fields, "id": eid}) for eid, fields in entries]

    def trim(self, consumer_idle_ms: int = 3_600_000) -> TrimReport:
        """Retention: delete the aligned entries every consumer group has acknowledged, and
        the consumers idle longer than ``consumer_idle_ms`` that hold no pending entry.

        Tasks are deleted when acknowledged already; the jobs' results streams have no
        consumer group and are kept with their job (see ``mindgap.queue.jobs``).
        """
        return TrimReport(aligned=self.aligned.trim(),
                          consumers=self._prune_consumers(consumer_idle_ms))

    def _prune_consumers(self, min_idle_ms: int) -> list[str]:
        removed = []
        for stream, group in ((self.keys.tasks, REWRITERS), (self.keys.aligned, TRAINERS)):
            try:
                consumers = self.redis.xinfo_consumers(stream, group)
            except redis.ResponseError:  # no such stream or group
                continue
            for c in consumers:
                if int(c["pending"]) == 0 and int(c["idle"]) >= min_idle_ms:
                    self.redis.xgroup_delconsumer(stream, group, c["name"])
                    removed.append(c["name"])
        return removed
