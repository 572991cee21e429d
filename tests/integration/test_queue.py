"""The Redis Streams job queue against a real Redis (127.0.0.1:6379, unique key prefix)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from mindgap.queue import REWRITERS, Backpressure, Queue, Task, _fingerprint
from mindgap.schemas import AlignedExample, AttemptCounts, Problem, Timings
from tests.conftest import free_port

URL = "redis://127.0.0.1:6379/0"
SOURCES = ("self", "guided", "expert")

pytestmark = pytest.mark.timeout(30)


def _redis_up(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _cleanup(client: redis.Redis, prefix: str) -> None:
    for key in client.scan_iter(match=f"{prefix}:*", count=500):
        client.delete(key)


@pytest.fixture
def make_queue() -> Iterator[Callable[..., Queue]]:
    """Queues on the shared Redis under one fresh prefix, deleted afterwards."""
    if not _redis_up(URL):
        pytest.skip(f"no Redis at {URL}")
    prefix = f"mgtest:{uuid.uuid4().hex[:12]}"
    made: list[Queue] = []

    def make(**kwargs: object) -> Queue:
        queue = Queue.from_url(URL, prefix, **kwargs)  # type: ignore[arg-type]
        made.append(queue)
        return queue

    yield make
    if made:
        _cleanup(made[0].redis, prefix)
    for queue in made:
        queue.close()


def problems(n: int, job: str = "j") -> list[Problem]:
    return [Problem(id=f"{job}-p{i:03d}", question=f"What is {i}+1?",
                    solution=f"\\boxed{{{i + 1}}}") for i in range(n)]


def example(problem: Problem, source: str = "self") -> AlignedExample:
    return AlignedExample(
        id=f"{problem.id}@v0", problem_id=problem.id, prompt=problem.question,
        response=problem.solution, response_token_ids=[1, 2, 3], source=source,  # type: ignore[arg-type]
        reference_answer="1", expert_solution=problem.solution, behavior=None,
        attempts=AttemptCounts(), timings=Timings())


def source_of(problem: Problem) -> str:
    return SOURCES[int(problem.id[-3:]) % 3]


def result_ids(queue: Queue, job: str) -> list[str]:
    return [ex.problem_id for _, ex in queue.iter_results(job)]


def aligned_ids(queue: Queue) -> list[str]:
    return [AlignedExample.model_validate_json(f["example"]).problem_id
            for _, f in queue.redis.xrange(queue.aligned_key)]


def assert_settled(queue: Queue) -> None:
    """No task left in the stream or pending."""
    stats = queue.stats()
    assert stats["tasks_backlog"] == 0
    assert stats["tasks_pending"] == 0


def run_workers(queue: Queue, names: list[str], job: str, deadline_s: float = 20.0,
                handle: Callable[[Queue, Task], None] | None = None,
                tolerate_errors: bool = False) -> dict[str, int]:
    """Worker threads that claim and complete until the job finishes; returns claims per name."""
    stop = time.monotonic() + deadline_s
    claims: Counter[str] = Counter()
    errors: list[BaseException] = []

    def finished() -> bool:
        status = queue.job_status(job)
        return status is not None and status["status"] in (
            "completed", "completed_with_failures", "cancelled")

    def work(name: str) -> None:
        while time.monotonic() < stop:
            try:
                if finished():
                    return
                for task in queue.claim_tasks(name, count=4, block_ms=100):
                    claims[name] += 1
                    if handle is not None:
                        handle(queue, task)
                    else:
                        queue.complete_task(task, example(task.problem, source_of(task.problem)))
            except redis.ConnectionError:
                if not tolerate_errors:
                    raise
                time.sleep(0.1)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=deadline_s + 5)
    assert not errors, errors
    assert finished(), queue.job_status(job)
    return dict(claims)


def test_concurrent_workers_write_each_result_once(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=5_000)
    batch = problems(50)
    assert queue.create_job("j", batch, {"k_self": 4}) is True
    assert queue.create_job("j", batch, {"k_self": 4}) is False  # idempotent
    assert queue.stats()["tasks_backlog"] == 50
    claims = run_workers(queue, ["w1", "w2", "w3"], "j")
    assert sum(claims.values()) == 50
    ids = result_ids(queue, "j")
    assert sorted(ids) == sorted(p.id for p in batch)
    assert sorted(aligned_ids(queue)) == sorted(ids)
    status = queue.job_status("j")
    assert status is not None
    assert status["status"] == "completed"
    assert (status["done"], status["failed"], status["remaining"]) == (50, 0, 0)
    assert status["counts"] == {"self": 17, "guided": 17, "expert": 16}
    assert status["options"] == {"k_self": 4}
    assert status["finished"] is not None
    assert [j["id"] for j in queue.list_jobs()] == ["j"]
    assert_settled(queue)


def test_create_job_validates_and_resumes(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    batch = problems(3)
    with pytest.raises(ValueError, match="duplicate"):
        queue.create_job("a", [*batch, batch[0]])
    queue.create_job("a", batch)
    with pytest.raises(ValueError, match="other problems"):
        queue.create_job("a", problems(4))
    # A crash after the job hash and part of the tasks: the next call enqueues the rest only.
    big = problems(1200, "b")
    queue._init_job(keys=[queue.job_key("b"), queue.jobs_key],
                    args=["b", len(big), "{}", "1", _fingerprint(sorted(p.id for p in big))])
    queue._enqueue(keys=[queue.job_key("b"), f"{queue.job_key('b')}:enqueued", queue.tasks_key],
                   args=["b", "{}", *[x for p in big[:700] for x in (p.id, p.model_dump_json())]])
    assert queue.create_job("b", big) is False
    assert queue.stats()["tasks_backlog"] == 3 + 1200
    assert not queue.redis.exists(f"{queue.job_key('b')}:enqueued")
    assert queue.create_job("empty", []) is True
    assert queue.job_status("empty")["status"] == "completed"  # type: ignore[index]


def test_dead_consumer_tasks_are_reclaimed(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=300)
    batch = problems(50)
    queue.create_job("j", batch)
    abandoned = queue.claim_tasks("dies", count=10, block_ms=0)
    assert len(abandoned) == 10
    assert queue.claim_tasks("alive", count=1, block_ms=0, min_idle_ms=60_000)[0].deliveries == 1
    time.sleep(0.35)
    redelivered: list[Task] = []

    def handle(q: Queue, task: Task) -> None:
        if task.deliveries > 1:
            redelivered.append(task)
        q.complete_task(task, example(task.problem))

    run_workers(queue, ["alive", "alive2"], "j", handle=handle)
    assert {t.entry_id for t in abandoned} <= {t.entry_id for t in redelivered}
    assert all(t.deliveries == 2 for t in redelivered if t.entry_id in
               {a.entry_id for a in abandoned})
    ids = result_ids(queue, "j")
    assert len(ids) == len(set(ids)) == 50
    assert len(aligned_ids(queue)) == 50
    # The dead worker finishing late changes nothing.
    assert queue.complete_task(abandoned[0], example(abandoned[0].problem)) is False
    assert len(result_ids(queue, "j")) == 50
    assert queue.job_status("j")["done"] == 50  # type: ignore[index]
    assert_settled(queue)


def test_duplicate_completion_writes_one_result(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=200)
    batch = problems(2)
    queue.create_job("j", batch)
    task = queue.claim_tasks("w", count=1, block_ms=0)[0]
    assert queue.complete_task(task, example(task.problem)) is True
    assert queue.complete_task(task, example(task.problem)) is False  # retried after a lost reply
    # A second task entry for the same problem (e.g. a replayed producer): acked, not written.
    queue.redis.xadd(queue.tasks_key, {"job": "j", "problem_id": task.problem.id,
                                       "problem": task.problem.model_dump_json(),
                                       "options": "{}"})
    with pytest.raises(ValueError):
        queue.complete_task(task, example(batch[1]))
    run_workers(queue, ["w"], "j")
    assert sorted(result_ids(queue, "j")) == [p.id for p in batch]
    assert len(aligned_ids(queue)) == 2
    status = queue.job_status("j")
    assert status is not None
    assert (status["status"], status["done"]) == ("completed", 2)
    assert_settled(queue)


def test_poison_task_goes_to_dead_letters(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=200, max_deliveries=3)
    batch = problems(10)
    poison = batch[4].id
    queue.create_job("j", batch)
    attempts: list[int] = []

    def handle(q: Queue, task: Task) -> None:
        if task.problem.id == poison:
            attempts.append(task.deliveries)
            q.fail_task(task, f"RuntimeError: cannot rewrite {poison} (attempt {task.deliveries})")
        else:
            q.complete_task(task, example(task.problem))

    run_workers(queue, ["w1", "w2"], "j", handle=handle)
    assert attempts == [1, 2, 3]
    status = queue.job_status("j")
    assert status is not None
    assert status["status"] == "completed_with_failures"
    assert (status["done"], status["failed"]) == (9, 1)
    assert "attempt 3" in status["last_error"]
    dead = queue.read_dead()
    assert len(dead) == 1
    fields = dead[0][1]
    assert (fields["job"], fields["problem_id"], fields["deliveries"]) == ("j", poison, "3")
    assert "attempt 3" in fields["error"]
    assert Problem.model_validate_json(fields["problem"]).id == poison
    assert sorted(result_ids(queue, "j")) == sorted(p.id for p in batch if p.id != poison)
    assert_settled(queue)


def test_task_that_kills_its_workers_is_dead_lettered(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=100, max_deliveries=3)
    queue.create_job("j", problems(1))
    seen = []
    for i in range(3):  # each worker claims and dies without reporting
        tasks = queue.claim_tasks(f"crashing-{i}", count=1, block_ms=0)
        seen += [t.deliveries for t in tasks]
        time.sleep(0.15)
    assert seen == [1, 2, 3]
    assert queue.claim_tasks("next", count=1, block_ms=0) == []
    status = queue.job_status("j")
    assert status is not None
    assert (status["status"], status["failed"]) == ("completed_with_failures", 1)
    assert "delivered 4 times" in queue.read_dead()[0][1]["error"]
    assert_settled(queue)


def test_malformed_task_is_dead_lettered(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.redis.xadd(queue.tasks_key, {"job": "x", "problem": "{not json"})
    assert queue.claim_tasks("w", count=5, block_ms=0) == []
    dead = queue.read_dead()
    assert len(dead) == 1
    assert dead[0][1]["error"].startswith("malformed task")
    assert_settled(queue)


def test_retry_later_waits_for_visibility_timeout(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=400)
    queue.create_job("j", problems(1))
    task = queue.claim_tasks("w", block_ms=0)[0]
    assert queue.fail_task(task, "transient", retry_now=False) is False
    assert queue.claim_tasks("w2", block_ms=0) == []
    assert queue.touch([task]) == 1  # lease extended: still not reclaimable
    time.sleep(0.25)
    assert queue.claim_tasks("w2", block_ms=0) == []
    time.sleep(0.25)
    again = queue.claim_tasks("w2", block_ms=0)
    assert [t.deliveries for t in again] == [2]
    assert queue.touch([task]) == 0  # w lost it to w2
    assert queue.job_status("j")["last_error"] == "transient"  # type: ignore[index]


def test_cancel_skips_and_acks_remaining_tasks(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=5_000)
    queue.create_job("j", problems(20))
    claimed = queue.claim_tasks("w", count=5, block_ms=0)
    for task in claimed[:2]:
        assert queue.complete_task(task, example(task.problem))
    assert queue.job_status("j")["status"] == "running"  # type: ignore[index]
    assert queue.cancel_job("j") is True
    assert queue.is_cancelled("j")
    assert queue.cancel_job("j") is False
    with pytest.raises(KeyError):
        queue.cancel_job("nope")
    for task in claimed[2:]:  # in flight when cancelled: acked, not recorded
        assert queue.complete_task(task, example(task.problem)) is False
    for _ in range(10):
        assert queue.claim_tasks("w2", count=4, block_ms=0) == []
        if queue.stats()["tasks_backlog"] == 0:
            break
    status = queue.job_status("j")
    assert status is not None
    assert (status["status"], status["done"], status["skipped"], status["remaining"]) == (
        "cancelled", 2, 18, 0)
    assert len(result_ids(queue, "j")) == 2
    assert_settled(queue)


def test_trainer_reads_acks_and_lag(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    assert queue.trainer_lag() == 0
    queue.create_job("j", problems(10))
    queue.create_job("offline", problems(3, "off"), feed_trainer=False)
    run_workers(queue, ["w"], "j")
    run_workers(queue, ["w"], "offline")
    assert len(result_ids(queue, "offline")) == 3
    assert queue.trainer_lag() == 10
    first = queue.read_aligned("t0", count=4, block_ms=0)
    assert len(first) == 4
    assert all(isinstance(ex, AlignedExample) for _, ex in first)
    assert queue.trainer_lag() == 10  # 6 undelivered + 4 pending
    assert queue.read_aligned("t0", count=10, pending=True) == first  # re-read after restart
    assert queue.ack_aligned([eid for eid, _ in first]) == 4
    assert queue.trainer_lag() == 6
    assert queue.read_aligned("t0", pending=True) == []
    rest = queue.read_aligned("t1", count=100, block_ms=0)
    assert len(rest) == 6
    assert {ex.problem_id for _, ex in first + rest} == {f"j-p{i:03d}" for i in range(10)}
    assert queue.trim_aligned() == 4  # only acknowledged entries go
    assert queue.ack_aligned([eid for eid, _ in rest]) == 6
    assert queue.trainer_lag() == 0
    assert queue.read_aligned("t1", count=10, block_ms=50) == []
    assert queue.trim_aligned() == 6
    assert queue.redis.xlen(queue.aligned_key) == 0


def test_backpressure_hysteresis(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.create_job("j", problems(6))
    pressure = Backpressure(queue, high_water=5, low_water=2, interval_s=0.0)
    assert pressure.check() is False
    for i, task in enumerate(queue.claim_tasks("w", count=5, block_ms=0)):
        queue.complete_task(task, example(task.problem))
        assert pressure.check() is False, i  # lag 1..5: not above the high-water mark
    run_workers(queue, ["w"], "j")
    assert pressure.check() is True and pressure.lag == 6
    assert queue.should_pause(5, 2) is True
    read = queue.read_aligned("t", count=6, block_ms=0)
    queue.ack_aligned([eid for eid, _ in read[:2]])
    assert pressure.check() is True  # lag 4: between the marks, stays paused
    assert queue.should_pause(5, 2, paused=False) is False
    queue.ack_aligned([eid for eid, _ in read[2:4]])
    assert pressure.check() is False  # lag 2: resumed
    assert queue.redis.xlen(queue.aligned_key) == 6  # nothing trimmed


def test_stale_consumers_are_pruned(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.create_job("j", problems(2))
    assert queue.claim_tasks("gone", block_ms=0)
    task = queue.claim_tasks("idle", block_ms=0)[0]
    queue.complete_task(task, example(task.problem))
    time.sleep(0.05)
    assert queue.prune_consumers(min_idle_ms=10) == ["idle"]  # "gone" still holds a task
    names = {c["name"] for c in queue.redis.xinfo_consumers(queue.tasks_key, REWRITERS)}
    assert names == {"gone"}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A persistent redis-server of our own (AOF, fsync always), restartable."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
            "--appendfsync", "always", "--save", "", "--dir", str(tmp_path),
            "--daemonize", "no", "--loglevel", "warning"]
    state: dict[str, object] = {"url": f"redis://127.0.0.1:{port}/0"}

    def start() -> None:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state["proc"] = proc
        deadline = time.monotonic() + 10
        while not _redis_up(str(state["url"])):
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill() -> None:
        proc = state["proc"]
        assert isinstance(proc, subprocess.Popen)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    state["start"], state["kill"] = start, kill
    start()
    try:
        yield state
    finally:
        proc = state["proc"]
        assert isinstance(proc, subprocess.Popen)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_job_survives_redis_restart(redis_server: dict[str, object]) -> None:
    queue = Queue.from_url(str(redis_server["url"]), "mgtest", visibility_timeout_ms=500)
    try:
        batch = problems(50)
        queue.create_job("j", batch)
        killed = threading.Event()
        at_kill: list[int] = []

        def handle(q: Queue, task: Task) -> None:
            time.sleep(0.05)  # the work
            q.complete_task(task, example(task.problem, source_of(task.problem)))

        def crash() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    done = queue.results_count("j")
                    if done >= 15:
                        at_kill.append(done)
                        break
                except redis.ConnectionError:
                    pass
                time.sleep(0.02)
            redis_server["kill"]()  # type: ignore[operator]
            killed.set()
            time.sleep(0.5)
            redis_server["start"]()  # type: ignore[operator]

        crasher = threading.Thread(target=crash, daemon=True)
        crasher.start()
        run_workers(queue, ["w1", "w2", "w3"], "j", deadline_s=25, handle=handle,
                    tolerate_errors=True)
        crasher.join(timeout=15)
        assert killed.is_set()
        assert at_kill and at_kill[0] < 40, at_kill  # killed mid-job
        ids = result_ids(queue, "j")
        assert sorted(ids) == sorted(p.id for p in batch)  # 0 lost, 0 duplicated
        assert sorted(aligned_ids(queue)) == sorted(ids)
        status = queue.job_status("j")
        assert status is not None
        assert (status["status"], status["done"], status["failed"]) == ("completed", 50, 0)
        assert sum(status["counts"].values()) == 50
        assert_settled(queue)
    finally:
        queue.close()


def test_lost_streams_and_groups_are_recreated(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.create_job("j", problems(4))
    first = queue.claim_tasks("w", count=2, block_ms=0)
    queue.complete_task(first[0], example(first[0].problem))
    stats = queue.stats()
    assert (stats["tasks_backlog"], stats["tasks_undelivered"], stats["tasks_pending"]) == (3, 2, 1)
    assert (stats["aligned_length"], stats["aligned_undelivered"]) == (1, 1)
    queue.redis.delete(queue.tasks_key, queue.aligned_key)  # e.g. a Redis without persistence
    assert queue.claim_tasks("w", block_ms=0) == []
    assert queue.read_aligned("t", block_ms=0) == []
    assert queue.trainer_lag() == 0
