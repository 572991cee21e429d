"""The trainer on the live Redis stream (real Redis at 127.0.0.1:6379, a fresh key prefix per
test, tiny random Llama): the source's positions, exact resume after a stop and after a
SIGKILL, and streaming while a writer completes a job's tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import torch

from mindgap.queue import TRAINERS, Queue
from mindgap.schemas import AlignedExample, Problem
from mindgap.trainer.config import TrainConfig
from mindgap.trainer.loop import train
from mindgap.trainer.redis_source import RedisStream
from mindgap.trainer.testing import save_tiny_model, synthetic_examples
from tests.conftest import drop_keys
from tests.training import (
    ROOT,
    kill_when,
    max_diff,
    steps,
    subprocess_env,
    train_beside_worker,
    weights,
)

URL = os.environ.get("MINDGAP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN = dict(loss="is", max_steps=6, global_batch=6, batch_tokens=40, lr=1e-2, warmup_steps=2,
           progress=False, log_example_ids=True, redis_block_ms=200)


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def make_queue() -> Iterator[Callable[[], Queue]]:
    """Queues under fresh prefixes on the shared Redis, deleted afterwards."""
    if not _redis_up():
        pytest.skip(f"no Redis at {URL}")
    made: list[Queue] = []

    def make() -> Queue:
        queue = Queue.from_url(URL, f"mgtest:{uuid.uuid4().hex[:12]}")
        made.append(queue)
        return queue

    yield make
    for queue in made:
        drop_keys(queue.redis, queue.prefix)
        queue.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return save_tiny_model(tmp_path_factory.mktemp("redis-trainer") / "model", seed=0)


def _config(model: Path, queue: Queue, out: Path, **kw) -> TrainConfig:
    return TrainConfig(**{**RUN, "redis": URL, "redis_prefix": queue.prefix, "model": str(model),
                          "out": str(out), **kw})


def _pending(queue: Queue) -> int:
    return int(queue.redis.xpending(queue.keys.aligned, TRAINERS)["pending"])


def _ids(batch: list[tuple[str, AlignedExample]]) -> list[str]:
    return [example.id for _, example in batch]


def test_source_acks_only_what_a_checkpoint_holds(make_queue):
    queue = make_queue()
    queue.aligned.publish(synthetic_examples(10))
    source = RedisStream(queue, consumer="c", block_ms=50, idle_timeout_s=0.2)
    first = source.next_batch(4)
    source.commit([k for k, _ in first])
    saved = source.state()
    source.settle()  # a checkpoint holds step 1
    assert _pending(queue) == 0 and queue.aligned.lag() == 6
    second = source.next_batch(4)
    source.commit([k for k, _ in second])  # trained, not yet in a checkpoint
    assert _pending(queue) == 4 and queue.aligned.lag() == 2  # trained entries are not lag
    third = source.next_batch(4)  # 2 left: a short batch after the idle timeout
    assert _ids(third) == ["ex-8", "ex-9"]
    assert source.next_batch(4) == []

    # Killed: a new run restored from the checkpoint of step 1 serves steps 2 and 3 again.
    resumed = RedisStream(queue, consumer="other", block_ms=50, idle_timeout_s=0.2)
    resumed.load_state(saved)
    assert resumed.consumer == "c"
    assert _ids(resumed.next_batch(4)) == _ids(second)
    assert queue.aligned.lag() == 6  # the dead run's "trained" record was reset
    resumed.commit([k for k, _ in second])
    after_second = resumed.state()  # a checkpoint is written... and the process dies here

    again = RedisStream(queue, consumer="c", block_ms=50, idle_timeout_s=0.2)
    again.load_state(after_second)
    assert _ids(again.next_batch(4)) == _ids(third)  # step 2's entries: acked, not served
    assert _pending(queue) == 2
    again.commit([k for k, _ in third])
    again.settle()
    assert _pending(queue) == 0 and queue.aligned.lag() == 0
    assert again.next_batch(4) == []


def test_source_shards_a_broadcast_batch(make_queue):
    queue = make_queue()
    queue.aligned.publish(synthetic_examples(6))
    leader = RedisStream(queue, consumer="c", rank=0, world_size=2, broadcast=lambda b: b,
                         block_ms=50)
    batch = leader.next_batch(6)
    assert _ids(batch) == ["ex-0", "ex-2", "ex-4"]
    follower = RedisStream(queue, consumer="c", rank=1, world_size=2,
                           broadcast=lambda _: list(zip(["1-0", "2-0", "3-0", "4-0", "5-0",
                                                         "6-0"], synthetic_examples(6),
                                                        strict=True)))
    assert _ids(follower.next_batch(6)) == ["ex-1", "ex-3", "ex-5"]
    with pytest.raises(ValueError, match="broadcast"):
        RedisStream(queue, consumer="c", rank=1, world_size=2)


def test_unknown_job_is_a_clear_error(make_queue):
    queue = make_queue()
    with pytest.raises(ValueError, match="job 'nope' not found"):
        RedisStream(queue, consumer="c", job="nope")


@pytest.fixture(scope="module")
def whole_run(model, tmp_path_factory) -> Path:
    """The uninterrupted 6-step run on 36 stream entries that interrupted runs reproduce."""
    if not _redis_up():
        pytest.skip(f"no Redis at {URL}")
    queue = Queue.from_url(URL, f"mgtest:{uuid.uuid4().hex[:12]}")
    try:
        queue.aligned.publish(synthetic_examples(36))
        out = tmp_path_factory.mktemp("redis-whole")
        summary = train(_config(model, queue, out))
        assert (summary["steps"], summary["stopped"]) == (6, "max_steps")
        assert _pending(queue) == 0 and queue.aligned.lag() == 0
    finally:
        drop_keys(queue.redis, queue.prefix)
        queue.close()
    served = [i for step in steps(out) for i in step["example_ids"]]
    assert served == [f"ex-{i}" for i in range(36)]  # stream order, each once
    return out


def test_stop_and_resume_is_exact(make_queue, model, whole_run, tmp_path):
    whole = whole_run
    queue = make_queue()
    queue.aligned.publish(synthetic_examples(36))
    first = train(_config(model, queue, tmp_path, stop_after=3))
    assert (first["steps"], first["stopped"]) == (3, "stop_after")
    assert _pending(queue) == 0 and queue.aligned.lag() == 18  # 18 acked, 18 unread
    second = train(_config(model, queue, tmp_path, resume="latest"))
    assert (second["start_step"], second["steps"]) == (3, 6)
    assert max_diff(weights(whole / "final"), weights(tmp_path / "final")) == 0.0
    assert [s["example_ids"] for s in steps(tmp_path)] == \
        [s["example_ids"] for s in steps(whole)]
    assert _pending(queue) == 0 and queue.aligned.lag() == 0


def test_killed_run_loses_nothing(make_queue, model, whole_run, tmp_path):
    """SIGKILL after a step that no checkpoint holds yet (checkpoints every 2 steps): its
    entries were never acknowledged, so the resumed run trains on them again, exactly."""
    whole = whole_run
    queue = make_queue()
    queue.aligned.publish(synthetic_examples(36))
    args = ["--redis", URL, "--redis-prefix", queue.prefix, "--model", str(model),
            "--out", str(tmp_path), "--save-every", "2", "--loss", "is", "--max-steps", "6",
            "--global-batch", "6", "--batch-tokens", "40", "--lr", "1e-2", "--warmup-steps",
            "2", "--no-progress", "--log-example-ids", "--redis-block-ms", "200"]
    env = subprocess_env()
    proc = subprocess.Popen([sys.executable, "-m", "mindgap.trainer", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "metrics.jsonl"
    kill_when(proc, lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3)
    if (tmp_path / "final").exists():
        pytest.skip("the run finished before the kill landed")
    unacked = _pending(queue)  # delivered after the last checkpoint, trained or not
    result = subprocess.run([sys.executable, "-m", "mindgap.trainer", *args, "--resume",
                             "latest"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["start_step"] in (2, 4) and summary["steps"] == 6
    if summary["start_step"] == 2:  # step 3 was trained but no checkpoint held it
        assert unacked >= 6
    assert max_diff(weights(whole / "final"), weights(tmp_path / "final")) == 0.0
    assert [s["example_ids"] for s in steps(tmp_path)] == \
        [s["example_ids"] for s in steps(whole)]
    assert _pending(queue) == 0 and queue.aligned.lag() == 0


def test_streaming_consumes_each_example_once_and_stops_with_the_job(make_queue, model,
                                                                      tmp_path):
    """A writer completes a 30-problem job in small bursts while the trainer runs; the
    trainer trains on every result exactly once and stops when the job is complete."""
    queue = make_queue()
    examples = synthetic_examples(30)
    problems = [Problem(id=e.problem_id, question="q", solution="s", answer="0")
                for e in examples]
    by_problem = {e.problem_id: e for e in examples}
    queue.jobs.create("live", problems)
    written: list[str] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            while len(written) < len(problems):
                tasks = queue.tasks.claim("writer", count=3, block_ms=100)
                queue.tasks.complete_many([(t, by_problem[t.problem.id]) for t in tasks])
                written.extend(t.problem.id for t in tasks)
                time.sleep(0.3)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    summary = train(_config(model, queue, tmp_path, job="live", max_steps=1000, global_batch=4))
    thread.join(timeout=60)
    assert not errors
    assert queue.jobs.status("live").status == "completed"
    assert summary["stopped"] == "exhausted" and summary["examples"] == 30
    served = [i for step in steps(tmp_path) for i in step["example_ids"]]
    assert sorted(served) == sorted(e.id for e in examples)  # each once
    assert summary["steps"] == 8  # 7 full batches of 4, then the last 2
    assert [len(s["example_ids"]) for s in steps(tmp_path)] == [4] * 7 + [2]
    assert _pending(queue) == 0 and queue.aligned.lag() == 0


def test_two_gloo_processes_read_the_stream_as_one(make_queue, model, whole_run, tmp_path):
    """torchrun with 2 processes: rank 0 reads each global batch and broadcasts it; the
    parameters match the single-process run on the same stream."""
    whole = whole_run
    queue = make_queue()
    queue.aligned.publish(synthetic_examples(36))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", "-m", "mindgap.trainer", "--redis", URL, "--redis-prefix", queue.prefix,
           "--model", str(model), "--out", str(tmp_path), "--loss", "is", "--max-steps", "6",
           "--global-batch", "6", "--batch-tokens", "40", "--lr", "1e-2", "--warmup-steps",
           "2", "--no-progress", "--redis-block-ms", "200"]
    result = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert max_diff(weights(whole / "final"), weights(tmp_path / "final")) < 1e-5
    assert _pending(queue) == 0 and queue.aligned.lag() == 0


def test_backpressure_with_checkpoint_acks_does_not_stall(make_queue, model, tmp_path):
    """Regression: a worker under backpressure (high_water 10) and a trainer that acknowledges
    only at its final checkpoint (save_every 0). The worker used to count trained-but-unacked
    entries as lag, so 40 problems stopped at 10 and the trainer waited forever."""
    from mindgap.queue import Backpressure
    from mindgap.rewriter.engines.scripted import ScriptedEngine, bernoulli_script
    from mindgap.rewriter.worker import Worker
    from mindgap.verifier.pool import LocalVerifier

    queue = make_queue()
    problems = [Problem(id=f"p{i}", question=f"q{i} ANSWER={i}", solution=f"\\boxed{{{i}}}",
                        answer=str(i)) for i in range(40)]
    queue.jobs.create("stall", problems)
    config = _config(model, queue, tmp_path, job="stall", max_steps=1000, global_batch=4,
                     save_every=0)
    with LocalVerifier(workers=1) as verifier:
        worker = Worker(queue, ScriptedEngine(bernoulli_script(1.0)), verifier, "w0",
                        batch_size=4, block_ms=100,
                        backpressure=Backpressure(queue.aligned, 10, 5, interval_s=0.1))
        summary, ended = train_beside_worker(config, worker, timeout_s=180)
    assert ended, f"trainer stalled: {queue.jobs.status('stall')}"
    assert queue.jobs.status("stall").status == "completed"
    assert summary["stopped"] == "exhausted" and summary["examples"] == 40
    assert _pending(queue) == 0 and queue.aligned.lag() == 0
