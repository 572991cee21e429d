"""The jobs API and the job queue, attacked: resent job ids with other bodies, internal keys
as path ids, oversized and too many jobs, jobs that never expire, bulk cancellation, and a
synchronous rewrite whose client leaves or whose server is stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from mindgap.queue import Queue
from tests.conftest import REDIS_URL, ROOT, Service, drop_keys, free_port, wait_ready
from tests.integration.test_queue import problems
from tests.integration.test_rewriter_service import example

AUTH = {"Authorization": "Bearer test-key"}

pytestmark = pytest.mark.timeout(60)


def problem(i: int, tag: str = "p") -> dict[str, Any]:
    return {"id": f"{tag}{i}", "question": f"What is {i} + {i}?",
            "solution": f"{i} + {i} = {2 * i}. \\boxed{{{2 * i}}}", "answer": str(2 * i)}


def start_rewriter(redis_url: str, prefix: str, data_root: Path, **env: str) -> Service:
    """``mindgap serve rewriter`` on its own port, key ``test-key``, small caps."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if k != "MINDGAP_VERIFIER_URL"}
    full.update({"MINDGAP_API_KEY": "test-key", "MINDGAP_QUEUE_PREFIX": prefix,
                 "MINDGAP_QUEUE_REDIS_URL": redis_url,
                 "MINDGAP_REWRITER_DATA_ROOT": str(data_root),
                 "MINDGAP_REWRITER_MAX_JOB_ITEMS": "50", "MINDGAP_REWRITER_MAX_OPEN_JOBS": "4",
                 **env})
    service = Service(subprocess.Popen(
        [sys.executable, "-m", "mindgap.cli", "serve", "rewriter", "--port", str(port),
         "--log-level", "warning"], env=full, cwd=ROOT), f"http://127.0.0.1:{port}")
    try:
        wait_ready(f"{service.url}/healthz")
    except TimeoutError:
        service.stop()
        raise
    return service


@pytest.fixture
def queue(prefix: str) -> Iterator[Queue]:
    try:
        q = Queue.from_url(REDIS_URL, prefix, retries=0)
    except redis.RedisError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    yield q
    q.close()


@pytest.fixture
def service(queue: Queue, prefix: str, tmp_path: Path) -> Iterator[Service]:
    svc = start_rewriter(REDIS_URL, prefix, tmp_path, MINDGAP_REWRITER_JOB_TTL_S="1")
    yield svc
    svc.stop()


def post_job(service: Service, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{service.url}/v1/jobs", headers=AUTH, json=body, timeout=30)


def settle_all(queue: Queue, job_id: str, count: int = 100) -> None:
    """Play the worker: complete every task of ``job_id`` at once."""
    for _ in range(20):
        for task in queue.tasks.claim("test", count=count, block_ms=50):
            queue.tasks.complete(task, example(task.problem, "self"))
        state = queue.jobs.status(job_id)
        if state is None or state.remaining == 0:
            return
    raise AssertionError(f"job {job_id} not settled")


def test_resent_job_id_with_another_body_is_409(service: Service) -> None:
    job_id = f"idem-{uuid.uuid4().hex[:8]}"
    items = [problem(i) for i in range(3)]
    body = {"job_id": job_id, "items": items, "options": {"k_self": 2}, "feed_trainer": False}
    assert post_job(service, body).status_code == 202
    assert post_job(service, body).status_code == 200
    reordered = post_job(service, {**body, "items": items[::-1]})
    assert reordered.status_code == 200 and reordered.json()["created"] is False
    changed_question = [{**items[0], "question": "What is 1 + 1?"}, *items[1:]]
    for other in ({**body, "items": changed_question}, {**body, "options": {"k_self": 3}},
                  {**body, "feed_trainer": True}):
        reply = post_job(service, other)
        assert reply.status_code == 409, reply.text
        assert reply.json()["job_id"] == job_id
    httpx.delete(f"{service.url}/v1/jobs/{job_id}", headers=AUTH)


def test_path_ids_cannot_reach_internal_keys(service: Service, queue: Queue) -> None:
    job_id = post_job(service, {"items": [problem(0)]}).json()["job_id"]
    for suffix in (":done", ":failed", ":enqueued", ":tasks"):
        for method, path in (("GET", f"/v1/jobs/{job_id}{suffix}"),
                             ("GET", f"/v1/jobs/{job_id}{suffix}/results"),
                             ("DELETE", f"/v1/jobs/{job_id}{suffix}")):
            reply = httpx.request(method, f"{service.url}{path}", headers=AUTH)
            assert reply.status_code == 422, (method, path, reply.text)
            assert reply.json()["errors"][0]["field"] == "path.job_id"
    assert httpx.get(f"{service.url}/v1/jobs/{'a' * 129}", headers=AUTH).status_code == 422
    assert queue.jobs.status(job_id) is not None
    httpx.delete(f"{service.url}/v1/jobs/{job_id}", headers=AUTH)


def test_job_size_is_capped(service: Service, tmp_path: Path) -> None:
    too_many = post_job(service, {"items": [problem(i) for i in range(51)]})
    assert too_many.status_code == 413, too_many.text
    assert "50" in too_many.json()["detail"]
    # Counted before the rows are validated: bad rows beyond the cap are not even read.
    bad_rows = post_job(service, {"items": [{"id": f"x{i}"} for i in range(5000)]})
    assert bad_rows.status_code == 413
    rows = tmp_path / "big.jsonl"
    rows.write_text("".join(f'{{"id": "d{i}", "question": "q{i}", "solution": "\\\\boxed{{1}}"}}\n'
                            for i in range(60)))
    from_file = post_job(service, {"dataset": {"path": str(rows)}})
    assert from_file.status_code == 413, from_file.text
    limited = post_job(service, {"dataset": {"path": str(rows), "limit": 50}})
    assert limited.status_code == 202, limited.text
    httpx.delete(f"{service.url}/v1/jobs/{limited.json()['job_id']}", headers=AUTH)


def test_open_jobs_are_capped(service: Service, queue: Queue) -> None:
    queue.heartbeats.beat("w", ttl_s=30)  # a live worker: /v1/rewrite gets to the cap
    ids = []
    for i in range(4):
        reply = post_job(service, {"job_id": f"open-{i}", "items": [problem(i)]})
        assert reply.status_code == 202, reply.text
        ids.append(reply.json()["job_id"])
    full = post_job(service, {"items": [problem(9)]})
    assert full.status_code == 429, full.text
    assert int(full.headers["retry-after"]) >= 1
    sync = httpx.post(f"{service.url}/v1/rewrite", headers=AUTH,
                      json={"items": [problem(9)], "timeout_s": 1}, timeout=30)
    assert sync.status_code == 429
    resend = post_job(service, {"job_id": "open-0", "items": [problem(0)]})
    assert resend.status_code == 200  # an idempotent resend is no new job
    assert httpx.delete(f"{service.url}/v1/jobs/{ids[0]}", headers=AUTH).status_code == 200
    assert post_job(service, {"items": [problem(9)]}).status_code == 202


def test_finished_jobs_expire(service: Service, queue: Queue) -> None:
    job_id = post_job(service, {"items": [problem(i) for i in range(2)]}).json()["job_id"]
    cancelled = post_job(service, {"items": [problem(5)]}).json()["job_id"]
    assert httpx.delete(f"{service.url}/v1/jobs/{cancelled}", headers=AUTH).status_code == 200
    settle_all(queue, job_id)
    assert queue.jobs.status(job_id).status == "completed"  # type: ignore[union-attr]
    for key in (queue.keys.job(job_id), queue.keys.results(job_id)):
        assert 0 < queue.redis.pttl(key) <= 1000, key
    assert 0 < queue.redis.pttl(queue.keys.job(cancelled)) <= 1000
    time.sleep(1.2)
    assert httpx.get(f"{service.url}/v1/jobs/{job_id}", headers=AUTH).status_code == 404
    post_job(service, {"items": [problem(7)]})  # a new job cleans the index
    listed = [j["id"] for j in httpx.get(f"{service.url}/v1/jobs", headers=AUTH).json()["jobs"]]
    assert job_id not in listed and cancelled not in listed
    index = queue.redis.zrange(queue.keys.jobs, 0, -1)
    assert job_id not in index and cancelled not in index
    leftovers = [k for k in queue.redis.scan_iter(match=f"{queue.prefix}:*{job_id}*")]
    assert leftovers == []


def test_cancel_removes_queued_tasks_in_bulk(queue: Queue) -> None:
    queue.jobs.create("big", problems(20_000, "big"), feed_trainer=False)
    in_flight = queue.tasks.claim("w", count=3, block_ms=0)
    assert queue.jobs.cancel("big") is True
    state = queue.jobs.status("big")
    assert state is not None and state.skipped == 20_000 - 3
    assert queue.stats().tasks.length == 3  # only the tasks in hand are left
    for task in in_flight:
        assert queue.tasks.complete(task, example(task.problem, "self")) is False
    assert queue.jobs.status("big").remaining == 0  # type: ignore[union-attr]

    queue.jobs.create("small", problems(1, "small"), feed_trainer=False)
    start = time.monotonic()
    while queue.jobs.status("small").status != "completed":  # type: ignore[union-attr]
        assert time.monotonic() - start < 2.0, "the new job waits behind cancelled tasks"
        for task in queue.tasks.claim("w", count=1, block_ms=10):
            queue.tasks.complete(task, example(task.problem, "self"))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of our own, so its command counts are ours alone."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _status_reads(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


def _wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sync_rewrite_stops_polling_when_the_client_leaves(own_redis: str,
                                                           tmp_path: Path) -> None:
    service = start_rewriter(own_redis, "mgtest", tmp_path)
    client = redis.Redis.from_url(own_redis, decode_responses=True)
    Queue.from_url(own_redis, "mgtest").heartbeats.beat("w", ttl_s=60)  # a (silent) worker
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{service.url}/v1/rewrite", headers=AUTH,
                       json={"items": [problem(0)], "timeout_s": 600}, timeout=1.0)
        time.sleep(0.5)  # the server notices the disconnect at its next poll
        before = _status_reads(client)
        time.sleep(1.5)
        assert _status_reads(client) - before == 0
        jobs = client.zrange("mgtest:jobs", 0, -1)
        assert len(jobs) == 1
        assert client.hget(f"mgtest:job:{jobs[0]}", "status") == "cancelled"
    finally:
        service.stop()


def test_sigterm_ends_a_waiting_sync_rewrite(own_redis: str, tmp_path: Path) -> None:
    service = start_rewriter(own_redis, "mgtest", tmp_path)
    client = redis.Redis.from_url(own_redis, decode_responses=True)
    Queue.from_url(own_redis, "mgtest").heartbeats.beat("w", ttl_s=60)  # a (silent) worker
    answers: list[httpx.Response] = []

    def wait() -> None:
        answers.append(httpx.post(f"{service.url}/v1/rewrite", headers=AUTH,
                                  json={"items": [problem(0)], "timeout_s": 600}, timeout=30))

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    try:
        _wait_for(lambda: client.zcard("mgtest:jobs") == 1)
        time.sleep(0.3)
        start = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        service.process.wait(timeout=10)
        assert time.monotonic() - start < 5
        waiter.join(timeout=5)
        assert answers and answers[0].status_code == 503, answers
        job_id = answers[0].json()["job_id"]
        assert client.hget(f"mgtest:job:{job_id}", "status") == "queued"  # it goes on
    finally:
        service.stop()
        drop_keys(client, "mgtest")
