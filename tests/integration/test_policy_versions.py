"""Online rewriting, part one (real Redis, fresh prefixes): the trainer publishes policy
versions, workers load them between batches, and every example records the version that
produced it; a worker killed while reloading loses nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mindgap.queue import Queue
from mindgap.queue.policy import StaleVersionError
from mindgap.rewriter.engines.base import PolicyReloadUnsupported
from mindgap.rewriter.engines.scripted import ScriptedEngine, bernoulli_script
from mindgap.rewriter.worker import Worker
from mindgap.schemas import AlignedExample
from mindgap.verifier.pool import LocalVerifier
from tests.conftest import REDIS_URL
from tests.training import answerable_problems, job_results, train_beside_scripted_worker
from tests.worker_process import problems, start_workers, stop, wait_finished


def _version(example: AlignedExample) -> int:
    """The version in the example's id (``problem:vN``), checked against its behavior."""
    version = int(example.id.rsplit(":v", 1)[1])
    if example.behavior is not None:
        assert example.behavior.policy_version == version
    return version


def test_versions_only_grow(prefix: str) -> None:
    queue = Queue.from_url(REDIS_URL, prefix)
    assert queue.policy.current() is None
    queue.policy.publish(1, "/w/v1", step=2)
    queue.policy.publish(2, "/w/v2", step=4)
    with pytest.raises(StaleVersionError, match="2 is not newer than the published 2"):
        queue.policy.publish(2, "/w/other", step=5)
    current = queue.policy.current()
    assert current is not None and (current.version, current.path, current.step) == \
        (2, "/w/v2", 4)
    assert [v.version for v in queue.policy.history()] == [1, 2]


def test_worker_follows_versions_between_batches(prefix: str) -> None:
    queue = Queue.from_url(REDIS_URL, prefix)
    engine = ScriptedEngine(bernoulli_script(1.0))
    with LocalVerifier(workers=1) as verifier:
        worker = Worker(queue, engine, verifier, "w0", batch_size=2, block_ms=100)
        queue.jobs.create("j", answerable_problems(6))
        assert worker.run_once() == 2  # version 0: nothing published yet
        queue.policy.publish(1, "/w/v1", step=1)
        assert worker.run_once() == 2
        queue.policy.publish(2, "/w/v2", step=2)
        queue.policy.publish(3, "/w/v3", step=3)  # two versions between batches: the newest
        assert worker.run_once() == 2
    assert engine.loaded == [("/w/v1", 1), ("/w/v3", 3)]
    assert [_version(e) for e in job_results(queue, "j")] == [0, 0, 1, 1, 3, 3]
    assert len(worker.stats.reload_s) == 2


class FrozenEngine(ScriptedEngine):
    """An engine that cannot load weights (as the openai engine without an update endpoint)."""

    def load_policy(self, path: str, version: int) -> None:
        raise PolicyReloadUnsupported("the FrozenEngine cannot load new weights")


def test_unloadable_version_is_reported_once_and_work_goes_on(
        prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    queue = Queue.from_url(REDIS_URL, prefix)
    queue.policy.publish(1, "/w/v1", step=1)
    queue.jobs.create("j", answerable_problems(4))
    with LocalVerifier(workers=1) as verifier:
        worker = Worker(queue, FrozenEngine(bernoulli_script(1.0)), verifier, "w0",
                        batch_size=2, block_ms=100)
        assert worker.run_once() == 2 and worker.run_once() == 2
    warnings = [r.message for r in caplog.records if "not loaded" in r.getMessage()]
    assert len(warnings) == 1
    assert [_version(e) for e in job_results(queue, "j")] == [0, 0, 0, 0]


def test_trainer_versions_reach_the_workers_and_the_examples(prefix: str,
                                                              tmp_path: Path) -> None:
    """A trainer on the live stream publishing every 2 steps, a worker held back by
    backpressure so that it rewrites while training runs: versions propagate."""
    from mindgap.trainer.config import TrainConfig
    from mindgap.trainer.testing import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    queue = Queue.from_url(REDIS_URL, prefix)
    queue.jobs.create("live", answerable_problems(24))
    config = TrainConfig(model=str(model), redis=REDIS_URL, redis_prefix=prefix, job="live",
                         out=str(tmp_path / "train"), loss="is", max_steps=100,
                         global_batch=4, batch_tokens=256, lr=1e-3, progress=False,
                         redis_block_ms=100, publish_every=2)
    summary, ended, engine = train_beside_scripted_worker(
        queue, config, batch_size=2, high_water=4, low_water=2, block_ms=100)
    assert ended and summary["stopped"] == "exhausted"
    published = queue.policy.history()
    assert [v.version for v in published] == list(range(1, summary["steps"] // 2 + 1))
    assert all((Path(v.path) / "model.safetensors").exists() for v in published)
    assert all(v.step == 2 * v.version for v in published)
    examples = job_results(queue, "live")
    assert sorted(e.problem_id for e in examples) == sorted(f"p{i}" for i in range(24))
    versions = [_version(e) for e in examples]
    assert versions == sorted(versions) and versions[0] == 0 and versions[-1] >= 2
    assert [v for _, v in engine.loaded] == sorted({v for _, v in engine.loaded})
    assert {v for _, v in engine.loaded} <= {v.version for v in published}


def test_worker_killed_while_reloading_loses_nothing(prefix: str) -> None:
    queue = Queue.from_url(REDIS_URL, prefix)
    queue.jobs.create("job", problems(12))
    slow = start_workers(REDIS_URL, prefix, 1, delay_s=0.2, reload_s=60)
    try:
        deadline = time.monotonic() + 60
        while (queue.jobs.status("job").done or 0) < 4:
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.05)
        queue.policy.publish(1, "/w/v1", step=1)
        while not any(b.state == "reloading" for b in queue.heartbeats.workers()):
            assert time.monotonic() < deadline, "the worker never reloaded"
            time.sleep(0.05)
        slow[0].kill()  # SIGKILL in the middle of loading the new weights
        fresh = start_workers(REDIS_URL, prefix, 1, delay_s=0.0, first=1)
        try:
            status = wait_finished(queue, "job", 120)
        finally:
            stop(fresh)
    finally:
        stop(slow)
    examples = job_results(queue, "job")
    ids = [e.problem_id for e in examples]
    assert len(ids) == len(set(ids)) == 12 and status.done == 12 and status.failed == 0
    versions = [_version(e) for e in examples]
    assert versions[:4] == [0] * 4 and set(versions[4:]) <= {0, 1} and versions[-1] == 1


def test_transformers_engine_loads_a_new_policy(tmp_path: Path) -> None:
    from mindgap.rewriter.engines.transformers_engine import TransformersEngine
    from mindgap.trainer.testing import save_tiny_model

    first, second = save_tiny_model(tmp_path / "a", seed=0), save_tiny_model(tmp_path / "b", seed=1)
    engine = TransformersEngine(model=str(first))
    before = engine.score("abc", [100, 101, 102])
    engine.load_policy(str(second), 7)
    after = engine.score("abc", [100, 101, 102])
    expected = TransformersEngine(model=str(second)).score("abc", [100, 101, 102])
    assert engine.policy_version == 7
    assert after == pytest.approx(expected, abs=1e-6) and after != pytest.approx(before)
    assert engine.generate(["abc"], 1, 1.0, 1.0, 4, seed=0)[0][0].token_ids
