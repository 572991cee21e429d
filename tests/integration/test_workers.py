"""Worker processes on a real Redis: exactly once, killed workers, poison tasks, Redis restart."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mindgap.queue import Queue
from tests.conftest import REDIS_URL, free_port
from tests.worker_process import (
    RedisServer,
    done,
    drain_trainer,
    problems,
    result_ids,
    start_workers,
    stop,
    wait_finished,
)


def test_three_workers_exactly_once(prefix: str) -> None:
    queue = Queue.from_url(REDIS_URL, prefix)
    queue.jobs.create("job1", problems(50))
    workers = start_workers(REDIS_URL, prefix, 3, delay_s=0.01)
    try:
        status = wait_finished(queue, "job1", 120)
    finally:
        stop(workers)
    results = result_ids(queue, "job1")
    assert sorted(results) == sorted(f"q{i}" for i in range(50))
    assert status.status == "completed" and status.done == 50
    trained = drain_trainer(queue)
    assert sorted(trained) == sorted(results)


def test_killed_worker_loses_nothing(prefix: str) -> None:
    queue = Queue.from_url(REDIS_URL, prefix)
    queue.jobs.create("job2", problems(50))
    workers = start_workers(REDIS_URL, prefix, 3, delay_s=0.3)
    try:
        deadline = time.monotonic() + 60
        while done(queue, "job2") < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        workers[0].kill()  # SIGKILL mid-batch: its claimed tasks stay pending
        status = wait_finished(queue, "job2", 180)
    finally:
        stop(workers)
    results = result_ids(queue, "job2")
    assert len(results) == len(set(results)) == 50
    assert status.done == 50 and status.failed == 0
    assert sorted(drain_trainer(queue)) == sorted(results)


def test_poison_task_is_dead_lettered(prefix: str) -> None:
    queue = Queue.from_url(REDIS_URL, prefix)
    queue.jobs.create("job3", problems(20, poison=7))
    workers = start_workers(REDIS_URL, prefix, 2, delay_s=0.0)
    try:
        status = wait_finished(queue, "job3", 120)
    finally:
        stop(workers)
    assert status.status == "completed_with_failures"
    assert status.done == 19 and status.failed == 1
    assert "POISON" in (status.last_error or "")
    dead = queue.dead()
    assert len(dead) == 1
    assert "q7" in str(dead[0])


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_redis_restart_mid_job(prefix: str, tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        queue = Queue.from_url(server.url, prefix)
        queue.jobs.create("job4", problems(50))
        workers = start_workers(server.url, prefix, 2, delay_s=0.1)
        deadline = time.monotonic() + 60
        while done(queue, "job4") < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.kill()
        time.sleep(1.0)
        server.start()
        status = wait_finished(Queue.from_url(server.url, prefix), "job4", 180)
        results = result_ids(queue, "job4")
        assert len(results) == len(set(results)) == 50
        assert status.done == 50
        assert sorted(drain_trainer(queue)) == sorted(results)
    finally:
        stop(workers)
        server.kill()
