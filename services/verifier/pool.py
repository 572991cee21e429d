"""``LocalVerifier``: a pool of sandboxed worker processes with a hard per-item timeout.

The parent enforces the wall timeout: a worker that does not answer in time has its
process group killed and is replaced; a worker that dies mid-item is replaced and the
item retried once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from mindgap.config import VerifierSettings
from mindgap.schemas import VerifyReason, VerifyRequest, VerifyResult
from mindgap.verifier.channel import Channel
from mindgap.verifier.sandbox import SandboxLimits

log = logging.getLogger(__name__)

KILL_GRACE_S = 0.5
"""How long past the item timeout the parent waits before killing a worker."""
READY_TIMEOUT_S = 60.0
CHUNK = 64
"""Most items sent to one worker in one message (results stream back one by one)."""
_WARNED_NO_NETNS = False


class WorkerDied(RuntimeError):
    """The worker process exited while handling an item."""


@dataclass
class PoolStats:
    """Counters a service exports as metrics."""

    items: int = 0
    timeouts: int = 0
    restarts: int = 0
    errors: int = 0
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

    def run(self, items: list[VerifyRequest], timeout_s: float
            ) -> tuple[list[VerifyResult], str | None]:
        """Results of ``items`` in order, streamed back one by one by the worker.

        Returns early with the results so far and ``"timeout"`` (the next item ran out of
        time; the worker is killed and replaced) or ``"died: ..."`` (the worker exited).
        """
        results: list[VerifyResult] = []
        try:
            if self.process is None or self.process.poll() is not None:
                self.kill()
                self.start()
            if not self._ready:
                self._await_ready()
            assert self._channel is not None
            self._channel.send([[[i.response, i.reference] for i in items], timeout_s])
            for _ in items:
                if not self._channel.poll(timeout_s + KILL_GRACE_S):
                    self.kill()
                    self.start()
                    return results, "timeout"
                results.append(VerifyResult.model_validate(self._channel.recv()))
            return results, None
        except (EOFError, OSError, ValueError, WorkerDied) as exc:
            self.kill()
            self.start()
            return results, f"died: {str(exc) or type(exc).__name__}"

    def stop(self) -> None:
        """Close the pipes (the worker exits on end of file), then make sure it is gone."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2)
        self.kill()


@dataclass
class _Job:
    item: VerifyRequest
    future: Future[VerifyResult]


class LocalVerifier:
    """Verify in a pool of sandboxed processes; thread-safe, sync and async entry points."""

    def __init__(self, workers: int | None = None, timeout_s: float | None = None,
                 memory_mb: int | None = None) -> None:
        settings = VerifierSettings()
        self.workers = workers or settings.workers
        self.timeout_s = timeout_s or settings.timeout_s
        limits = SandboxLimits(memory_mb=memory_mb or settings.memory_mb)
        self.stats = PoolStats()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._slots = [_Worker(limits) for _ in range(self.workers)]
        for slot in self._slots:
            slot.start()
        self._threads = [threading.Thread(target=self._serve, args=(slot,), daemon=True,
                                          name=f"verifier-dispatch-{i}")
                         for i, slot in enumerate(self._slots)]
        for thread in self._threads:
            thread.start()
        self._closed = False

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and operators)."""
        return [pid for slot in self._slots if (pid := slot.pid) is not None]

    def _take(self) -> tuple[list[_Job], bool]:
        """The next job (blocking) and up to ``CHUNK - 1`` more already waiting; whether a
        stop sentinel was taken."""
        first = self._jobs.get()
        if first is None:
            return [], True
        jobs = [first]
        while len(jobs) < CHUNK:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _serve(self, slot: _Worker) -> None:
        while True:
            jobs, stopping = self._take()
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            if jobs:
                for job, result in zip(jobs, self._run(slot, [j.item for j in jobs]),
                                       strict=True):
                    job.future.set_result(result)
            if stopping:
                slot.stop()
                return

    def _failed(self, item: VerifyRequest, reason: VerifyReason, detail: str,
                start: float) -> VerifyResult:
        return VerifyResult(correct=False, extracted=None, reference=item.reference[:200],
                            reason=reason, elapsed_ms=(time.perf_counter() - start) * 1000,
                            detail=detail)

    def _run(self, slot: _Worker, items: list[VerifyRequest]) -> list[VerifyResult]:
        """Verify ``items`` on one worker; a timed-out item is answered ``timeout``, an item
        whose worker died is retried once alone, then answered ``error``."""
        start = time.perf_counter()
        results: list[VerifyResult] = []
        while len(results) < len(items):
            pending = items[len(results):]
            done, failure = slot.run(pending, self.timeout_s)
            results += done
            self.stats.add(items=len(done),
                           timeouts=sum(r.reason is VerifyReason.timeout for r in done))
            if failure is None:
                continue
            item = pending[len(done)]
            self.stats.add(items=1, restarts=1)
            if failure == "timeout":
                self.stats.add(timeouts=1)
                results.append(self._failed(item, VerifyReason.timeout, f"no answer within "
                                            f"{self.timeout_s:g} s; worker killed", start))
                continue
            retry, again = slot.run([item], self.timeout_s)
            if retry:
                results += retry
            elif again == "timeout":
                self.stats.add(timeouts=1, restarts=1)
                results.append(self._failed(item, VerifyReason.timeout, f"no answer within "
                                            f"{self.timeout_s:g} s; worker killed", start))
            else:
                self.stats.add(errors=1, restarts=1)
                results.append(self._failed(item, VerifyReason.error,
                                            f"verifier worker died twice: {failure}; {again}",
                                            start))
        return results

    def submit(self, item: VerifyRequest) -> Future[VerifyResult]:
        """Queue one item; the future resolves to its result."""
        if self._closed:
            raise RuntimeError("LocalVerifier is closed")
        future: Future[VerifyResult] = Future()
        self._jobs.put(_Job(item, future))
        return future

    def verify(self, response: str, reference: str) -> VerifyResult:
        """Verify one response against one reference."""
        return self.submit(VerifyRequest(response=response, reference=reference)).result()

    def verify_batch(self, items: Sequence[VerifyRequest]) -> list[VerifyResult]:
        """Verify many items in parallel; results in input order."""
        futures = [self.submit(item) for item in items]
        return [future.result() for future in futures]

    async def averify(self, response: str, reference: str) -> VerifyResult:
        """Async form of :meth:`verify`."""
        item = VerifyRequest(response=response, reference=reference)
        return await asyncio.wrap_future(self.submit(item))

    async def averify_batch(self, items: Sequence[VerifyRequest]) -> list[VerifyResult]:
        """Async form of :meth:`verify_batch`."""
        return list(await asyncio.gather(*(asyncio.wrap_future(self.submit(i)) for i in items)))

    def close(self) -> None:
        """Stop every worker; idempotent."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> LocalVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
