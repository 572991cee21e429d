"""What the roles of one queue share: the Redis client, the key names, the scripts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from mindgap.queue.keys import REWRITERS, TRAINERS, Keys
from mindgap.queue.scripts import Scripts

T = TypeVar("T")


def connect(url: str, *, retries: int = 20, socket_timeout: float = 30.0) -> redis.Redis:
    """A client that retries on connection errors (about 15 s of backoff with 20 retries).

    Every command of the queue is safe to retry after a connection error.
    """
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=socket_timeout,
        socket_connect_timeout=5.0, socket_keepalive=True, health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries))


class Store:
    """One client (``decode_responses=True``), the queue's keys and its scripts."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        kwargs = client.get_connection_kwargs()
        if not kwargs.get("decode_responses"):
            raise ValueError("the Redis client needs decode_responses=True")
        self.redis = client
        self.keys = Keys(prefix)
        self.scripts = Scripts.register(client)
        timeout = kwargs.get("socket_timeout")
        self._max_block_ms = 3_600_000 if timeout is None else max(0, int(timeout * 1000) - 1000)

    def block(self, block_ms: int) -> int | None:
        """``block_ms`` as a blocking read's argument, shorter than the socket timeout."""
        return min(block_ms, self._max_block_ms) if block_ms > 0 else None

    def ensure_groups(self) -> None:
        """Create the streams and their consumer groups when missing (reading from the start)."""
        for stream, group in ((self.keys.tasks, REWRITERS), (self.keys.aligned, TRAINERS)):
            try:
                self.redis.xgroup_create(stream, group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    def with_groups(self, read: Callable[[], T]) -> T:
        """``read()``, again after recreating the groups if a stream or group was lost (e.g. a
        Redis without persistence restarted)."""
        try:
            return read()
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            self.ensure_groups()
            return read()

    def group(self, stream: str, group: str) -> dict[str, Any] | None:
        """``XINFO GROUPS`` of ``group`` on ``stream``; None when either is missing."""
        try:
            groups = self.redis.xinfo_groups(stream)
        except redis.ResponseError:  # no such stream
            return None
        return next((g for g in groups if g["name"] == group), None)

    def group_depth(self, stream: str, group: str) -> tuple[int, int]:
        """(undelivered, pending) entries of a group; undelivered is an upper bound when Redis
        cannot tell exactly (deleted entries in the unread range)."""
        info = self.group(stream, group)
        if info is None:
            return int(self.redis.xlen(stream)), 0
        lag = info.get("lag")
        if lag is None:
            read = info.get("entries-read")
            added = self.redis.xinfo_stream(stream).get("entries-added")
            lag = added - read if read is not None and added is not None else \
                self.redis.xlen(stream)
        return int(lag), int(info["pending"])
