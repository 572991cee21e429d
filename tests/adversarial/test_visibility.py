"""Defect 11: an engine call longer than the visibility timeout must not get its tasks
reclaimed by another worker (the worker extends the lease of the tasks in hand)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import redis

from mindgap.queue import Queue
from mindgap.rewriter.engines.base import Sample
from mindgap.rewriter.worker import Worker
from mindgap.verifier.pool import LocalVerifier
from tests.conftest import REDIS_URL
from tests.worker_process import SlowScriptedEngine, problems, result_ids


class CountingEngine(SlowScriptedEngine):
    """``SlowScriptedEngine`` that counts the prompts it generated for, per problem."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self.generated: Counter[str] = Counter()

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        self.generated.update(p.split("ANSWER=")[1].split()[0] for p in prompts)
        return super().generate(prompts, n, temperature, top_p, max_tokens, seed)


def wait_pending(queue: Queue, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while queue.tasks.depth().pending < count:
        assert time.monotonic() < deadline, "the first worker claimed nothing"
        time.sleep(0.02)


def test_long_engine_call_keeps_its_tasks(prefix: str) -> None:
    """Visibility timeout 2 s, one 7 s engine call, a second worker polling: no task is
    delivered twice, nothing is computed twice."""
    first_queue = Queue.from_url(REDIS_URL, prefix, visibility_timeout_ms=2000)
    second_queue = Queue.from_url(REDIS_URL, prefix, visibility_timeout_ms=2000)
    first_queue.jobs.create("job", problems(4))
    engine, other = CountingEngine(7.0), CountingEngine(0.0)
    with LocalVerifier(workers=1) as verifier:
        first = Worker(first_queue, engine, verifier, "a", batch_size=4, block_ms=200)
        second = Worker(second_queue, other, verifier, "b", batch_size=4, block_ms=200)
        finished = threading.Event()
        thread = threading.Thread(target=lambda: (first.run_once(), finished.set()))
        thread.start()
        wait_pending(first_queue, 4)
        second.run(until=finished.is_set)
        thread.join()
    assert engine.generated == Counter({str(i): 1 for i in range(4)})
    assert not other.generated and second.stats.batches == 0
    assert first.stats.completed == 4 and first.stats.duplicates == 0
    assert sorted(result_ids(first_queue, "job")) == [f"q{i}" for i in range(4)]


def test_lease_outlives_a_failed_touch(prefix: str) -> None:
    """A touch that fails (Redis hiccup) is retried at the next tick; the lease holds."""
    queue = Queue.from_url(REDIS_URL, prefix, visibility_timeout_ms=900)
    queue.jobs.create("job", problems(2))
    touch, calls = queue.tasks.touch, []

    def flaky_touch(tasks: list) -> int:
        calls.append(len(tasks))
        if len(calls) == 1:
            raise redis.ConnectionError("hiccup")
        return touch(tasks)

    queue.tasks.touch = flaky_touch  # type: ignore[method-assign]
    with LocalVerifier(workers=1) as verifier:
        worker = Worker(queue, CountingEngine(2.5), verifier, "a", batch_size=2, block_ms=200)
        assert worker.run_once() == 2
    assert len(calls) >= 5
    assert worker.stats.completed == 2 and worker.stats.duplicates == 0
    assert sorted(result_ids(queue, "job")) == ["q0", "q1"]
