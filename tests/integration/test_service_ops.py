"""The service as operators use it: the ``/rewrite`` and ``/verify`` aliases, readiness while
a worker is busy for longer than its heartbeat's TTL, the immediate 503 without a worker,
and job progress that moves within one long batch. A real rewriter app (uvicorn), real
Redis and real workers (threads of this process) with a slow scripted engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from mindgap.queue import Queue
from mindgap.queue.heartbeats import WorkerState
from mindgap.rewriter.engines.base import Engine, Sample
from mindgap.rewriter.engines.scripted import ScriptedEngine
from mindgap.rewriter.worker import Worker
from mindgap.verifier.pool import LocalVerifier
from tests.conftest import REDIS_URL, Service, serving_rewriter

AUTH = {"Authorization": "Bearer test-key"}

pytestmark = pytest.mark.timeout(120)


class RoundEngine(ScriptedEngine):
    """Sleeps ``delay_s`` per call; a question tagged ``ANSWER=<n> AT=<r>`` is answered
    right from the r-th call on (0-based), wrong before."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(self._answer)
        self.delay_s = delay_s

    @staticmethod
    def _answer(prompt: str, index: int) -> str:
        answer = prompt.split("ANSWER=")[1].split()[0]
        at = int(prompt.split("AT=")[1].split()[0]) if "AT=" in prompt else 0
        return f"so \\boxed{{{answer if index // 1000 >= at else 'wrong'}}}"

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        time.sleep(self.delay_s)
        return super().generate(prompts, n, temperature, top_p, max_tokens, seed)


def problems(count: int, tag: str = "q", rounds: bool = False) -> list[dict[str, Any]]:
    """``count`` problems; with ``rounds``, problem i is solved at the (i+1)-th call."""
    return [{"id": f"{tag}{i}", "question": f"Sum {i}? ANSWER={i}" + (f" AT={i}" if rounds
                                                                       else ""),
             "solution": f"It is {i}.\n#### {i}"} for i in range(count)]


@pytest.fixture
def queue(prefix: str) -> Iterator[Queue]:
    q = Queue.from_url(REDIS_URL, prefix)
    yield q
    q.close()


@pytest.fixture
def service(prefix: str, queue: Queue) -> Iterator[Service]:
    """The rewriter app under uvicorn on the test's prefix, API key ``test-key``."""
    with serving_rewriter(prefix) as svc:
        yield svc


@contextmanager
def running_worker(prefix: str, delay_s: float, name: str = "w0", batch_size: int = 8,
                   engine: Engine | None = None) -> Iterator[Worker]:
    """A worker thread with ``engine`` (default ``RoundEngine(delay_s)``); heartbeats every
    0.3 s, TTL 1 s."""
    queue = Queue.from_url(REDIS_URL, prefix, visibility_timeout_ms=60_000)
    with LocalVerifier(workers=1) as verifier:
        worker = Worker(queue, engine or RoundEngine(delay_s), verifier, name,
                        batch_size=batch_size, block_ms=100, heartbeat_every_s=0.3,
                        heartbeat_ttl_s=1)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while name not in queue.heartbeats.live():
                assert time.monotonic() < deadline, "the worker never beat"
                time.sleep(0.05)
            yield worker
        finally:
            worker.stop.set()
            thread.join(timeout=30)
            queue.close()


def live_workers_metric(service: Service) -> float:
    text = httpx.get(f"{service.url}/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("mindgap_rewriter_live_workers "))
    return float(line.split()[1])


def test_rewrite_alias_is_v1_rewrite(service: Service, prefix: str) -> None:
    body = {"items": problems(2, "a"), "options": {"k_self": 1, "k_guided": 0}}
    assert httpx.post(f"{service.url}/rewrite", json=body).status_code == 401
    schema = httpx.get(f"{service.url}/openapi.json").json()
    alias, v1 = schema["paths"]["/rewrite"]["post"], schema["paths"]["/v1/rewrite"]["post"]
    assert alias["requestBody"] == v1["requestBody"]
    assert alias["responses"] == v1["responses"] and "alias" in alias["summary"]
    with running_worker(prefix, 0.0):
        replies = [httpx.post(f"{service.url}{path}", headers=AUTH, json=body, timeout=60)
                   for path in ("/rewrite", "/v1/rewrite")]
    for reply in replies:
        assert reply.status_code == 200, reply.text
        assert [e["problem_id"] for e in reply.json()["examples"]] == ["a0", "a1"]
        assert reply.json()["status"] == "completed"


def test_rewrite_without_a_live_worker_is_503_at_once(service: Service, queue: Queue) -> None:
    for path in ("/rewrite", "/v1/rewrite"):
        start = time.monotonic()
        reply = httpx.post(f"{service.url}{path}", headers=AUTH,
                           json={"items": problems(1), "timeout_s": 600}, timeout=30)
        assert reply.status_code == 503, reply.text
        assert time.monotonic() - start < 3
        assert "no rewriter worker is alive" in reply.json()["detail"]
    assert queue.jobs.newest() == []  # no job was left queued
    assert queue.stats().tasks.length == 0


def test_ready_while_a_worker_is_busy_longer_than_its_ttl(service: Service, prefix: str,
                                                          queue: Queue) -> None:
    with running_worker(prefix, delay_s=4.0) as worker:  # one engine call: 4 x the TTL
        job = httpx.post(f"{service.url}/v1/jobs", headers=AUTH, timeout=30,
                         json={"items": problems(1, "b"), "options": {"k_self": 1}}).json()
        deadline = time.monotonic() + 10
        while worker.activity.state != WorkerState.GENERATING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        busy_since = time.monotonic()
        states = set()
        while time.monotonic() - busy_since < 3.0:  # 3 x the TTL, within one engine call
            ready = httpx.get(f"{service.url}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["workers"] == ["w0"]
            assert live_workers_metric(service) == 1.0
            states |= {b.state for b in queue.heartbeats.workers()}
            time.sleep(0.25)
        assert states == {WorkerState.GENERATING}
        assert queue.jobs.status(job["job_id"]).done == 0  # type: ignore[union-attr]
    assert httpx.get(f"{service.url}/readyz").status_code == 503  # gone at exit
    assert live_workers_metric(service) == 0.0


def test_heartbeat_says_reloading(prefix: str, queue: Queue) -> None:
    with running_worker(prefix, 0.0) as worker:
        with worker.reloading():
            deadline = time.monotonic() + 5
            while [b.state for b in queue.heartbeats.workers()] != [WorkerState.RELOADING]:
                assert time.monotonic() < deadline, queue.heartbeats.workers()
                time.sleep(0.05)
        beat = queue.heartbeats.workers()[0]
        assert beat.model == "scripted" and beat.policy_version == 0


def test_progress_advances_within_one_batch(service: Service, prefix: str) -> None:
    # Four problems in one batch; problem i is solved in round i+1 (one engine call each).
    body = {"items": problems(4, "p", rounds=True),
            "options": {"k_self": 4, "k_guided": 0, "round_size": 1}}
    with running_worker(prefix, delay_s=1.0) as worker:
        job_id = httpx.post(f"{service.url}/v1/jobs", headers=AUTH, json=body,
                            timeout=30).json()["job_id"]
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while not seen or seen[-1]["status"] == "queued" or seen[-1]["finished"] is None:
            assert time.monotonic() < deadline, seen[-1:]
            seen.append(httpx.get(f"{service.url}/v1/jobs/{job_id}", headers=AUTH).json())
            time.sleep(0.1)
        assert worker.stats.batches == 1 and worker.stats.completed == 4
    running = [s for s in seen if s["status"] == "running"]
    assert {1, 2, 3} <= {s["done"] for s in running}  # one more per round
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress), " ".join(f"{s['done']}+{s['in_hand']}" for s in seen)
    assert progress[-1] == 1.0
    assert len({p for p in progress if 0 < p < 1}) >= 3
    assert any(s["in_hand"] > 0 for s in running)
    assert all(s["eta_s"] > 0 for s in running if s["done"] or s["in_hand"])
    assert seen[-1]["counts"] == {"self": 4, "guided": 0, "expert": 0}
    listed = httpx.get(f"{service.url}/v1/jobs", headers=AUTH).json()["jobs"]
    assert [(j["id"], j["progress"]) for j in listed] == [(job_id, 1.0)]


def test_verify_alias_is_v1_verify(verifier_service: Service) -> None:
    url = verifier_service.url
    body = {"response": "so the answer is \\boxed{\\dfrac{3}{4}}", "reference": "0.75"}
    assert httpx.post(f"{url}/verify", json=body).status_code == 401
    alias = httpx.post(f"{url}/verify", json=body, headers=AUTH, timeout=30)
    v1 = httpx.post(f"{url}/v1/verify", json=body, headers=AUTH, timeout=30)
    assert alias.status_code == v1.status_code == 200
    assert alias.json()["correct"] is True and alias.json()["reason"] == v1.json()["reason"]
    schema = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert schema["/verify"]["post"]["requestBody"] == schema["/v1/verify"]["post"]["requestBody"]


def test_docs_are_served_locally_and_labelled_by_route(service: Service) -> None:
    pages = {path: httpx.get(f"{service.url}{path}") for path in ("/docs", "/redoc")}
    for reply in pages.values():
        assert reply.status_code == 200 and "cdn" not in reply.text and "http" not in (
            reply.text.replace("http-equiv", ""))
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        reply = httpx.get(f"{service.url}/docs/assets/{asset}")
        assert reply.status_code == 200 and len(reply.content) > 100_000, asset
        assert f"/docs/assets/{asset}" in pages["/docs"].text + pages["/redoc"].text
    assert httpx.get(f"{service.url}/docs/assets/../app.py").status_code == 404
    assert httpx.get(f"{service.url}/openapi.json").status_code == 200
    text = httpx.get(f"{service.url}/metrics").text
    for route in ("/docs", "/redoc", "/openapi.json", "/docs/assets/{name}"):
        assert f'mindgap_rewriter_requests_total{{route="{route}",status="200"}}' in text
    assert 'route="unmatched",status="200"' not in text
