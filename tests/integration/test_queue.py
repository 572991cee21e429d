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

from mindgap.queue import (
    FINISHED,
    REWRITERS,
    Backpressure,
    JobStatus,
    Queue,
    Task,
    entry_order,
    hysteresis,
)
from mindgap.queue.jobs import fingerprint, request_digest
from mindgap.queue.store import REDIS_DOWN
from mindgap.queue_cli import queue_app
from mindgap.schemas import AlignedExample, AttemptCounts, Problem, Timings
from tests.conftest import drop_keys, free_port

URL = "redis://127.0.0.1:6379/0"
SOURCES = ("self", "guided", "expert")

pytestmark = pytest.mark.timeout(30)


def _redis_up(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


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
        drop_keys(made[0].redis, prefix)
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
    return [AlignedExample.model_validate_json(raw).problem_id
            for _, raw in queue.jobs.results(job)]


def aligned_ids(queue: Queue) -> list[str]:
    return [AlignedExample.model_validate_json(f["example"]).problem_id
            for _, f in queue.redis.xrange(queue.keys.aligned)]


def assert_settled(queue: Queue) -> None:
    """No task left in the stream or pending."""
    stats = queue.stats()
    assert stats.tasks.length == 0
    assert stats.tasks.pending == 0


def run_workers(queue: Queue, names: list[str], job: str, deadline_s: float = 20.0,
                handle: Callable[[Queue, Task], None] | None = None,
                tolerate_errors: bool = False) -> dict[str, int]:
    """Worker threads that claim and complete until the job finishes; returns claims per name."""
    stop = time.monotonic() + deadline_s
    claims: Counter[str] = Counter()
    errors: list[BaseException] = []

    def finished() -> bool:
        status = queue.jobs.status(job)
        return status is not None and status.status in FINISHED

    def work(name: str) -> None:
        while time.monotonic() < stop:
            try:
                if finished():
                    return
                for task in queue.tasks.claim(name, count=4, block_ms=100):
                    claims[name] += 1
                    if handle is not None:
                        handle(queue, task)
                    else:
                        queue.tasks.complete(task, example(task.problem, source_of(task.problem)))
            except REDIS_DOWN:
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
    assert finished(), queue.jobs.status(job)
    return dict(claims)


def test_concurrent_workers_write_each_result_once(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=5_000)
    batch = problems(50)
    assert queue.jobs.create("j", batch, {"k_self": 4}) is True
    assert queue.jobs.create("j", batch, {"k_self": 4}) is False  # idempotent
    assert queue.stats().tasks.length == 50
    claims = run_workers(queue, ["w1", "w2", "w3"], "j")
    assert sum(claims.values()) == 50
    ids = result_ids(queue, "j")
    assert sorted(ids) == sorted(p.id for p in batch)
    assert sorted(aligned_ids(queue)) == sorted(ids)
    status = queue.jobs.status("j")
    assert status is not None
    assert status.status == "completed"
    assert (status.done, status.failed, status.remaining) == (50, 0, 0)
    assert status.counts == {"self": 17, "guided": 17, "expert": 16}
    assert status.options == {"k_self": 4}
    assert status.finished is not None
    assert [j.id for j in queue.jobs.newest()] == ["j"]
    assert_settled(queue)


def test_create_job_validates_and_resumes(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    batch = problems(3)
    with pytest.raises(ValueError, match="duplicate"):
        queue.jobs.create("a", [*batch, batch[0]])
    queue.jobs.create("a", batch)
    with pytest.raises(ValueError, match="other problems"):
        queue.jobs.create("a", problems(4))
    # A crash after the job hash and part of the tasks: the next call enqueues the rest only.
    big = problems(1200, "b")
    scripts, keys = queue.store.scripts, queue.keys
    rows = [(p.id, p.model_dump_json()) for p in big]
    scripts.init_job(keys=[*keys.job_keys("b"), keys.jobs],
                     args=["b", len(big), "{}", "1", fingerprint(sorted(p.id for p in big)),
                           request_digest(rows, "{}", True), "", ""])
    scripts.enqueue(keys=[keys.job("b"), keys.enqueued("b"), keys.tasks, keys.job_tasks("b")],
                    args=["b", "{}", *[x for row in rows[:700] for x in row]])
    assert queue.jobs.create("b", big) is False
    assert queue.stats().tasks.length == 3 + 1200
    assert not queue.redis.exists(keys.enqueued("b"))
    assert queue.jobs.create("empty", []) is True
    assert queue.jobs.status("empty").status == "completed"  # type: ignore[union-attr]


def test_dead_consumer_tasks_are_reclaimed(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=300)
    batch = problems(50)
    queue.jobs.create("j", batch)
    abandoned = queue.tasks.claim("dies", count=10, block_ms=0)
    assert len(abandoned) == 10
    assert queue.tasks.claim("alive", count=1, block_ms=0, min_idle_ms=60_000)[0].deliveries == 1
    time.sleep(0.35)
    redelivered: list[Task] = []

    def handle(q: Queue, task: Task) -> None:
        if task.deliveries > 1:
            redelivered.append(task)
        q.tasks.complete(task, example(task.problem))

    run_workers(queue, ["alive", "alive2"], "j", handle=handle)
    assert {t.entry_id for t in abandoned} <= {t.entry_id for t in redelivered}
    assert all(t.deliveries == 2 for t in redelivered if t.entry_id in
               {a.entry_id for a in abandoned})
    ids = result_ids(queue, "j")
    assert len(ids) == len(set(ids)) == 50
    assert len(aligned_ids(queue)) == 50
    # The dead worker finishing late changes nothing.
    assert queue.tasks.complete(abandoned[0], example(abandoned[0].problem)) is False
    assert len(result_ids(queue, "j")) == 50
    assert queue.jobs.status("j").done == 50  # type: ignore[union-attr]
    assert_settled(queue)


def test_duplicate_completion_writes_one_result(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=200)
    batch = problems(2)
    queue.jobs.create("j", batch)
    task = queue.tasks.claim("w", count=1, block_ms=0)[0]
    assert queue.tasks.complete(task, example(task.problem)) is True
    assert queue.tasks.complete(task, example(task.problem)) is False  # retried after a lost reply
    # A second task entry for the same problem (e.g. a replayed producer): acked, not written.
    queue.redis.xadd(queue.keys.tasks, {"job": "j", "problem_id": task.problem.id,
                                       "problem": task.problem.model_dump_json(),
                                       "options": "{}"})
    with pytest.raises(ValueError):
        queue.tasks.complete(task, example(batch[1]))
    run_workers(queue, ["w"], "j")
    assert sorted(result_ids(queue, "j")) == [p.id for p in batch]
    assert len(aligned_ids(queue)) == 2
    status = queue.jobs.status("j")
    assert status is not None
    assert (status.status, status.done) == ("completed", 2)
    assert_settled(queue)


def test_poison_task_goes_to_dead_letters(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=200, max_deliveries=3)
    batch = problems(10)
    poison = batch[4].id
    queue.jobs.create("j", batch)
    attempts: list[int] = []

    def handle(q: Queue, task: Task) -> None:
        if task.problem.id == poison:
            attempts.append(task.deliveries)
            q.tasks.fail(task, f"RuntimeError: cannot rewrite {poison} (attempt {task.deliveries})")
        else:
            q.tasks.complete(task, example(task.problem))

    run_workers(queue, ["w1", "w2"], "j", handle=handle)
    assert attempts == [1, 2, 3]
    status = queue.jobs.status("j")
    assert status is not None
    assert status.status == "completed_with_failures"
    assert (status.done, status.failed) == (9, 1)
    assert "attempt 3" in status.last_error
    dead = queue.dead()
    assert len(dead) == 1
    letter = dead[0]
    assert (letter.stream, letter.job, letter.problem_id, letter.deliveries) == (
        "tasks", "j", poison, 3)
    assert "attempt 3" in letter.error
    assert Problem.model_validate_json(letter.problem or "").id == poison
    assert sorted(result_ids(queue, "j")) == sorted(p.id for p in batch if p.id != poison)
    assert_settled(queue)


def test_task_that_kills_its_workers_is_dead_lettered(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=100, max_deliveries=3)
    queue.jobs.create("j", problems(1))
    seen = []
    for i in range(3):  # each worker claims and dies without reporting
        tasks = queue.tasks.claim(f"crashing-{i}", count=1, block_ms=0)
        seen += [t.deliveries for t in tasks]
        time.sleep(0.15)
    assert seen == [1, 2, 3]
    assert queue.tasks.claim("next", count=1, block_ms=0) == []
    status = queue.jobs.status("j")
    assert status is not None
    assert (status.status, status.failed) == ("completed_with_failures", 1)
    assert "delivered 4 times" in queue.dead()[0].error
    assert_settled(queue)


def test_malformed_task_is_dead_lettered(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.redis.xadd(queue.keys.tasks, {"job": "x", "problem": "{not json"})
    assert queue.tasks.claim("w", count=5, block_ms=0) == []
    dead = queue.dead()
    assert len(dead) == 1
    assert dead[0].error.startswith("malformed task")
    assert_settled(queue)


def test_retry_later_waits_for_visibility_timeout(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=400)
    queue.jobs.create("j", problems(1))
    task = queue.tasks.claim("w", block_ms=0)[0]
    assert queue.tasks.fail(task, "transient", retry_now=False) is False
    assert queue.tasks.claim("w2", block_ms=0) == []
    assert queue.tasks.touch([task]) == 1  # lease extended: still not reclaimable
    time.sleep(0.25)
    assert queue.tasks.claim("w2", block_ms=0) == []
    time.sleep(0.25)
    again = queue.tasks.claim("w2", block_ms=0)
    assert [t.deliveries for t in again] == [2]
    assert queue.tasks.touch([task]) == 0  # w lost it to w2
    assert queue.jobs.status("j").last_error == "transient"  # type: ignore[union-attr]


def test_cancel_skips_and_acks_remaining_tasks(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout_ms=5_000)
    queue.jobs.create("j", problems(20))
    claimed = queue.tasks.claim("w", count=5, block_ms=0)
    for task in claimed[:2]:
        assert queue.tasks.complete(task, example(task.problem))
    assert queue.jobs.status("j").status == "running"  # type: ignore[union-attr]
    assert queue.jobs.cancel("j") is True
    assert queue.jobs.status("j").status == JobStatus.CANCELLED  # type: ignore[union-attr]
    assert queue.jobs.cancel("j") is False
    with pytest.raises(KeyError):
        queue.jobs.cancel("nope")
    for task in claimed[2:]:  # in flight when cancelled: acked, not recorded
        assert queue.tasks.complete(task, example(task.problem)) is False
    for _ in range(10):
        assert queue.tasks.claim("w2", count=4, block_ms=0) == []
        if queue.stats().tasks.length == 0:
            break
    status = queue.jobs.status("j")
    assert status is not None
    assert (status.status, status.done, status.skipped, status.remaining) == (
        "cancelled", 2, 18, 0)
    assert len(result_ids(queue, "j")) == 2
    assert_settled(queue)


def test_trainer_reads_acks_and_lag(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    assert queue.aligned.lag() == 0
    queue.jobs.create("j", problems(10))
    queue.jobs.create("offline", problems(3, "off"), feed_trainer=False)
    run_workers(queue, ["w"], "j")
    run_workers(queue, ["w"], "offline")
    assert len(result_ids(queue, "offline")) == 3
    assert queue.aligned.lag() == 10
    first = queue.aligned.read_new("t0", count=4, block_ms=0)
    assert len(first) == 4
    assert all(isinstance(ex, AlignedExample) for _, ex in first)
    assert queue.aligned.lag() == 10  # 6 undelivered + 4 pending
    assert queue.aligned.read_pending("t0", count=10) == first  # re-read after restart
    assert queue.aligned.ack([eid for eid, _ in first]) == 4
    assert queue.aligned.lag() == 6
    assert queue.aligned.read_pending("t0") == []
    rest = queue.aligned.read_new("t1", count=100, block_ms=0)
    assert len(rest) == 6
    assert {ex.problem_id for _, ex in first + rest} == {f"j-p{i:03d}" for i in range(10)}
    assert queue.aligned.trim() == 4  # only acknowledged entries go
    assert queue.aligned.ack([eid for eid, _ in rest]) == 6
    assert queue.aligned.lag() == 0
    assert queue.aligned.read_new("t1", count=10, block_ms=50) == []
    assert queue.aligned.trim() == 6
    assert queue.redis.xlen(queue.keys.aligned) == 0


def test_backpressure_hysteresis(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.jobs.create("j", problems(6))
    pressure = Backpressure(queue.aligned, high_water=5, low_water=2, interval_s=0.0)
    assert pressure.check() is False
    for i, task in enumerate(queue.tasks.claim("w", count=5, block_ms=0)):
        queue.tasks.complete(task, example(task.problem))
        assert pressure.check() is False, i  # lag 1..5: not above the high-water mark
    run_workers(queue, ["w"], "j")
    assert pressure.check() is True and pressure.lag == 6
    assert hysteresis(queue.aligned.lag(), 5, 2, False) is True
    read = queue.aligned.read_new("t", count=6, block_ms=0)
    queue.aligned.ack([eid for eid, _ in read[:2]])
    assert pressure.check() is True  # lag 4: between the marks, stays paused
    assert hysteresis(queue.aligned.lag(), 5, 2, False) is False
    queue.aligned.ack([eid for eid, _ in read[2:4]])
    assert pressure.check() is False  # lag 2: resumed
    assert queue.redis.xlen(queue.keys.aligned) == 6  # nothing trimmed


def test_stale_consumers_are_pruned(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.jobs.create("j", problems(2))
    assert queue.tasks.claim("gone", block_ms=0)
    task = queue.tasks.claim("idle", block_ms=0)[0]
    queue.tasks.complete(task, example(task.problem))
    time.sleep(0.05)
    assert queue.trim(consumer_idle_ms=10).consumers == ["idle"]  # "gone" still holds a task

    names = {c["name"] for c in queue.redis.xinfo_consumers(queue.keys.tasks, REWRITERS)}
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
        queue.jobs.create("j", batch)
        killed = threading.Event()
        at_kill: list[int] = []

        def handle(q: Queue, task: Task) -> None:
            time.sleep(0.05)  # the work
            q.tasks.complete(task, example(task.problem, source_of(task.problem)))

        def crash() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    done = len(list(queue.jobs.results("j")))
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
        status = queue.jobs.status("j")
        assert status is not None
        assert (status.status, status.done, status.failed) == ("completed", 50, 0)
        assert sum(status.counts.values()) == 50
        assert_settled(queue)
    finally:
        queue.close()


def test_lost_streams_and_groups_are_recreated(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.jobs.create("j", problems(4))
    first = queue.tasks.claim("w", count=2, block_ms=0)
    queue.tasks.complete(first[0], example(first[0].problem))
    stats = queue.stats()
    assert (stats.tasks.length, stats.tasks.undelivered, stats.tasks.pending) == (3, 2, 1)
    assert (stats.aligned.length, stats.aligned.undelivered) == (1, 1)
    queue.redis.delete(queue.keys.tasks, queue.keys.aligned)  # e.g. a Redis without persistence
    assert queue.tasks.claim("w", block_ms=0) == []
    assert queue.aligned.read_new("t", block_ms=0) == []
    assert queue.aligned.lag() == 0


def test_trim_keeps_what_any_group_has_not_acknowledged(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    ids = queue.aligned.publish([example(p) for p in problems(6)], job_id="import")
    queue.redis.xgroup_create(queue.keys.aligned, "audit", id="0")  # a second reader
    read = queue.aligned.read_new("t", count=4, block_ms=0)
    queue.aligned.ack([eid for eid, _ in read[:2]])
    assert queue.aligned.trim() == 0  # "audit" has read nothing yet
    audit = queue.redis.xreadgroup("audit", "a", {queue.keys.aligned: ">"}, count=3)
    queue.redis.xack(queue.keys.aligned, "audit", *[eid for eid, _ in audit[0][1]])
    assert queue.aligned.trim() == 2  # acknowledged by both groups
    left = [eid for eid, _ in queue.redis.xrange(queue.keys.aligned)]
    assert left == ids[2:]  # trainers' pending 3-4 and everything unread stay
    assert queue.aligned.read_pending("t") == read[2:]
    assert queue.aligned.lag() == 4
    assert queue.trim().aligned == 0  # nothing more is acknowledged by every group
    queue.aligned.ack([eid for eid, _ in read[2:] + queue.aligned.read_new("t", 10, 0)])
    queue.redis.xreadgroup("audit", "a", {queue.keys.aligned: ">"})
    assert queue.aligned.trim() == 1  # "audit" still holds 3 pending
    queue.redis.xack(queue.keys.aligned, "audit", *ids)
    assert queue.aligned.trim() == 3
    assert queue.redis.xlen(queue.keys.aligned) == 0
    assert queue.aligned.lag() == 0


def test_trim_leaves_results_and_unread_entries(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.jobs.create("j", problems(4))
    run_workers(queue, ["w"], "j")
    assert queue.trim().aligned == 0  # the trainers have read nothing
    read = queue.aligned.read_new("t", count=4, block_ms=0)
    queue.aligned.ack([eid for eid, _ in read])
    assert queue.trim().aligned == 4
    assert len(result_ids(queue, "j")) == 4  # results are kept with the job
    assert queue.aligned.trim() == 0


@pytest.fixture
def queue_env(make_queue: Callable[..., Queue], monkeypatch: pytest.MonkeyPatch) -> Queue:
    """A queue whose Redis and prefix ``mindgap queue`` reads from the environment."""
    queue = make_queue()
    monkeypatch.setenv("MINDGAP_QUEUE_REDIS_URL", URL)
    monkeypatch.setenv("MINDGAP_QUEUE_PREFIX", queue.prefix)
    return queue


def invoke(*args: str) -> str:
    from typer.testing import CliRunner

    result = CliRunner().invoke(queue_app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_stats(queue_env: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    queue = queue_env
    queue.jobs.create("j", problems(3))
    task = queue.tasks.claim("w", block_ms=0)[0]
    queue.tasks.fail(task, "boom", max_deliveries=1)
    queue.tasks.claim("w", block_ms=0)
    queue.heartbeats.beat("w", ttl_s=30)
    stats = json.loads(invoke("stats"))
    assert stats["tasks"] == {"length": 2, "undelivered": 1, "pending": 1}
    assert stats["aligned"] == {"length": 0, "undelivered": 0, "pending": 0}
    assert (stats["trainer_lag"], stats["dead_letters"], stats["live_workers"]) == (0, 1, ["w"])
    monkeypatch.setenv("MINDGAP_QUEUE_PREFIX", "mgtest:elsewhere")
    assert json.loads(invoke("stats", "--prefix", queue.prefix))["dead_letters"] == 1
    assert json.loads(invoke("stats"))["dead_letters"] == 0  # the environment's prefix
    assert json.loads(invoke("stats", "--redis-url", URL, "--prefix",
                             queue.prefix))["live_workers"] == ["w"]


def test_cli_dead(queue_env: Queue) -> None:
    import json

    queue = queue_env
    queue.jobs.create("j", problems(2))
    for task in queue.tasks.claim("w", count=2, block_ms=0):
        queue.tasks.fail(task, f"boom {task.problem.id}", max_deliveries=1)
    lines = invoke("dead").splitlines()
    letters = [json.loads(line) for line in lines]
    assert [(d["job"], d["error"]) for d in letters] == [("j", "boom j-p000"), ("j", "boom j-p001")]
    assert invoke("dead", "--limit", "1").splitlines() == lines[:1]
    assert invoke("dead", "--after", letters[0]["id"]).splitlines() == lines[1:]


def test_cli_trim(queue_env: Queue) -> None:
    import json

    queue = queue_env
    queue.aligned.publish([example(p) for p in problems(5)])
    read = queue.aligned.read_new("t", count=3, block_ms=0)
    queue.aligned.ack([eid for eid, _ in read[:2]])
    assert json.loads(invoke("trim")) == {"aligned": 2, "consumers": []}
    assert queue.redis.xlen(queue.keys.aligned) == 3  # one pending, two unread
    queue.aligned.ack([read[2][0]])
    time.sleep(0.05)
    assert json.loads(invoke("trim", "--consumer-idle-s", "0.01")) == {
        "aligned": 1, "consumers": ["t"]}
    newer = queue.aligned.read_new("t", count=5, block_ms=0)  # "t" is recreated on read
    assert [entry_order(eid) > entry_order(read[2][0]) for eid, _ in newer] == [True, True]
