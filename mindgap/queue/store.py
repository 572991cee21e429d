"""What the roles of one queue share: the Redis client, the key names, the scripts."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from mindgap.config import QueueSettings
from mindgap.queue.keys import REWRITERS, TRAINERS, Keys
from mindgap.queue.scripts import Scripts
from mindgap.redact import redact

T = TypeVar("T")
log = logging.getLogger(__name__)

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.NoScriptError)
"""What a Redis outage raises (``BusyLoadingError``, Redis loading its data, is one too; a
restart between a pipeline's script check and its execution loses the scripts, and the retry
loads them again)."""


def connect(url: str, *, retries: int = 3, socket_timeout: float | None = None) -> redis.Redis:
    """A client with bounded waits: a reply, or a connection, takes at most
    ``socket_timeout`` (default ``QueueSettings.socket_timeout_s``); refused connections are
    retried ``retries`` times (0.05 s, 0.1 s, 0.2 s .. apart, at most 0.5 s), so a command
    fails within about a second while Redis is down and within the socket timeout while it
    hangs. Long outages are for the caller to ride out (``Outage``).

    Every command of the queue is safe to retry after a connection error.
    """
    timeout = QueueSettings().socket_timeout_s if socket_timeout is None else socket_timeout
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout,
        socket_keepalive=True, health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries,
                    supported_errors=(redis.ConnectionError,)))


class Outage:
    """Rides out Redis outages of any length for one client of the queue (``who``).

    ``call(fn)`` runs ``fn`` until it gets through, waiting after each connection error or
    timeout a capped exponential backoff (``base_s`` doubling up to ``cap_s``) with jitter
    (each wait drawn from its upper half). An outage is logged once when it begins and once
    when it ends. With ``stop``, a wait ends early once it is set and the error is raised.
    Thread-safe.
    """

    def __init__(self, who: str, *, base_s: float = 0.2, cap_s: float = 5.0,
                 stop: threading.Event | None = None) -> None:
        self.who, self.base_s, self.cap_s = who, base_s, cap_s
        self.stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._since: float | None = None
        self._attempts = 0

    def failed(self, exc: Exception) -> None:
        """One failed attempt: log the outage if it begins, then wait the backoff."""
        with self._lock:
            if self._since is None:
                self._since, self._attempts = time.monotonic(), 0
                log.warning("%s: Redis unreachable (%s: %s); retrying with backoff",
                            self.who, type(exc).__name__, redact(str(exc)))
            ceiling = min(self.cap_s, self.base_s * 2 ** min(self._attempts, 30))
            self._attempts += 1
        self.stop.wait(random.uniform(ceiling / 2, ceiling))

    def recovered(self) -> None:
        """An attempt got through: log the end of the outage, if there was one."""
        with self._lock:
            if self._since is not None:
                log.warning("%s: Redis reachable again after %.1f s", self.who,
                            time.monotonic() - self._since)
                self._since = None

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried through any outage (raised only once ``stop`` is set)."""
        while True:
            try:
                result = fn()
            except REDIS_DOWN as exc:
                if self.stop.is_set():
                    raise
                self.failed(exc)
                continue
            self.recovered()
            return result


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
