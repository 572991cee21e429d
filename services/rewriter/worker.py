"""``mindgap worker``: take tasks from the queue in batches, align them, record the results.

A task is acknowledged only inside ``Tasks.complete_many`` (result written first,
atomically), so a killed worker loses nothing: its tasks are reclaimed after the visibility
timeout. While a batch is worked on, a ``Lease`` extends its tasks' visibility, so a long
engine call is not reclaimed and recomputed elsewhere. A ``Pulse`` thread beats the
worker's heartbeat (its state: idle, generating, reloading, and the progress of the tasks
in hand) whatever the engine is doing, so a long batch does not look like a dead worker.
Each problem is completed at the end of the sampling round that decided it (a ``_Group``
hears of it from the aligner), so a job's progress moves within a batch. A Redis outage,
however long, is ridden out (``Outage``): the worker waits with backoff, and a batch in
hand keeps its computed results and completes them once Redis is back.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from mindgap.queue import Backpressure, Queue, Task, Tasks
from mindgap.queue.heartbeats import Heartbeats, WorkerState
from mindgap.queue.store import REDIS_DOWN, Outage
from mindgap.rewriter.aligner import Aligner, RoundDone, Verifier
from mindgap.rewriter.engines.base import Engine
from mindgap.schemas import AlignedExample, RewriteOptions

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 5.0
"""How often the ``Pulse`` thread beats (and at once on every change of state)."""
HEARTBEAT_TTL_S = 30
"""How long a heartbeat stays fresh: a worker silent this long counts as gone."""


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
    reload_s: list[float] = field(default_factory=list)
    """Seconds of each policy reload (one per version followed)."""


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


class Pulse:
    """While running (``with Pulse(...)``), a background thread beats the heartbeat every
    ``every_s`` with ``info()``, and at once after ``now()``; a beat that fails (Redis away,
    any error) is logged and tried again at the next tick, so the thread never dies."""

    def __init__(self, heartbeats: Heartbeats, consumer: str, info: Callable[[], dict[str, Any]],
                 every_s: float, ttl_s: int) -> None:
        self.heartbeats, self.consumer, self.info = heartbeats, consumer, info
        self.every_s, self.ttl_s = every_s, ttl_s
        self._done = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="heartbeat", daemon=True)

    def __enter__(self) -> Pulse:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._wake.set()
        self._thread.join()

    def now(self) -> None:
        """Beat at once (the state or the progress changed)."""
        self._wake.set()

    def _keep(self) -> None:
        while not self._done.is_set():
            self._wake.clear()
            try:
                self.heartbeats.beat(self.consumer, ttl_s=self.ttl_s, info=self.info())
            except Exception as exc:  # a heartbeat thread that died would look like a dead worker
                log.debug("heartbeat failed (%s: %s); next try in %.1f s",
                          type(exc).__name__, exc, self.every_s)
            self._wake.wait(self.every_s)


@dataclass
class Activity:
    """What the worker is doing, as its heartbeat tells it (guarded by ``lock``: the
    ``Pulse`` thread reads it while the worker changes it)."""

    state: WorkerState = WorkerState.IDLE
    since: float = field(default_factory=time.time)
    tasks: int = 0
    in_hand: dict[str, dict[str, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, state: WorkerState, tasks: int = 0) -> None:
        """A new state (its progress in hand starts from nothing)."""
        with self.lock:
            self.state, self.since, self.tasks, self.in_hand = state, time.time(), tasks, {}

    def progress(self, job_id: str, shares: dict[str, float]) -> None:
        """The share of the work done on each of ``job_id``'s problems in hand."""
        with self.lock:
            if shares:
                self.in_hand[job_id] = shares
            else:
                self.in_hand.pop(job_id, None)

    def info(self) -> dict[str, Any]:
        """The heartbeat's fields (``WorkerBeat``)."""
        with self.lock:
            return {"state": self.state.value, "since": self.since, "tasks": self.tasks,
                    "in_hand": {job: dict(shares) for job, shares in self.in_hand.items()}}


class _Group:
    """One group of tasks sharing options (of one job or several), as the aligner works on
    it: each problem decided is completed at the end of its round (one round trip per
    round; a round whose writes meet a Redis outage leaves them to the next), and the
    sampling progress of the undecided ones is reported to the heartbeat."""

    def __init__(self, worker: Worker, tasks: list[Task], options: RewriteOptions) -> None:
        self.worker, self.options = worker, options
        self.tasks = {task.problem.id: task for task in tasks}
        self.decided: list[tuple[Task, AlignedExample]] = []
        self.recorded: set[str] = set()

    def on_decided(self, example: AlignedExample) -> None:
        self.decided.append((self.tasks[example.problem_id], example))

    def on_round(self, done: RoundDone) -> None:
        """Record the problems the round decided; report how far the others have got."""
        options = self.options
        used = min(done.round * options.round_size,
                   options.k_self if done.kind == "plain" else options.k_guided)
        if done.kind == "guided":
            used += options.k_self
        budget = options.k_self + options.k_guided
        self._report(used / budget if budget else 0.0)
        try:
            self.flush()
        except REDIS_DOWN as exc:
            log.debug("results wait for Redis (%s); the batch goes on", exc)
        self.worker.pulse_now()

    def _report(self, share: float) -> None:
        """Tell the heartbeat, per job, how far each problem in hand has got: ``share`` for
        the undecided ones, 1 for those decided but not yet recorded."""
        waiting = {task.problem.id for task, _ in self.decided}
        per_job: dict[str, dict[str, float]] = {t.job_id: {} for t in self.tasks.values()}
        for pid, task in self.tasks.items():
            if pid not in self.recorded and (share > 0 or pid in waiting):
                per_job[task.job_id][pid] = 1.0 if pid in waiting else round(share, 4)
        for job_id, shares in per_job.items():
            self.worker.activity.progress(job_id, shares)

    def clear_progress(self) -> None:
        """The group is over: nothing of it is in hand any more."""
        for job_id in {t.job_id for t in self.tasks.values()}:
            self.worker.activity.progress(job_id, {})

    def flush(self) -> None:
        """Complete the problems decided so far (raises while Redis is away)."""
        batch = self.decided
        if not batch:
            return
        recorded = self.worker.queue.tasks.complete_many(batch)
        self.decided = []
        self.recorded.update(task.problem.id for task, _ in batch)
        self.worker.stats.completed += sum(recorded)
        self.worker.stats.duplicates += len(recorded) - sum(recorded)

    def undone(self) -> list[Task]:
        """The tasks neither recorded nor waiting to be."""
        settled = self.recorded | {task.problem.id for task, _ in self.decided}
        return [task for pid, task in self.tasks.items() if pid not in settled]


class Worker:
    """One consumer of ``rewriters``: claim a batch, align it, complete or fail each task."""

    def __init__(self, queue: Queue, engine: Engine, verifier: Verifier, consumer: str,
                 batch_size: int, block_ms: int = 1000,
                 backpressure: Backpressure | None = None, *,
                 heartbeat_every_s: float = HEARTBEAT_EVERY_S,
                 heartbeat_ttl_s: int = HEARTBEAT_TTL_S, follow_policy: bool = True) -> None:
        if not 0 < heartbeat_every_s < heartbeat_ttl_s:
            raise ValueError("heartbeats must come more often than they expire")
        self.queue = queue
        self.engine = engine
        self.verifier = verifier
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.backpressure = backpressure
        self.heartbeat_every_s, self.heartbeat_ttl_s = heartbeat_every_s, heartbeat_ttl_s
        self.stats = WorkerStats()
        self.activity = Activity()
        self.stop = threading.Event()
        self.outage = Outage(f"worker {consumer}", stop=self.stop)
        self._pulse: Pulse | None = None
        self.follow_policy = follow_policy
        self._unfollowable: int | None = None  # a version that could not be loaded

    def pulse_now(self) -> None:
        """Send the heartbeat at once (while ``run`` runs)."""
        if self._pulse is not None:
            self._pulse.now()

    def _beat_info(self) -> dict[str, Any]:
        return {**self.activity.info(), "completed": self.stats.completed,
                "model": self.engine.model_name, "policy_version": self.engine.policy_version,
                "reloads": len(self.stats.reload_s),
                "last_reload_s": self.stats.reload_s[-1] if self.stats.reload_s else None}

    def follow(self) -> bool:
        """Load the newest published policy version if it is newer than the engine's; True
        when one was loaded. Called between batches, so no task is in hand: a worker killed
        while reloading loses nothing. A version that cannot be loaded is reported once and
        not tried again (the worker goes on with the weights it has)."""
        current = self.queue.policy.current() if self.follow_policy else None
        if current is None or current.version <= self.engine.policy_version \
                or current.version == self._unfollowable:
            return False
        start = time.monotonic()
        try:
            with self.reloading():
                self.engine.load_policy(current.path, current.version)
        except Exception as exc:  # PolicyReloadUnsupported, a missing or broken folder
            self._unfollowable = current.version
            log.warning("worker %s: policy version %d (%s) not loaded, rewriting stays at "
                        "version %d: %s", self.consumer, current.version, current.path,
                        self.engine.policy_version, exc)
            return False
        self.stats.reload_s.append(time.monotonic() - start)
        log.info("worker %s: now at policy version %d (%s), loaded in %.1f s", self.consumer,
                 current.version, current.path, self.stats.reload_s[-1])
        return True

    @contextmanager
    def reloading(self) -> Iterator[None]:
        """Hold while the engine loads new weights: the heartbeat says ``reloading``."""
        self.activity.set(WorkerState.RELOADING)
        self.pulse_now()
        try:
            yield
        finally:
            self.activity.set(WorkerState.IDLE)
            self.pulse_now()

    def _settle(self, task: Task, error: str) -> None:
        self.stats.failed_attempts += 1
        if self.outage.call(lambda: self.queue.tasks.fail(task, error)):
            self.stats.dead_lettered += 1
            log.warning("task %s (problem %s) dead-lettered: %s", task.entry_id,
                        task.problem.id, error)

    def _run_group(self, tasks: list[Task]) -> None:
        """Align tasks that share options, each completed once decided; on an error, retry
        the undecided ones one by one to isolate it."""
        try:
            options = RewriteOptions(**tasks[0].options)
        except ValidationError as exc:
            for task in tasks:
                self._settle(task, f"invalid options: {exc}")
            return
        group = _Group(self, tasks, options)
        aligner = Aligner(self.engine, self.verifier, options, on_round=group.on_round,
                          on_decided=group.on_decided)
        try:
            aligner.align([t.problem for t in tasks])
        except Exception as exc:  # any engine or verifier failure is the tasks' failure
            self.outage.call(group.flush)  # what earlier rounds decided stands
            group.clear_progress()
            left = group.undone()
            if len(tasks) == 1 and left:
                self._settle(left[0], f"{type(exc).__name__}: {exc}")
            elif len(tasks) > 1:
                for task in left:
                    self._run_group([task])
            return
        self.outage.call(group.flush)
        group.clear_progress()

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
        """Follow the policy, then claim and process one batch; returns the number of tasks
        claimed."""
        self.follow()
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
        self.activity.set(WorkerState.GENERATING, len(tasks))
        self.pulse_now()
        try:
            with Lease(self.queue.tasks, tasks, self.queue.tasks.visibility_timeout_ms / 3000):
                for group in groups.values():
                    self._run_group(group)
        finally:
            self.activity.set(WorkerState.IDLE)
            self.pulse_now()
        elapsed = time.monotonic() - started
        self.stats.batches += 1
        self.stats.task_latency_s.extend([elapsed] * len(tasks))
        return len(tasks)

    def run(self, until: Callable[[], bool] | None = None) -> WorkerStats:
        """Work until ``stop`` is set (SIGTERM/SIGINT set it) or ``until()`` is true.

        The batch in hand is finished first; unfinished tasks stay pending in Redis (also
        those whose completion was still waiting for Redis when ``stop`` was set: another
        worker redoes them). Meanwhile a ``Pulse`` thread announces the worker with a
        heartbeat (what the rewriter's ``/readyz`` counts). While Redis is away it waits
        with backoff.
        """
        pulse = Pulse(self.queue.heartbeats, self.consumer, self._beat_info,
                      self.heartbeat_every_s, self.heartbeat_ttl_s)
        try:
            with pulse:
                self._pulse = pulse
                while not self.stop.is_set() and not (until and until()):
                    try:
                        self.run_once()
                    except REDIS_DOWN as exc:
                        self.outage.failed(exc)
                        continue
                    self.outage.recovered()
        finally:
            self._pulse = None
            self._gone()
        return self.stats

    def _gone(self) -> None:
        """Withdraw the heartbeat, unless Redis is away (it then expires by itself)."""
        try:
            self.queue.heartbeats.gone(self.consumer)
        except REDIS_DOWN:
            log.warning("worker %s: Redis unreachable at exit; its heartbeat expires in %d s",
                        self.consumer, self.heartbeat_ttl_s)

    def install_signal_handlers(self) -> None:
        """Finish the current batch on SIGTERM/SIGINT, then exit the loop."""
        def handler(signum: int, frame: object) -> None:
            log.info("signal %d: finishing the current batch", signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
