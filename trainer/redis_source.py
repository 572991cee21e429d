"""Aligned examples from the live Redis stream ``P:aligned`` (service mode).

The training run is one consumer of the group ``trainers`` (rank 0 talks to Redis and
broadcasts each global batch to the other ranks, so the run's data does not depend on the
number of ranks). An entry moves through three states:

1. *delivered* (pending in the group): read by ``next_batch``;
2. *trained*: ``commit`` after the optimizer step that used it; reported to Redis with
   ``AlignedStream.set_trained`` so the backpressure lag does not count it;
3. *acknowledged*: ``settle`` after a checkpoint holds the step (or the run ended); the
   stream is then trimmed of what every consumer group has acknowledged (retention).

Acknowledging only what a checkpoint holds is what makes a hard kill lose nothing: a resumed
run (same consumer, restored by ``load_state``) first re-reads the consumer's pending
entries, acknowledges those the checkpoint already covers (id <= the committed id) and
serves the rest again, in the original order, before new entries. Entries reach a consumer in
increasing id order, so "everything delivered up to id X" is the whole position.

A Redis outage, however long, is waited out (``Outage``: backoff, logged once when it
begins and once when it ends). A reply lost to a dropped connection cannot lose an entry:
every read first serves this consumer's pending entries after the last one served (they
can only come from a lost reply) before reading new ones.

With ``max_staleness`` (online rewriting), rank 0 reads the newest published policy version
before each batch and drops model responses sampled too many versions before it, re-queueing
their problems (``mindgap.trainer.staleness``): a dropped entry is acknowledged by the same
script that re-queues it, so a kill between the two cannot re-queue it twice or lose it.

A run stops when ``next_batch`` returns nothing: with ``job``, once the job is finished and
every aligned entry added before it finished has been delivered; without, after
``idle_timeout_s`` without a new entry (``None``: wait for ever; ``max_steps`` ends the run).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from mindgap.queue import FINISHED, Queue, entry_order
from mindgap.queue.store import Outage
from mindgap.schemas import AlignedExample
from mindgap.trainer.sources import ExampleStream
from mindgap.trainer.staleness import StalenessBound

log = logging.getLogger(__name__)

Batch = list[tuple[str, AlignedExample]]
_PAGE = 256


class RedisStream(ExampleStream):
    """The trainers' stream as an ``ExampleStream``: global batches of ``n`` entries in
    delivery order, rank ``r`` keeping offsets ``r, r + world_size, ...`` (as ``FileStream``).

    ``broadcast(obj)`` sends rank 0's object to every rank and returns it (required when
    ``world_size > 1``). ``block_ms``: the longest single wait on the stream.
    ``max_staleness``: the bound in policy versions (None: none).
    """

    def __init__(self, queue: Queue, *, consumer: str, job: str | None = None, rank: int = 0,
                 world_size: int = 1, broadcast: Callable[[Any], Any] | None = None,
                 block_ms: int = 1000, idle_timeout_s: float | None = None,
                 max_staleness: int | None = None) -> None:
        if world_size > 1 and broadcast is None:
            raise ValueError("several ranks need a broadcast function")
        self.queue, self.consumer, self.job = queue, consumer, job
        self.stream = queue.aligned
        self.rank, self.world_size = rank, world_size
        self._broadcast = broadcast or (lambda obj: obj)
        self.block_ms, self.idle_timeout_s = block_ms, idle_timeout_s
        self._committed_id: str | None = None   # every delivered entry <= it is trained
        self._replay: deque[tuple[str, AlignedExample]] = deque()
        self._recovered = False                 # the consumer's pending entries were read
        # global ids of each batch not committed, and its model responses by staleness
        self._issued: deque[tuple[list[str], Counter[int]]] = deque()
        self.staleness = StalenessBound(max_staleness)
        self._batch_staleness: Counter[int] = Counter()  # of the last batch served
        self._trained: list[str] = []           # committed, not yet acknowledged
        self._finished = False
        self._drain_mark: str | None = None
        self._last_id = "0"                     # the newest entry served (rank 0)
        self._outage = Outage(f"trainer {consumer}")
        if rank == 0 and job is not None:
            status = self._outage.call(lambda: queue.jobs.status(job))
            if status is None:
                raise ValueError(f"job {job!r} not found in Redis (prefix {queue.prefix!r})")
            if not status.feed_trainer:
                raise ValueError(f"job {job!r} was submitted without feeding the trainer: "
                                 "its results are not in the trainers' stream")

    # --- reading (rank 0) ---------------------------------------------------------------

    def _recover(self) -> None:
        """Read this consumer's pending entries: acknowledge those a checkpoint covers, queue
        the others to be served again."""
        covered: list[str] = []
        while page := self._pending_after(self._last_id):
            for entry_id, example in page:
                if self._committed_id is not None and \
                        entry_order(entry_id) <= entry_order(self._committed_id):
                    covered.append(entry_id)
                else:
                    self._replay.append((entry_id, example))
        self._outage.call(lambda: self.stream.ack(covered))
        self._outage.call(lambda: self.stream.set_trained(self.consumer, 0))
        if covered or self._replay:
            log.info("consumer %s: %d pending entries already in the checkpoint acknowledged, "
                     "%d served again", self.consumer, len(covered), len(self._replay))
        self._recovered = True

    def _pending_after(self, after: str, count: int = _PAGE) -> Batch:
        """This consumer's pending entries after ``after`` (``_last_id`` moves past them)."""
        page = self._outage.call(lambda: self.stream.read_pending(self.consumer, count,
                                                                  after=after))
        if page:
            self._last_id = page[-1][0]
        return page

    def _read_new(self, count: int) -> Batch:
        """Entries lost in a dropped reply first (pending after ``_last_id``), else new ones."""
        got = self._pending_after(self._last_id, count)
        if not got:
            got = self._outage.call(lambda: self.stream.read_new(self.consumer, count,
                                                                 self.block_ms))
            if got:
                self._last_id = got[-1][0]
        return got

    def _job_drained(self) -> bool:
        assert self.job is not None
        job = self.job
        status = self._outage.call(lambda: self.queue.jobs.status(job))
        if status is None:
            raise RuntimeError(f"job {self.job!r} disappeared from Redis")
        if status.status not in FINISHED:
            self._drain_mark = None  # a re-queued problem reopened the job: mark again later
            return False
        if self._drain_mark is None:  # every entry of the job was added before this id
            self._drain_mark = self._outage.call(self.stream.last_id)
        mark = self._drain_mark
        return self._outage.call(lambda: self.stream.delivered_through(mark))

    def _admit(self, entries: Batch, counts: Counter[int]) -> Batch:
        """The entries to train on (stale ones dropped and re-queued); ``counts`` gets their
        model responses by staleness."""
        kept, batch_counts = self.staleness.admit(
            entries, lambda eid, ex: self._outage.call(lambda: self.stream.requeue(eid, ex)))
        counts.update(batch_counts)
        return kept

    def _read(self, n: int) -> tuple[Batch, Counter[int]]:
        if not self._recovered:
            self._recover()
        current = self._outage.call(self.queue.policy.current)
        self.staleness.version = current.version if current else 0
        out: Batch = []
        counts: Counter[int] = Counter()
        while self._replay and len(out) < n:
            out += self._admit([self._replay.popleft()], counts)
        last_new = time.monotonic()
        while len(out) < n and not self._finished:
            got = self._read_new(n - len(out))
            if got:
                out += self._admit(got, counts)
                last_new = time.monotonic()
            elif self.job is not None:
                self._finished = self._job_drained()
            elif self.idle_timeout_s is not None:
                self._finished = time.monotonic() - last_new >= self.idle_timeout_s
        return out, counts

    # --- ExampleStream ------------------------------------------------------------------

    def next_batch(self, n: int) -> Batch:
        batch, counts = self._read(n) if self.rank == 0 else (None, Counter())
        batch = self._broadcast(batch)
        self._issued.append(([entry_id for entry_id, _ in batch], counts))
        self._batch_staleness = counts
        return [item for i, item in enumerate(batch) if i % self.world_size == self.rank]

    def commit(self, keys: Sequence[str]) -> None:
        """Mark the oldest uncommitted batch trained (``keys``: this rank's share of it)."""
        if not self._issued:
            raise RuntimeError("commit without an uncommitted batch")
        ids, counts = self._issued.popleft()
        if not set(keys) <= set(ids):
            raise ValueError("commit of keys outside the oldest uncommitted batch")
        if ids:
            self._trained += ids
            self._committed_id = max(ids, key=entry_order)
        if self.rank == 0:
            trained = len(self._trained)
            self._outage.call(lambda: self.stream.set_trained(self.consumer, trained))
            self._outage.call(lambda: self.stream.count_trained(counts))
            self.staleness.histogram.update(counts)

    def metrics(self) -> dict[str, float]:
        """The last batch's policy version and staleness, and the run's stale counts."""
        return self.staleness.metrics(self._batch_staleness)

    def settle(self) -> None:
        """Acknowledge every trained entry (a checkpoint now holds them, or the run ended),
        then trim what every consumer group has acknowledged."""
        if self.rank == 0 and self._trained:
            trained = self._trained
            self._outage.call(lambda: self.stream.ack(trained))
            self._outage.call(lambda: self.stream.set_trained(self.consumer, 0))
            self._outage.call(self.stream.trim)
        self._trained = []

    def state(self) -> dict[str, Any]:
        return {"kind": "redis", "prefix": self.queue.prefix, "consumer": self.consumer,
                "job": self.job, "committed_id": self._committed_id}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "redis":
            raise ValueError(f"not a Redis source position: {state}")
        if state.get("prefix") != self.queue.prefix:
            raise ValueError(f"the saved position is for prefix {state.get('prefix')!r}, "
                             f"not {self.queue.prefix!r}")
        if state["consumer"] != self.consumer:
            log.info("resuming as consumer %s (from the checkpoint)", state["consumer"])
        self.consumer = state["consumer"]
        self._committed_id = state.get("committed_id")
        self._replay.clear()
        self._issued.clear()
        self._trained = []
        self._recovered = False
        self._last_id = "0"

    def close(self) -> None:
        self.queue.close()
