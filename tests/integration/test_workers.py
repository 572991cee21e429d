"""Worker processes on a real Redis: exactly once, killed workers, poison tasks, Redis restart."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mindgap.queue import FINISHED, JobState, Queue
from mindgap.schemas import AlignedExample, Problem
from tests.conftest import REDIS_URL, ROOT, free_port


def problems(count: int, poison: int | None = None) -> list[Problem]:
    return [Problem(id=f"q{i}", question=f"Sum {i}? ANSWER={i}"
                    + (" POISON" if i == poison else ""),
                    solution=f"It is {i}.\n#### {i}") for i in range(count)]


def start_workers(url: str, prefix: str, count: int, delay_s: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-m", "tests.worker_process", url, prefix,
                              f"w{i}", str(delay_s)], cwd=ROOT) for i in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_finished(queue: Queue, job_id: str, timeout_s: float) -> JobState:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = queue.jobs.status(job_id)
        if status and status.status in FINISHED:
            return status
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} not finished: {queue.jobs.status(job_id)}")


def done(queue: Queue, job_id: str) -> int:
    """How many of the job's problems are done (0 while Redis cannot say)."""
    state = queue.jobs.status(job_id)
    return state.done if state else 0


def result_ids(queue: Queue, job_id: str) -> list[str]:
    """Problem ids of the job's results, in completion order (as the API serves them)."""
    return [AlignedExample.model_validate_json(raw).problem_id
            for _, raw in queue.jobs.results(job_id)]


def drain_trainer(queue: Queue) -> list[str]:
    """Problem ids delivered to one trainer consumer (and acked)."""
    seen = []
    while batch := queue.aligned.read_new("trainer-0", count=100, block_ms=200):
        seen += [example.problem_id for _, example in batch]
        queue.aligned.ack([entry for entry, _ in batch])
    return seen



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
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--appendonly",
               "yes", "--appendfsync", "always", "--save", "", "--dir", str(tmp_path)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    time.sleep(0.5)
    workers: list[subprocess.Popen] = []
    try:
        queue = Queue.from_url(url, prefix)
        queue.jobs.create("job4", problems(50))
        workers = start_workers(url, prefix, 2, delay_s=0.1)
        deadline = time.monotonic() + 60
        while done(queue, "job4") < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.kill()
        server.wait()
        time.sleep(1.0)
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        status = wait_finished(Queue.from_url(url, prefix), "job4", 180)
        results = result_ids(queue, "job4")
        assert len(results) == len(set(results)) == 50
        assert status.done == 50
        assert sorted(drain_trainer(queue)) == sorted(results)
    finally:
        stop(workers)
        server.kill()
        server.wait()
