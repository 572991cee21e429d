"""``LocalVerifier``: a pool of sandboxed worker processes, fair across submissions.

Each submission (a ``Ticket``: one HTTP request, one ``verify_batch`` call) has its own
queue; dispatchers take chunks from the queues in turn, so one large or slow submission
cannot starve the others. The parent enforces each item's deadline by wall clock: a worker
that has not answered ``timeout_s`` (plus a short grace) after starting an item is killed
and replaced, and the item is answered ``timeout``. An item running longer than
``SLOW_AFTER_S`` frees its capacity slot, so a warm spare worker serves the queue meanwhile.
A worker that dies mid-item is replaced and the item retried once, within what is left of
its deadline. ``Ticket.cancel`` drops a submission's queued items and interrupts its running
ones (a worker that does not stop within ``KILL_GRACE_S`` is killed and replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from mindgap.config import VerifierSettings
from mindgap.schemas import VerifyReason, VerifyRequest, VerifyResult
from mindgap.verifier.channel import Channel
from mindgap.verifier.sandbox import CUT, SandboxLimits

log = logging.getLogger(__name__)

KILL_GRACE_S = 0.25
"""How long past the item timeout the parent waits (for the worker's own deadline answer)
before killing a worker."""
SLOW_AFTER_S = 0.25
"""An item running longer than this frees its capacity slot for a spare worker."""
WARM_SPARES = 2
"""Idle workers kept ready beyond the free capacity, to take over from items that run slow."""
SPARE_IDLE_S = 30.0
"""An extra worker (beyond ``workers + WARM_SPARES``) idle this long is stopped."""
MAX_SPARE_WORKERS = 16
"""Most workers started beyond ``workers + WARM_SPARES`` while items run slow."""
SLOW_NICENESS = 19
"""The CPU niceness of a worker while its item runs slow, so it takes no CPU from others."""
CANCEL_POLL_S = 0.1
"""How often a dispatcher waiting on a slow item checks whether it was cancelled."""
READY_TIMEOUT_S = 60.0
CHUNK = 64
"""Most items sent to one worker in one message (results stream back one by one)."""
RETRY_AFTER_S = 1
"""The ``Retry-After`` suggested to a client whose queue is full."""
_WARNED_NO_NETNS = False


class WorkerDied(RuntimeError):
    """The worker process exited while handling an item."""


class QueueFull(RuntimeError):
    """A client already has ``max_queued_per_client`` items waiting or running."""

    def __init__(self, client: str, queued: int, limit: int) -> None:
        super().__init__(f"client has {queued} items queued or running (limit {limit})")
        self.client = client
        self.retry_after_s = RETRY_AFTER_S


@dataclass
class PoolStats:
    """Counters a service exports as metrics."""

    items: int = 0
    timeouts: int = 0
    restarts: int = 0
    retries: int = 0
    errors: int = 0
    cancelled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class _Worker:
    """One sandboxed process and the pipes to it; used by exactly one dispatcher thread."""

    def __init__(self, limits: SandboxLimits) -> None:
        self._limits = limits
        self.process: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        self._ready = False
        self.busy = False
        """Whether the worker has a chunk in hand (set by its dispatcher)."""

    def start(self) -> None:
        """Launch the process; it gets ready (imports, sandbox set-up) in the background."""
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mindgap.verifier.sandbox", str(to_child_r),
                 str(to_parent_w), str(self._limits.memory_mb)],
                pass_fds=(to_child_r, to_parent_w), start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )
        finally:
            os.close(to_child_r)
            os.close(to_parent_w)
        self._channel = Channel(to_parent_r, to_child_w)
        self._ready = False

    def _await_ready(self) -> None:
        global _WARNED_NO_NETNS
        assert self._channel is not None
        if not self._channel.poll(READY_TIMEOUT_S):
            raise WorkerDied("worker did not start in time")
        hello = self._channel.recv()
        if not hello.get("isolated") and not _WARNED_NO_NETNS:
            log.warning("verifier sandbox: no network namespace permitted here; "
                        "workers run with rlimits only")
            _WARNED_NO_NETNS = True
        self._ready = True

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Kill the worker's whole process group and reap it."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=5)
        if self._channel is not None:
            self._channel.close()
        self.process, self._channel, self._ready = None, None, False

    def replace(self, reason: str) -> None:
        """Kill the worker (one log line with the reason); a fresh one is started when the
        slot is next used (``send``) or goes back to wait for work (``LocalVerifier``)."""
        log.warning("verifier worker pid %s killed and replaced: %s", self.pid, reason)
        self.kill()

    def set_niceness(self, niceness: int) -> bool:
        """Set the worker's CPU niceness; False when not permitted (or it has gone)."""
        try:
            if self.process is not None:
                os.setpriority(os.PRIO_PROCESS, self.process.pid, niceness)
        except OSError:
            return False
        return True

    def ensure_ready(self) -> None:
        """Start the worker if it is not running; wait until it is ready."""
        if self.process is not None and not self.alive:
            self.replace("exited while idle")
        if self.process is None:
            self.start()
        if not self._ready:
            self._await_ready()

    def send(self, items: Sequence[VerifyRequest], timeout_s: float) -> None:
        """Hand ``items`` to the (ready) worker."""
        assert self._channel is not None
        self._channel.send([[[i.response, i.reference] for i in items], timeout_s])

    def poll(self, timeout_s: float) -> bool:
        """True when the next result (or end of file) is ready within ``timeout_s``."""
        assert self._channel is not None
        return self._channel.poll(timeout_s)

    def recv(self) -> VerifyResult:
        assert self._channel is not None
        return VerifyResult.model_validate(self._channel.recv())

    def interrupt(self) -> None:
        """Make the worker give up its current item now (its deadline signal, early)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.process.pid, signal.SIGALRM)

    def cut(self) -> None:
        """Ask the worker to skip the rest of its chunk after the item it runs now."""
        assert self._channel is not None
        self._channel.send(CUT)

    def await_cut(self, timeout_s: float) -> bool:
        """Read up to the worker's answer to a cut (results before it are of skipped items,
        run before the cut arrived); False when it does not come within ``timeout_s``."""
        assert self._channel is not None
        deadline = time.monotonic() + timeout_s
        while self._channel.poll(max(0.0, deadline - time.monotonic())):
            message = self._channel.recv()
            if isinstance(message, dict) and "cut" in message:
                return True
        return False

    def stop(self) -> None:
        """Close the pipes (the worker exits on end of file), then make sure it is gone."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2)
        self.kill()


class Ticket:
    """The items of one submission; ``future`` resolves to their results in order."""

    def __init__(self, pool: LocalVerifier, size: int, client: str | None) -> None:
        self.future: Future[list[VerifyResult]] = Future()
        self.client = client
        self.cancelled = False
        self.slow = 0
        """Items of this ticket running past ``SLOW_AFTER_S`` now (guarded by the pool)."""
        self._pool = pool
        self._results: list[VerifyResult | None] = [None] * size
        self._left = size
        self._lock = threading.Lock()

    def deliver(self, index: int, result: VerifyResult) -> None:
        """Record one item's result; the future resolves with the last one."""
        with self._lock:
            if self._results[index] is not None:
                return
            self._results[index] = result
            self._left -= 1
            done = self._left == 0
        if done and not self.future.done():
            self.future.set_result([r for r in self._results if r is not None])

    def cancel(self) -> None:
        """Drop the queued items, stop a running one (its worker is replaced)."""
        self._pool.cancel(self)

    def results(self, timeout_s: float | None = None) -> list[VerifyResult]:
        return self.future.result(timeout_s)

    async def aresults(self) -> list[VerifyResult]:
        return await asyncio.wrap_future(self.future)


@dataclass
class _Job:
    ticket: Ticket
    index: int
    item: VerifyRequest
    deadline: float | None = None
    """Monotonic time the item's answer is due: set at submission for submissions with a
    deadline (the service's requests), else when the item first starts."""
    retried: str | None = None
    """Why the first run failed, once the item is queued for its one retry."""


@dataclass
class _Chunk:
    """Items sent to one worker in one message, and what became of the capacity they took."""

    jobs: list[_Job]
    holding: bool = True
    """Whether the chunk still holds its capacity slot (given back once an item runs slow)."""
    cut: bool = False
    """Whether the items after the slow one were taken back and requeued."""


class _Outcome:
    """Why waiting on a running item ended without a result."""

    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    """Cancelled, and the worker did not stop when interrupted."""
    STOPPED = "stopped"
    """Cancelled, and the worker stopped the item when interrupted."""


class LocalVerifier:
    """Verify in a pool of sandboxed processes; thread-safe, sync and async entry points."""

    def __init__(self, workers: int | None = None, timeout_s: float | None = None,
                 memory_mb: int | None = None, max_queued_per_client: int | None = None
                 ) -> None:
        settings = VerifierSettings()
        self.workers = workers or settings.workers
        self.timeout_s = timeout_s or settings.timeout_s
        self.max_queued_per_client = max_queued_per_client or settings.max_queued_per_client
        self.stats = PoolStats()
        self._limits = SandboxLimits(memory_mb=memory_mb or settings.memory_mb)
        self._cond = threading.Condition()
        self._groups: OrderedDict[Ticket, deque[_Job]] = OrderedDict()
        self._queued: Counter[str] = Counter()
        self._free = self.workers
        """Capacity slots not taken by a dispatcher running a (not slow) item."""
        self._idle = 0
        """Dispatchers waiting for work or capacity."""
        self._starting = 0
        """Dispatchers waiting for their worker to get ready."""
        self._slots: list[_Worker] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._niceness = os.getpriority(os.PRIO_PROCESS, 0)
        """The workers' niceness (that of this process) while their items are not slow."""
        with self._cond:
            for _ in range(self.workers + WARM_SPARES):  # spares: for items that run slow
                self._add_slot()

    def _add_slot(self) -> None:
        """Start one more worker and its dispatcher thread (call with ``_cond`` held)."""
        slot = _Worker(self._limits)
        slot.start()
        self._starting += 1  # until its dispatcher has it ready
        thread = threading.Thread(target=self._serve, args=(slot,), daemon=True,
                                  name=f"verifier-dispatch-{slot.pid}")
        self._slots.append(slot)
        self._threads.append(thread)
        thread.start()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers, spares included (for tests and operators)."""
        with self._cond:
            return [pid for slot in self._slots if slot.alive and (pid := slot.pid)]

    def busy_pids(self) -> list[int]:
        """Process ids of the workers running items now (for tests and operators)."""
        with self._cond:
            return [pid for slot in self._slots if slot.busy and (pid := slot.pid)]

    def live_workers(self) -> int:
        """How many worker processes are running now."""
        with self._cond:
            return sum(slot.alive for slot in self._slots)

    def _retire(self, slot: _Worker) -> bool:
        """Whether an extra worker, idle for ``SPARE_IDLE_S``, leaves (``_cond`` held)."""
        if len(self._slots) <= self.workers + WARM_SPARES or self._groups:
            return False
        self._slots.remove(slot)
        self._threads.remove(threading.current_thread())
        return True

    def _take(self, slot: _Worker) -> list[_Job] | None:
        """The next chunk, from the submissions in turn, with a capacity slot; None to stop
        (the pool is closing, or this extra worker retires)."""
        with self._cond:
            self._idle += 1
            while not (self._groups and self._free > 0):
                if (self._closed and not self._groups) or (
                        not self._cond.wait(SPARE_IDLE_S) and self._retire(slot)):
                    self._idle -= 1
                    return None
            self._idle -= 1
            self._free -= 1
            # In turn, but a submission with an item running slow waits for the others.
            ticket, group = next(((t, g) for t, g in self._groups.items() if not t.slow),
                                 next(iter(self._groups.items())))
            size = 1 if group[0].retried else min(CHUNK, -(-len(group) // self.workers))
            chunk = [group.popleft()]
            while group and len(chunk) < size and not group[0].retried:
                chunk.append(group.popleft())
            if group:
                self._groups.move_to_end(ticket)
            else:
                del self._groups[ticket]
            return chunk

    def _mark_slow(self, ticket: Ticket, release: bool, by: int = 1) -> None:
        """Count an item of ``ticket`` as running slow (``by=-1``: no longer); with
        ``release``, give back its capacity slot and keep warm spares ready."""
        with self._cond:
            ticket.slow += by
            if not release:
                return
            self._free += 1
            while (self._idle + self._starting - self._free < WARM_SPARES and not self._closed
                   and len(self._slots) < self.workers + WARM_SPARES + MAX_SPARE_WORKERS):
                self._add_slot()
            self._cond.notify()

    def _finish(self, slot: _Worker, holding: bool) -> None:
        """After a chunk: free its capacity slot; a worker killed during the chunk is
        started again and made ready."""
        with self._cond:
            if holding:
                self._free += 1
                self._cond.notify()
            if slot.process is not None:
                return
            slot.start()
            self._starting += 1
        self._warm(slot)

    def _warm(self, slot: _Worker) -> None:
        """Get the worker ready before taking work, so no item waits on a start-up (a worker
        that cannot start is left to fail on its chunk, whose items then say why); counted
        in ``_starting`` by the caller."""
        try:
            slot.ensure_ready()
        except (OSError, ValueError, EOFError, WorkerDied) as exc:
            slot.replace(f"did not start: {exc or type(exc).__name__}")
        finally:
            with self._cond:
                self._starting -= 1

    def _serve(self, slot: _Worker) -> None:
        self._warm(slot)
        while (jobs := self._take(slot)) is not None:
            slot.busy = True
            holding = self._run_chunk(slot, jobs)
            slot.busy = False
            self._finish(slot, holding)
        slot.stop()

    def _failed(self, job: _Job, reason: VerifyReason, detail: str) -> VerifyResult:
        started = (job.deadline or time.monotonic()) - self.timeout_s
        return VerifyResult(correct=False, extracted=None, reference=job.item.reference[:200],
                            reason=reason, elapsed_ms=(time.monotonic() - started) * 1000,
                            detail=detail)

    def _slow(self, slot: _Worker, chunk: _Chunk, index: int) -> None:
        """The chunk's item ``index`` runs slow: give back its capacity slot (a spare serves
        the queue meanwhile) and cut off and requeue the rest of the chunk."""
        self._mark_slow(chunk.jobs[index].ticket, release=chunk.holding)
        chunk.holding = False
        slot.set_niceness(SLOW_NICENESS)
        if not chunk.cut and index + 1 < len(chunk.jobs):
            chunk.cut = True
            slot.cut()
            self._requeue(chunk.jobs[index + 1:])

    def _stop(self, slot: _Worker, chunk: _Chunk, index: int) -> str:
        """Stop a cancelled item: cut off the rest of its chunk and interrupt it; ``STOPPED``
        when the worker answered in time (it lives on), else ``CANCELLED`` (it is killed)."""
        if not chunk.cut and index + 1 < len(chunk.jobs):
            chunk.cut = True
            slot.cut()
            self._requeue(chunk.jobs[index + 1:])  # dropped: the submission is cancelled
        slot.interrupt()
        if slot.poll(KILL_GRACE_S):
            slot.recv()
            return _Outcome.STOPPED
        return _Outcome.CANCELLED

    def _await(self, slot: _Worker, chunk: _Chunk, index: int) -> VerifyResult | str:
        """The running item's result, or why there is none (timeout, cancelled, died)."""
        job = chunk.jobs[index]
        job.deadline = job.deadline or time.monotonic() + self.timeout_s
        kill_at = job.deadline + KILL_GRACE_S
        try:
            if slot.poll(max(0.0, min(SLOW_AFTER_S, kill_at - time.monotonic()))):
                return slot.recv()
        except (EOFError, OSError, ValueError) as exc:
            return f"died: {str(exc) or type(exc).__name__}"
        try:
            self._slow(slot, chunk, index)
            while not job.ticket.cancelled:
                left = kill_at - time.monotonic()
                if left <= 0:
                    return _Outcome.TIMEOUT
                if slot.poll(min(CANCEL_POLL_S, left)):
                    return slot.recv()
            return self._stop(slot, chunk, index)
        except (EOFError, OSError, ValueError) as exc:
            return f"died: {str(exc) or type(exc).__name__}"
        finally:
            self._mark_slow(job.ticket, release=False, by=-1)
            if slot.alive and not slot.set_niceness(self._niceness):
                slot.replace("its CPU priority could not be raised again")

    def _run_chunk(self, slot: _Worker, jobs: list[_Job]) -> bool:
        """Verify one chunk on ``slot``; whether the chunk still holds its capacity slot."""
        chunk, first = _Chunk(jobs), jobs[0]
        try:
            slot.ensure_ready()
            now = time.monotonic()
            if first.deadline is not None and first.deadline <= now:
                late = [(job, self._failed(job, VerifyReason.timeout, "no time left"))
                        for job in jobs if job.deadline is not None and job.deadline <= now]
                self._deliver(late)
                self._requeue([job for job in jobs if job.deadline is None
                               or job.deadline > now])
                return chunk.holding
            first.deadline = first.deadline or now + self.timeout_s
            slot.send([job.item for job in jobs], first.deadline - now)
        except (OSError, ValueError, WorkerDied) as exc:
            self._deliver(self._on_failure(slot, first, f"died: {exc}"))
            self._requeue(jobs[1:])
            return chunk.holding
        answered: list[tuple[_Job, VerifyResult]] = []
        for index, job in enumerate(jobs):
            outcome = self._await(slot, chunk, index)
            if isinstance(outcome, VerifyResult):
                answered.append((job, outcome))
            elif outcome == _Outcome.STOPPED:
                self.stats.add(cancelled=1)
                self._left(job.ticket, 1)
            else:
                self._deliver(answered + self._on_failure(slot, job, outcome))
                if not chunk.cut:
                    self._requeue(jobs[index + 1:])
                return chunk.holding
            if chunk.cut:
                if not slot.await_cut(self.timeout_s + KILL_GRACE_S):
                    self.stats.add(restarts=1)
                    slot.replace("no answer to a cut")
                break
        self._deliver(answered)
        return chunk.holding

    def _on_failure(self, slot: _Worker, job: _Job, outcome: str
                    ) -> list[tuple[_Job, VerifyResult]]:
        """Replace the worker; the job's answer, if it gets one now (else it is requeued)."""
        self.stats.add(restarts=1)
        if outcome == _Outcome.CANCELLED:
            slot.replace("its request was cancelled")
            self.stats.add(cancelled=1)
            self._left(job.ticket, 1)
            return []
        if outcome == _Outcome.TIMEOUT:
            slot.replace(f"no answer within {self.timeout_s:g} s")
            return [(job, self._failed(job, VerifyReason.timeout, f"no answer within "
                                       f"{self.timeout_s:g} s; worker killed"))]
        slot.replace(outcome.replace("died", "the worker died", 1))
        assert job.deadline is not None
        if job.retried:
            return [(job, self._failed(job, VerifyReason.error,
                                       f"verifier worker died twice: {job.retried}; {outcome}"))]
        if job.deadline <= time.monotonic():
            return [(job, self._failed(job, VerifyReason.timeout,
                                       f"worker died ({outcome}); no time left for a retry"))]
        job.retried = outcome
        self.stats.add(retries=1)
        self._requeue([job])
        return []

    def _deliver(self, answered: list[tuple[_Job, VerifyResult]]) -> None:
        """Hand results to their tickets; count them."""
        for job, result in answered:
            job.ticket.deliver(job.index, result)
        if answered:
            self.stats.add(items=len(answered), errors=sum(
                r.reason is VerifyReason.error for _, r in answered), timeouts=sum(
                r.reason is VerifyReason.timeout for _, r in answered))
            self._left(answered[0][0].ticket, len(answered))

    def _left(self, ticket: Ticket, count: int) -> None:
        """``count`` of the ticket's items left the pool (answered or dropped)."""
        if ticket.client is None or count == 0:
            return
        with self._cond:
            self._queued[ticket.client] -= count
            if self._queued[ticket.client] <= 0:
                del self._queued[ticket.client]

    def _requeue(self, jobs: list[_Job]) -> None:
        """Put unstarted (or retried) jobs back at the front of the queue, in order."""
        if not jobs:
            return
        ticket = jobs[0].ticket
        with self._cond:
            if ticket.cancelled:
                dropped = len(jobs)
            else:  # first in its submission; the submission keeps its turn (or waits one)
                dropped = 0
                self._groups.setdefault(ticket, deque()).extendleft(reversed(jobs))
                self._cond.notify()
        if dropped:
            self.stats.add(cancelled=dropped)
            self._left(ticket, dropped)

    def submit_many(self, items: Sequence[VerifyRequest], client: str | None = None,
                    deadline_from_now: bool = False) -> Ticket:
        """Queue a submission; with a ``client``, refuse (``QueueFull``) beyond its bound.

        With ``deadline_from_now`` every item is due ``timeout_s`` after this call, queueing
        included (an item still waiting then is answered ``timeout``): the bound a service's
        client sees. Without it the time starts when an item starts (for large local batches).
        """
        if self._closed:
            raise RuntimeError("LocalVerifier is closed")
        ticket = Ticket(self, len(items), client)
        if not items:
            ticket.future.set_result([])
            return ticket
        due = time.monotonic() + self.timeout_s if deadline_from_now else None
        jobs = deque(_Job(ticket, i, item, deadline=due) for i, item in enumerate(items))
        with self._cond:
            if client is not None:
                queued = self._queued[client]
                if queued + len(jobs) > self.max_queued_per_client:
                    raise QueueFull(client, queued, self.max_queued_per_client)
                self._queued[client] = queued + len(jobs)
            self._groups[ticket] = jobs
            self._cond.notify(min(len(jobs), self.workers + WARM_SPARES))
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Drop a submission's queued items; a running one is stopped by its dispatcher."""
        with self._cond:
            if ticket.cancelled:
                return
            ticket.cancelled = True
            dropped = len(self._groups.pop(ticket, ()))
        ticket.future.cancel()
        if dropped:
            self.stats.add(cancelled=dropped)
            self._left(ticket, dropped)

    def submit(self, item: VerifyRequest) -> Future[VerifyResult]:
        """Queue one item; the future resolves to its result."""
        future: Future[VerifyResult] = Future()

        def relay(done: Future[list[VerifyResult]]) -> None:
            if done.cancelled():
                future.cancel()
            else:
                future.set_result(done.result()[0])

        self.submit_many([item]).future.add_done_callback(relay)
        return future

    def verify(self, response: str, reference: str) -> VerifyResult:
        """Verify one response against one reference."""
        return self.submit_many([VerifyRequest(response=response, reference=reference)]
                                ).results()[0]

    def verify_batch(self, items: Sequence[VerifyRequest]) -> list[VerifyResult]:
        """Verify many items in parallel; results in input order."""
        return self.submit_many(items).results()

    async def averify(self, response: str, reference: str) -> VerifyResult:
        """Async form of :meth:`verify`."""
        item = VerifyRequest(response=response, reference=reference)
        return (await self.submit_many([item]).aresults())[0]

    async def averify_batch(self, items: Sequence[VerifyRequest]) -> list[VerifyResult]:
        """Async form of :meth:`verify_batch`."""
        return await self.submit_many(items).aresults()

    def close(self) -> None:
        """Finish what is queued, then stop every worker; idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            threads = list(self._threads)  # no worker is added once closed
        for thread in threads:
            thread.join(timeout=10)

    def __enter__(self) -> LocalVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
