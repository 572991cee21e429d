"""Container health check: ``healthcheck.py URL`` (HTTP 200 from a service's probe) or
``healthcheck.py --worker`` (this container's rewriter worker has a live heartbeat in Redis).

Used by the images' ``HEALTHCHECK``, docker-compose.yml and the k8s worker probe; the
standard library and mindgap only, so the images need no curl.
"""

from __future__ import annotations

import socket
import sys
import urllib.request


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 within 5 seconds."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


def worker_alive() -> bool:
    """Whether a worker of this host (consumer ``<hostname>-<pid>``) has a fresh heartbeat."""
    import redis

    from mindgap.config import QueueSettings
    from mindgap.queue import Queue

    settings = QueueSettings()
    queue = Queue.from_url(settings.redis_url, settings.prefix, create_groups=False)
    try:
        mine = socket.gethostname() + "-"
        return any(name.startswith(mine) for name in queue.heartbeats.live())
    except redis.RedisError:
        return False
    finally:
        queue.close()


def main(argv: list[str]) -> int:
    """Exit 0 when healthy, 1 otherwise."""
    if argv == ["--worker"]:
        return 0 if worker_alive() else 1
    if len(argv) == 1:
        return 0 if http_ok(argv[0]) else 1
    print("usage: healthcheck.py URL | --worker", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
