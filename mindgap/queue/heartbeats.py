"""Worker heartbeats: which rewriter workers are alive (what the rewriter's ``/readyz``
counts and the backpressure shares the room among).

A worker calls ``beat`` every few seconds; it sets ``P:workers:<consumer>`` with a TTL and
records the expiry (Redis clock) in the sorted set ``P:workers``, so ``live`` lists live
workers without a ``SCAN``.
"""

from __future__ import annotations

import json
from typing import Any

from mindgap.queue.store import Store


class Heartbeats:
    """The heartbeats of one queue's workers."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def beat(self, consumer: str, ttl_s: int = 30, info: dict[str, Any] | None = None) -> None:
        """Mark ``consumer`` alive for ``ttl_s`` seconds; ``info`` is stored as its JSON value."""
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        keys = self._store.keys
        value = json.dumps({"consumer": consumer, **(info or {})})
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
