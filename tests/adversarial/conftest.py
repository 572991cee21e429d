"""Every test here is an attack or a careless use (issue: hardening); `-m adversarial` runs them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from mindgap.queue import Queue
from tests.conftest import REDIS_URL


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``adversarial``."""
    for item in items:
        if "tests/adversarial/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.adversarial)


@pytest.fixture
def queue(prefix: str) -> Iterator[Queue]:
    """A queue on ``REDIS_URL`` under the test's prefix (skips without Redis)."""
    try:
        opened = Queue.from_url(REDIS_URL, prefix, retries=1)
        opened.redis.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    yield opened
    opened.close()
