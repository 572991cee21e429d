"""The rewriter API as a real uvicorn process over a real Redis; the test plays the worker."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from mindgap.queue import Queue, Task
from mindgap.schemas import (
    AlignedExample,
    AttemptCounts,
    Behavior,
    Problem,
    RewriteOptions,
    SamplingParams,
    Source,
    Timings,
)
from tests.conftest import (
    Service,
    drop_keys,
    run_schemathesis,
    serving_rewriter,
)

URL = "redis://127.0.0.1:6379/0"
AUTH = {"Authorization": "Bearer test-key"}

pytestmark = pytest.mark.timeout(60)


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"mgtest:rw:{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def queue(prefix: str) -> Iterator[Queue]:
    """The test's own handle on the service's queue; the prefix's keys are deleted after."""
    if not _redis_up():
        pytest.skip(f"no Redis at {URL}")
    q = Queue.from_url(URL, prefix)
    yield q
    drop_keys(q.redis, prefix)
    q.close()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service's data root: server-side data sets must lie under it."""
    return tmp_path_factory.mktemp("data-root")


@pytest.fixture(scope="module")
def service(queue: Queue, prefix: str, data_root: Path) -> Iterator[Service]:
    """The rewriter app under uvicorn, on the test prefix, with API key ``test-key``."""
    with serving_rewriter(prefix, MINDGAP_REWRITER_MAX_BODY_BYTES=str(1024 * 1024),
                          MINDGAP_REWRITER_DATA_ROOT=str(data_root)) as svc:
        yield svc


def problem(i: int, tag: str = "p") -> dict[str, Any]:
    return {"id": f"{tag}{i}", "question": f"What is {i} + {i}?",
            "solution": f"{i} + {i} = {2 * i}. \\boxed{{{2 * i}}}", "answer": str(2 * i)}


def example(p: Problem, source: Source) -> AlignedExample:
    """A hand-made aligned example (no model needed)."""
    behavior = None if source == "expert" else Behavior(
        logprobs=[-0.5, -0.25], prompt_kind="plain" if source == "self" else "guided",
        model="fake", sampling=SamplingParams.of(RewriteOptions()))
    return AlignedExample(id=f"{p.id}@0", problem_id=p.id, prompt=f"Q: {p.question}",
                          response=f"\\boxed{{{p.answer}}}", response_token_ids=[1, 2],
                          source=source, reference_answer=p.answer or "",
                          expert_solution=p.solution, behavior=behavior,
                          attempts=AttemptCounts(), timings=Timings())


def claim(queue: Queue, job_id: str, n: int) -> list[Task]:
    """Claim ``n`` tasks of one job (other jobs' tasks stay with a throwaway consumer)."""
    consumer = f"test-{uuid.uuid4().hex[:8]}"
    mine: list[Task] = []
    for _ in range(50):
        tasks = queue.tasks.claim(consumer, count=100, block_ms=100)
        mine += [t for t in tasks if t.job_id == job_id]
        if len(mine) >= n:
            break
    assert len(mine) == n, f"claimed {len(mine)} tasks of {job_id}, wanted {n}"
    return mine


def post_job(service: Service, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{service.url}/v1/jobs", headers=AUTH, json=body, timeout=30)


def test_v1_routes_need_the_key(service: Service) -> None:
    body = {"items": [problem(0)]}
    missing = httpx.post(f"{service.url}/v1/jobs", json=body)
    wrong = httpx.get(f"{service.url}/v1/jobs", headers={"Authorization": "Bearer nope"})
    sync = httpx.post(f"{service.url}/v1/rewrite", json=body)
    assert (missing.status_code, wrong.status_code, sync.status_code) == (401, 401, 401)
    assert "API key" in missing.json()["detail"]
    assert httpx.get(f"{service.url}/healthz").status_code == 200


def test_invalid_inline_rows_are_named(service: Service) -> None:
    bad = {**problem(1), "question": ""}
    reply = post_job(service, {"items": [problem(0), bad, {**problem(2), "extra": 1}]})
    assert reply.status_code == 422
    fields = [e["field"] for e in reply.json()["errors"]]
    assert fields == ["items.1.question", "items.2.extra"]
    assert reply.json()["detail"].startswith("items.1.question")

    dup = post_job(service, {"items": [problem(0), problem(1), problem(0)]})
    assert dup.status_code == 422
    assert dup.json()["errors"][0]["field"] == "items.2.id"
    assert "duplicate" in dup.json()["detail"]

    neither = post_job(service, {"options": {}})
    assert neither.status_code == 422 and "exactly one" in neither.json()["detail"]
    options = post_job(service, {"items": [problem(0)], "options": {"k_self": -1}})
    assert options.status_code == 422 and options.json()["detail"].startswith("options.k_self")


def test_dataset_rows_are_read_and_checked(service: Service, queue: Queue,
                                           data_root: Path) -> None:
    good = data_root / "good.jsonl"
    good.write_text("".join(json.dumps(problem(i)) + "\n" for i in range(3)))
    bad = data_root / "bad.jsonl"
    rows = [problem(0), {k: v for k, v in problem(1).items() if k != "question"}, problem(2),
            {**problem(3), "solution": 7}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))

    reply = post_job(service, {"dataset": {"path": str(bad)}})
    assert reply.status_code == 422
    body = reply.json()
    assert [e["line"] for e in body["errors"]] == [2, 4]
    assert "field 'question': missing" in body["errors"][0]["message"]
    assert body["error_count"] == 2 and f"{bad}:2:" in body["detail"]

    missing = post_job(service, {"dataset": {"path": str(data_root / "none.jsonl")}})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "dataset.path"
    folder = post_job(service, {"dataset": {"path": str(data_root)}})
    assert folder.status_code == 422 and "save_to_disk" in folder.json()["detail"]
    preset = post_job(service, {"dataset": {"path": str(good), "preset": "nope"}})
    assert preset.status_code == 422 and "dataset.preset" in preset.json()["detail"]

    ok = post_job(service, {"dataset": {"path": str(good), "limit": 2}, "feed_trainer": False})
    assert ok.status_code == 202, ok.text
    assert ok.json()["total"] == 2 and ok.json()["status"] == "queued"
    job_id = ok.json()["job_id"]
    status = queue.jobs.status(job_id)
    assert status is not None and status.feed_trainer is False
    assert httpx.delete(f"{service.url}/v1/jobs/{job_id}", headers=AUTH).status_code == 200


def test_job_lifecycle_and_results(service: Service, queue: Queue) -> None:
    job_id = f"life-{uuid.uuid4().hex[:8]}"
    items = [problem(i) for i in range(3)]
    created = post_job(service, {"job_id": job_id, "items": items, "options": {"k_self": 2}})
    assert created.status_code == 202, created.text
    assert created.json() == {"job_id": job_id, "status": "queued", "total": 3, "created": True}
    assert created.headers["location"] == f"/v1/jobs/{job_id}"
    again = post_job(service, {"job_id": job_id, "items": items, "options": {"k_self": 2}})
    assert again.status_code == 200 and again.json()["created"] is False
    clash = post_job(service, {"job_id": job_id, "items": [problem(9)]})
    assert clash.status_code == 409 and "other problems" in clash.json()["detail"]

    url = f"{service.url}/v1/jobs/{job_id}"
    status = httpx.get(url, headers=AUTH).json()
    assert (status["status"], status["total"], status["done"], status["eta_s"]) == \
        ("queued", 3, 0, None)
    assert status["options"]["k_self"] == 2 and status["feed_trainer"] is True

    aligned_before = queue.redis.xlen(queue.keys.aligned)
    tasks = claim(queue, job_id, 3)
    time.sleep(0.05)  # a measurable elapsed time for the rate
    for task, source in zip(tasks[:2], ("self", "guided"), strict=True):
        assert queue.tasks.complete(task, example(task.problem, source))
    status = httpx.get(url, headers=AUTH).json()
    assert (status["status"], status["done"], status["remaining"]) == ("running", 2, 1)
    assert status["counts"] == {"self": 1, "guided": 1, "expert": 0}
    assert status["rate"] > 0 and status["eta_s"] > 0

    first = httpx.get(f"{url}/results", headers=AUTH)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/x-ndjson")
    assert first.headers["x-job-status"] == "running"
    lines = [AlignedExample.model_validate_json(line) for line in first.text.splitlines()]
    assert [e.source for e in lines] == ["self", "guided"]
    cursor = first.headers["x-last-entry-id"]

    assert queue.tasks.complete(tasks[2], example(tasks[2].problem, "expert"))
    more = httpx.get(f"{url}/results", headers=AUTH, params={"after": cursor})
    assert [json.loads(line)["source"] for line in more.text.splitlines()] == ["expert"]
    assert more.headers["x-job-status"] == "completed"
    none = httpx.get(f"{url}/results", headers=AUTH,
                     params={"after": more.headers["x-last-entry-id"]})
    assert none.text == "" and none.headers["x-last-entry-id"] == more.headers["x-last-entry-id"]
    assert httpx.get(f"{url}/results", headers=AUTH, params={"after": "x"}).status_code == 422

    status = httpx.get(url, headers=AUTH).json()
    assert (status["status"], status["done"], status["eta_s"]) == ("completed", 3, 0.0)
    assert status["finished"] is not None
    assert queue.redis.xlen(queue.keys.aligned) == aligned_before + 3  # fed the trainer

    listed = httpx.get(f"{service.url}/v1/jobs", headers=AUTH, params={"limit": 50}).json()
    assert job_id in [j["id"] for j in listed["jobs"]] and listed["limit"] == 50
    late = httpx.delete(url, headers=AUTH)
    assert late.status_code == 409 and "already finished" in late.json()["detail"]


def test_cancel(service: Service, queue: Queue) -> None:
    created = post_job(service, {"items": [problem(i, "c") for i in range(4)]})
    job_id = created.json()["job_id"]
    url = f"{service.url}/v1/jobs/{job_id}"
    cancelled = httpx.delete(url, headers=AUTH)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    for _ in range(20):  # claiming acknowledges the cancelled job's tasks unprocessed
        queue.tasks.claim(f"test-{uuid.uuid4().hex[:6]}", count=100, block_ms=50)
        if httpx.get(url, headers=AUTH).json()["skipped"] == 4:
            break
    status = httpx.get(url, headers=AUTH).json()
    assert (status["status"], status["skipped"], status["remaining"]) == ("cancelled", 4, 0)
    assert httpx.delete(url, headers=AUTH).status_code == 409


def test_unknown_jobs_are_404(service: Service) -> None:
    for method, path in (("GET", "/v1/jobs/nope"), ("GET", "/v1/jobs/nope/results"),
                         ("DELETE", "/v1/jobs/nope")):
        reply = httpx.request(method, f"{service.url}{path}", headers=AUTH)
        assert reply.status_code == 404, (method, path)
        assert reply.json()["detail"] == "no job 'nope'"


def test_oversized_body_is_413(service: Service) -> None:
    body = {"items": [{**problem(0), "question": "x" * (2 * 1024 * 1024)}]}
    assert post_job(service, body).status_code == 413


def test_readyz_needs_a_worker_heartbeat(service: Service, queue: Queue) -> None:
    before = httpx.get(f"{service.url}/readyz")
    assert before.status_code == 503
    assert before.json()["checks"] == {"redis": "ok", "verifier": "local",
                                       "workers": "no worker heartbeat"}
    queue.heartbeats.beat("w-ready", ttl_s=30)
    try:
        after = httpx.get(f"{service.url}/readyz")
        assert after.status_code == 200, after.text
        assert after.json()["workers"] == ["w-ready"]
        assert queue.redis.ttl(f"{queue.prefix}:workers:w-ready") > 0
    finally:
        queue.heartbeats.gone("w-ready")
    assert httpx.get(f"{service.url}/readyz").status_code == 503
    queue.heartbeats.beat("w-short", ttl_s=1)
    time.sleep(1.1)
    assert queue.heartbeats.live() == []


def test_metrics(service: Service, queue: Queue) -> None:
    job_id = post_job(service, {"items": [problem(i, "m") for i in range(2)]}).json()["job_id"]
    text = httpx.get(f"{service.url}/metrics").text
    httpx.delete(f"{service.url}/v1/jobs/{job_id}", headers=AUTH)
    for name in ("mindgap_rewriter_redis_up 1.0", "mindgap_rewriter_tasks_backlog ",
                 "mindgap_rewriter_tasks_queued ", "mindgap_rewriter_tasks_in_flight ",
                 "mindgap_rewriter_tasks_done ", "mindgap_rewriter_tasks_failed ",
                 "mindgap_rewriter_trainer_lag ", "mindgap_rewriter_live_workers 0.0",
                 'mindgap_rewriter_examples{source="self"}', 'mindgap_rewriter_jobs{status="',
                 'mindgap_rewriter_requests_total{route="/v1/jobs",status="202"}',
                 "mindgap_rewriter_request_seconds_bucket"):
        assert name in text, name
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("mindgap_rewriter_") and " " in line}
    assert values["mindgap_rewriter_tasks_backlog"] >= 2
    assert values["mindgap_rewriter_tasks_done"] >= 3  # the lifecycle test's job
    assert values['mindgap_rewriter_examples{source="guided"}'] >= 1


def test_policy_metrics(service: Service, queue: Queue) -> None:
    """Online rewriting on /metrics: the published version and each worker's."""
    queue.policy.publish(1, "/weights/v1", step=10)
    queue.heartbeats.beat("w-policy", info={"policy_version": 1, "reloads": 1,
                                            "last_reload_s": 2.5})
    try:
        text = httpx.get(f"{service.url}/metrics").text
    finally:
        queue.heartbeats.gone("w-policy")
    for line in ("mindgap_rewriter_policy_version 1.0",
                 'mindgap_rewriter_worker_policy_version{consumer="w-policy"} 1.0',
                 'mindgap_rewriter_worker_reloads{consumer="w-policy"} 1.0',
                 'mindgap_rewriter_worker_last_reload_seconds{consumer="w-policy"} 2.5'):
        assert line in text, line


def test_staleness_metrics(service: Service, queue: Queue) -> None:
    """Online rewriting on /metrics: the trainers' stale drops, re-queues and the staleness
    histogram of what they trained on (from the counters in Redis)."""
    queue.aligned.count_trained({0: 5, 1: 3, 3: 1})
    queue.redis.hset(queue.keys.staleness, mapping={"dropped": 4, "requeued": 2})
    text = httpx.get(f"{service.url}/metrics").text
    for line in ("mindgap_rewriter_stale_dropped 4.0", "mindgap_rewriter_stale_requeued 2.0",
                 'mindgap_rewriter_trained_staleness_bucket{le="0"} 5.0',
                 'mindgap_rewriter_trained_staleness_bucket{le="1"} 8.0',
                 'mindgap_rewriter_trained_staleness_bucket{le="2"} 8.0',
                 'mindgap_rewriter_trained_staleness_bucket{le="4"} 9.0',
                 'mindgap_rewriter_trained_staleness_bucket{le="+Inf"} 9.0',
                 "mindgap_rewriter_trained_staleness_count 9.0",
                 "mindgap_rewriter_trained_staleness_sum 6.0"):
        assert line in text, line


class FakeWorker(threading.Thread):
    """Completes every task with a hand-made example; fails problems whose id starts 'fail'."""

    def __init__(self, prefix: str, heartbeat: bool = False) -> None:
        super().__init__(daemon=True)
        self.queue = Queue.from_url(URL, prefix)
        self.heartbeat = heartbeat
        self.stop = threading.Event()
        self.completed = 0

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.heartbeat:
                    self.queue.heartbeats.beat("fake", ttl_s=10)
                for task in self.queue.tasks.claim("fake", count=64, block_ms=50):
                    if task.problem.id.startswith("fail"):
                        self.queue.tasks.fail(task, "boom", max_deliveries=1)
                    else:
                        self.completed += self.queue.tasks.complete(
                            task, example(task.problem, "self"))
        finally:
            if self.heartbeat:
                self.queue.heartbeats.gone("fake")
            self.queue.close()

    def __enter__(self) -> FakeWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(timeout=10)


def test_sync_rewrite(service: Service, queue: Queue, prefix: str) -> None:
    url = f"{service.url}/v1/rewrite"
    items = [problem(i, "s") for i in range(5)]
    queue.heartbeats.beat("w-silent", ttl_s=30)  # a live worker that takes nothing
    slow = httpx.post(url, headers=AUTH, json={"items": items[:1], "timeout_s": 1}, timeout=30)
    assert slow.status_code == 504
    assert slow.json()["job_id"].startswith("sync-") and "goes on" in slow.json()["detail"]
    too_many = httpx.post(url, headers=AUTH, json={"items": [problem(i) for i in range(65)]})
    assert too_many.status_code == 422 and too_many.json()["detail"].startswith("items")

    with FakeWorker(prefix):
        reply = httpx.post(url, headers=AUTH, json={"items": items[::-1]}, timeout=30)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["status"] == "completed" and body["failed"] == []
        assert [e["problem_id"] for e in body["examples"]] == [p["id"] for p in items[::-1]]

        mixed = [problem(0, "ok"), problem(1, "fail"), problem(2, "ok")]
        reply = httpx.post(url, headers=AUTH, json={"items": mixed}, timeout=30)
        body = reply.json()
        assert body["status"] == "completed_with_failures" and body["failed"] == ["fail1"]
        assert body["examples"][1] is None and body["examples"][2]["problem_id"] == "ok2"
        assert body["last_error"] == "boom"
    queue.heartbeats.gone("w-silent")
    fed = [f["job"] for _, f in queue.redis.xrange(queue.keys.aligned)]

    assert not [job for job in fed if job.startswith("sync-")]  # not fed to the trainer


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error(service: Service, prefix: str) -> None:
    with FakeWorker(prefix, heartbeat=True):  # so /v1/rewrite and /readyz can succeed
        run_schemathesis(service.url, max_examples=40, timeout_s=580)
