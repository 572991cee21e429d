"""Online rewriting, part two (real Redis, fresh prefixes): a trainer drops examples sampled
too many policy versions ago and re-queues their problems exactly once; the re-queued
problems are rewritten with the newest version; nothing is lost or trained twice."""

from __future__ import annotations

import threading
from pathlib import Path

from mindgap.queue import JobStatus, Queue
from mindgap.queue.models import Requeue
from mindgap.rewriter.engines.scripted import ScriptedEngine, bernoulli_script
from mindgap.rewriter.worker import Worker
from mindgap.trainer.redis_source import RedisStream
from mindgap.verifier.pool import LocalVerifier
from tests.conftest import REDIS_URL
from tests.training import (
    answerable_problems,
    job_results,
    steps,
    train_beside_scripted_worker,
)


def _rewrite_all(queue: Queue, engine: ScriptedEngine, verifier: LocalVerifier) -> None:
    worker = Worker(queue, engine, verifier, "w0", batch_size=4, block_ms=50)
    while worker.run_once():
        pass


def test_requeue_is_atomic_and_once_per_problem(prefix: str) -> None:
    queue = Queue.from_url(REDIS_URL, prefix)
    queue.jobs.create("j", answerable_problems(4), ttl_s=3600)
    with LocalVerifier(workers=1) as verifier:
        _rewrite_all(queue, ScriptedEngine(bernoulli_script(1.0)), verifier)
        assert queue.jobs.status("j").status == JobStatus.COMPLETED
        entries = queue.aligned.read_new("t", count=10, block_ms=0)
        assert len(entries) == 4
        first_id, first = entries[0]
        assert queue.aligned.requeue(first_id, first) is Requeue.REQUEUED
        assert queue.aligned.requeue(first_id, first) is Requeue.SETTLED  # a repeated call
        status = queue.jobs.status("j")
        assert (status.status, status.done, status.requeued, status.finished) == \
            (JobStatus.RUNNING, 3, 1, None)
        assert queue.redis.ttl(queue.keys.job("j")) == -1  # reopened: no expiry while open
        assert sorted(e.problem_id for e in job_results(queue, "j")) == ["p1", "p2", "p3"]
        assert queue.tasks.depth().undelivered == 1
        # the dropped entry is acknowledged: a restarted trainer does not read it again
        assert [eid for eid, _ in queue.aligned.read_pending("t", 10)] == \
            [eid for eid, _ in entries[1:]]
        _rewrite_all(queue, ScriptedEngine(bernoulli_script(1.0), policy_version=3), verifier)
    status = queue.jobs.status("j")
    assert (status.status, status.done, status.requeued) == (JobStatus.COMPLETED, 4, 1)
    results = job_results(queue, "j")
    assert sorted(e.problem_id for e in results) == ["p0", "p1", "p2", "p3"]
    again_id, again = queue.aligned.read_new("t", 10, 0)[0]
    assert (again.problem_id, again.behavior.policy_version) == ("p0", 3)
    assert queue.aligned.requeue(again_id, again) is Requeue.KEEP  # once per problem
    assert queue.redis.ttl(queue.keys.job("j")) > 0  # finished again: expires again
    counts = queue.aligned.staleness()
    assert (counts.dropped, counts.requeued) == (1, 1)


def test_cancelled_and_imported_examples(prefix: str) -> None:
    queue = Queue.from_url(REDIS_URL, prefix)
    queue.jobs.create("j", answerable_problems(2))
    with LocalVerifier(workers=1) as verifier:
        Worker(queue, ScriptedEngine(bernoulli_script(1.0)), verifier, "w0", batch_size=1,
               block_ms=50).run_once()
    queue.jobs.cancel("j")
    (eid, example), = queue.aligned.read_new("t", 10, 0)
    assert queue.aligned.requeue(eid, example) is Requeue.CANCELLED
    assert queue.tasks.depth().length == 0
    imported_id, = queue.aligned.publish([example.model_copy(update={"id": "x:v0"})])
    (got_id, got), = queue.aligned.read_new("t", 10, 0)
    assert got_id == imported_id
    assert queue.aligned.requeue(got_id, got) is Requeue.KEEP  # no job to re-queue into
    assert queue.aligned.staleness().dropped == 1


def test_trainer_drops_stale_examples_and_each_problem_is_trained_once(
        prefix: str) -> None:
    """Version 2 is published before the trainer starts, the job's examples are all of
    version 0: with max_staleness 1 the trainer drops every one, re-queues its problem, and
    trains on the rewrites of version 2 that the worker makes meanwhile."""
    queue = Queue.from_url(REDIS_URL, prefix)
    queue.jobs.create("j", answerable_problems(6))
    with LocalVerifier(workers=1) as verifier:
        engine = ScriptedEngine(bernoulli_script(1.0))
        _rewrite_all(queue, engine, verifier)
        queue.policy.publish(1, "/w/v1", step=1)
        queue.policy.publish(2, "/w/v2", step=2)
        stream = RedisStream(queue, consumer="t", job="j", block_ms=50, max_staleness=1)
        worker = Worker(queue, engine, verifier, "w0", batch_size=2, block_ms=50)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        try:
            batch = stream.next_batch(6)
            metrics = stream.metrics()
            stream.commit([k for k, _ in batch])
            assert stream.next_batch(6) == []  # the job is finished and drained
        finally:
            worker.stop.set()
            runner.join(timeout=30)
    assert sorted(e.problem_id for _, e in batch) == [f"p{i}" for i in range(6)]
    assert {e.behavior.policy_version for _, e in batch} == {2}
    assert stream.staleness.histogram == {0: 6}
    assert (stream.staleness.dropped, stream.staleness.requeued) == (6, 6)
    status = queue.jobs.status("j")
    assert (status.status, status.done, status.requeued) == (JobStatus.COMPLETED, 6, 6)
    assert queue.aligned.staleness().trained == {0: 6}
    assert metrics["policy_version"] == 2 and metrics["staleness_max"] == 0
    assert metrics["stale_requeued"] == 6


def test_a_training_run_with_a_staleness_bound_loses_and_repeats_nothing(
        prefix: str, tmp_path: Path) -> None:
    """A real trainer (tiny model) publishing every step with max_staleness 0, and a worker
    allowed to run ahead: stale examples are dropped and re-queued while training runs, and
    every problem is trained on exactly once."""
    from mindgap.trainer.config import TrainConfig
    from mindgap.trainer.testing import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    queue = Queue.from_url(REDIS_URL, prefix)
    queue.jobs.create("live", answerable_problems(16))
    config = TrainConfig(model=str(model), redis=REDIS_URL, redis_prefix=prefix, job="live",
                         out=str(tmp_path / "train"), loss="is", max_steps=100,
                         global_batch=2, batch_tokens=256, lr=1e-3, progress=False,
                         redis_block_ms=50, publish_every=1, max_staleness=0,
                         log_example_ids=True)
    summary, ended, _ = train_beside_scripted_worker(queue, config, batch_size=4,
                                                     high_water=8, low_water=4, block_ms=50)
    assert ended and summary["stopped"] == "exhausted"
    records = steps(tmp_path / "train")
    trained = [i.split(":v")[0] for r in records for i in r["example_ids"]]
    assert sorted(trained) == sorted(f"p{i}" for i in range(16))  # each problem once
    stale = summary["staleness"]
    assert stale["stale_requeued"] >= 1 and stale["stale_dropped"] == stale["stale_requeued"]
    status = queue.jobs.status("live")
    assert (status.status, status.done, status.requeued) == \
        (JobStatus.COMPLETED, 16, stale["stale_requeued"])
    assert sorted(e.problem_id for e in job_results(queue, "live")) == \
        sorted(f"p{i}" for i in range(16))  # one result per problem: the one trained on
    assert sum(stale["histogram"].values()) == 16  # the scripted responses all have behavior
    # trained beyond the bound only where the problem had been re-queued once already
    assert sum(n for s, n in stale["histogram"].items() if int(s) > 0) == stale["stale_trained"]
    assert all("staleness_mean" in r and "policy_version" in r for r in records)
    assert records[-1]["stale_requeued"] == stale["stale_requeued"]
