"""The queue's Lua scripts (``lua/*.lua``), read once and registered with each client.

Scripts that need the Redis clock or a job's settlement start with ``common.lua``. One
script runs as one transaction, which is what makes completion exactly-once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from importlib.resources import files

import redis
from redis.commands.core import Script

_COMMON = frozenset({"init_job", "complete", "fail", "start", "cancel", "requeue"})


@cache
def source(name: str) -> str:
    """The text of script ``name`` (with ``common.lua`` in front where it needs it)."""
    text = files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return source("common") + text if name in _COMMON else text


@dataclass(frozen=True, slots=True)
class Scripts:
    """Every script of the queue, registered with one client (``EVALSHA``, loaded lazily)."""

    init_job: Script
    enqueue: Script
    enqueued: Script
    complete: Script
    fail: Script
    skip: Script
    start: Script
    cancel: Script
    drop_queued: Script
    touch: Script
    heartbeat: Script
    live: Script
    publish_policy: Script
    requeue: Script

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        """Register each script with ``client``."""
        return cls(**{f.name: client.register_script(source(f.name)) for f in fields(cls)})
