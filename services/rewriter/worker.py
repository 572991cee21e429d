"""``mindgap worker``: take tasks from the queue in batches, align them, record the results.

A task is acknowledged only inside ``Tasks.complete_many`` (result written first,
atomically), so a killed worker loses nothing: its tasks are reclaimed after the visibility
timeout. While a batch is worked on, a ``Lease`` extends its tasks' visibility, so a long
engine call is not reclaimed and recomputed elsewhere. A Redis outage, however long, is
ridden out (``Outage``): the worker waits with backoff, and a batch in hand keeps its
computed results and completes them once Redis is back.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from mindgap.queue import Backpressure, Queue, Task, Tasks
from mindgap.queue.store import REDIS_DOWN, Outage
from mindgap.rewriter.aligner import Aligner, Verifier
from mindgap.rewriter.engines.base import Engine
from mindgap.schemas import RewriteOptions

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 5.0
HEARTBEAT_TTL_S = 30


@dataclass
class WorkerStats:
    """What one worker has done."""

    batches: int = 0
    completed: int = 0
    duplicates: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    paused_s: float = 0.0
    task_latency_s: list[float] = field(default_factory=list)


class Lease:
    """While a batch is worked on (``with Lease(...)``), a background thread extends the
    visibility of its tasks every ``every_s`` (``Tasks.touch``); a touch that fails (Redis
    away) is tried again at the next tick."""

    def __init__(self, tasks: Tasks, held: Sequence[Task], every_s: float) -> None:
        self.tasks, self.held, self.every_s = tasks, list(held), every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="lease", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _keep(self) -> None:
        while not self._done.wait(self.every_s):
            try:
                self.tasks.touch(self.held)
            except REDIS_DOWN as exc:
                log.debug("lease extension failed (%s); next try in %.1f s", exc, self.every_s)


class Worker:
    """One consumer of ``rewriters``: claim a batch, align it, complete or fail each task."""

    def __init__(self, queue: Queue, engine: Engine, verifier: Verifier, consumer: str,
                 batch_size: int, block_ms: int = 1000,
                 backpressure: Backpressure | None = None) -> None:
        self.queue = queue
        self.engine = engine
        self.verifier = verifier
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.backpressure = backpressure
        self.stats = WorkerStats()
        self.stop = threading.Event()
        self.outage = Outage(f"worker {consumer}", stop=self.stop)

    def _aligner(self, options: dict[str, Any]) -> Aligner:
        return Aligner(self.engine, self.verifier, RewriteOptions(**options))

    def _settle(self, task: Task, error: str) -> None:
        self.stats.failed_attempts += 1
        if self.outage.call(lambda: self.queue.tasks.fail(task, error)):
            self.stats.dead_lettered += 1
            log.warning("task %s (problem %s) dead-lettered: %s", task.entry_id,
                        task.problem.id, error)

    def _run_group(self, tasks: list[Task]) -> None:
        """Align tasks that share options; on an error, retry them one by one to isolate it."""
        try:
            aligner = self._aligner(tasks[0].options)
        except ValidationError as exc:
            for task in tasks:
                self._settle(task, f"invalid options: {exc}")
            return
        try:
            examples = aligner.align([t.problem for t in tasks])
        except Exception as exc:  # any engine or verifier failure is the tasks' failure
            if len(tasks) == 1:
                self._settle(tasks[0], f"{type(exc).__name__}: {exc}")
                return
            for task in tasks:
                self._run_group([task])
            return
        done = list(zip(tasks, examples, strict=True))
        recorded = self.outage.call(lambda: self.queue.tasks.complete_many(done))
        self.stats.completed += sum(recorded)
        self.stats.duplicates += len(recorded) - sum(recorded)

    def _claimable(self) -> int:
        """How many tasks to claim: the batch size, or under backpressure this worker's share
        of the room left below the high-water mark (results still in flight count too).
        The lag is the one ``Backpressure`` reads: ``AlignedStream.lag``."""
        if self.backpressure is None:
            return self.batch_size
        in_flight = self.queue.tasks.depth().pending
        room = self.backpressure.high_water - self.queue.aligned.lag() - in_flight
        share = room // max(1, len(self.queue.heartbeats.live()))
        return max(0, min(self.batch_size, share))

    def run_once(self) -> int:
        """Claim and process one batch; returns the number of tasks claimed."""
        if self.backpressure is not None and self.backpressure.check():
            start = time.monotonic()
            self.stop.wait(min(1.0, self.block_ms / 1000))
            self.stats.paused_s += time.monotonic() - start
            return 0
        count = self._claimable()
        if count == 0:
            self.stop.wait(min(1.0, self.block_ms / 1000))
            return 0
        tasks = self.queue.tasks.claim(self.consumer, count=count, block_ms=self.block_ms)
        if not tasks:
            return 0
        started = time.monotonic()
        groups: dict[str, list[Task]] = {}
        for task in tasks:
            key = repr(sorted(task.options.items()))
            groups.setdefault(key, []).append(task)
        with Lease(self.queue.tasks, tasks, self.queue.tasks.visibility_timeout_ms / 3000):
            for group in groups.values():
                self._run_group(group)
        elapsed = time.monotonic() - started
        self.stats.batches += 1
        self.stats.task_latency_s.extend([elapsed] * len(tasks))
        return len(tasks)

    def run(self, until: Callable[[], bool] | None = None) -> WorkerStats:
        """Work until ``stop`` is set (SIGTERM/SIGINT set it) or ``until()`` is true.

        The batch in hand is finished first; unfinished tasks stay pending in Redis (also
        those whose completion was still waiting for Redis when ``stop`` was set: another
        worker redoes them). The worker announces itself with a heartbeat (what the
        rewriter's ``/readyz`` counts). While Redis is away it waits with backoff.
        """
        beat = float("-inf")
        try:
            while not self.stop.is_set() and not (until and until()):
                try:
                    if time.monotonic() - beat >= HEARTBEAT_EVERY_S:
                        self.queue.heartbeats.beat(self.consumer, ttl_s=HEARTBEAT_TTL_S)
                        beat = time.monotonic()
                    self.run_once()
                except REDIS_DOWN as exc:
                    self.outage.failed(exc)
                    continue
                self.outage.recovered()
        finally:
            self._gone()
        return self.stats

    def _gone(self) -> None:
        """Withdraw the heartbeat, unless Redis is away (it then expires by itself)."""
        try:
            self.queue.heartbeats.gone(self.consumer)
        except REDIS_DOWN:
            log.warning("worker %s: Redis unreachable at exit; its heartbeat expires in %d s",
                        self.consumer, HEARTBEAT_TTL_S)

    def install_signal_handlers(self) -> None:
        """Finish the current batch on SIGTERM/SIGINT, then exit the loop."""
        def handler(signum: int, frame: object) -> None:
            log.info("signal %d: finishing the current batch", signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
