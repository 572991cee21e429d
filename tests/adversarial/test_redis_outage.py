"""Defect 2: Redis goes away for longer than any client-level retry budget.

Workers, the trainer's Redis stream and the rewriter API must ride it out: the workers keep
running and resume, nothing is lost or duplicated, the trainer's stream serves every entry
once, and the API answers 503 quickly while Redis is away.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from mindgap.queue import Queue
from mindgap.schemas import RewriteOptions
from mindgap.trainer.redis_source import RedisStream
from mindgap.trainer.testing import synthetic_examples
from tests.conftest import ROOT, Service, free_port, wait_ready
from tests.worker_process import (
    RedisServer,
    done,
    drain_trainer,
    problems,
    result_ids,
    start_workers,
    stop,
    wait_finished,
)

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not installed")

PASSWORD = "s3cret-redis-pw"
HEADERS = {"Authorization": "Bearer test-key"}


def rewriter_api(server: RedisServer, prefix: str) -> Service:
    """``mindgap serve rewriter`` on the test's Redis."""
    port = free_port()
    env = {**os.environ, "MINDGAP_QUEUE_REDIS_URL": server.url, "MINDGAP_QUEUE_PREFIX": prefix,
           "MINDGAP_API_KEY": "test-key"}
    service = Service.start(["-m", "mindgap.cli", "serve", "rewriter", "--port", str(port),
                             "--log-level", "warning"], env, port)
    wait_ready(f"{service.url}/healthz")
    return service


def probe_api(url: str, seconds: float) -> list[tuple[int, float, str]]:
    """(status, seconds, body) of GET /v1/jobs/job1 every 0.5 s for ``seconds``."""
    answers = []
    end = time.monotonic() + seconds
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
        while time.monotonic() < end:
            start = time.monotonic()
            response = client.get("/v1/jobs/job1")
            answers.append((response.status_code, time.monotonic() - start, response.text))
            time.sleep(0.5)
    return answers


def cli_workers(url: str, prefix: str, log: IO[bytes]) -> list[subprocess.Popen[bytes]]:
    """Two real ``mindgap worker`` processes (w0, w1) with the packaged model on CPU."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MINDGAP_VERIFIER_URL", None)
    return [subprocess.Popen([sys.executable, "-m", "mindgap.cli", "worker", "--redis-url", url,
                              "--prefix", prefix, "--consumer", f"w{i}", "--batch-size", "8",
                              "--visibility-timeout-s", "120"], env=env, stderr=log, cwd=ROOT)
            for i in range(2)]


TINY = RewriteOptions(k_self=1, k_guided=1, max_tokens=8).model_dump()
"""Job options that keep the real model's work small."""


def outage_during_job(prefix: str, folder: Path, outage_s: float,
                      cli: bool = False) -> dict[str, Any]:
    """A 200-problem job, two worker processes (scripted, or ``mindgap worker`` with the real
    model) and the API; Redis killed for ``outage_s`` once 20 problems are done."""
    server = RedisServer(free_port(), folder, password=PASSWORD)
    server.start()
    log_path = folder / "workers.log"
    workers: list[subprocess.Popen[bytes]] = []
    api: Service | None = None
    try:
        queue = Queue.from_url(server.url, prefix)
        queue.jobs.create("job1", problems(200), TINY if cli else None)
        api = rewriter_api(server, prefix)
        with log_path.open("wb") as log:
            workers = (cli_workers(server.url, prefix, log) if cli else
                       start_workers(server.url, prefix, 2, delay_s=0.2, stderr=log))
        deadline = time.monotonic() + (600 if cli else 90)
        while done(queue, "job1") < 20:
            assert time.monotonic() < deadline, "workers made no progress"
            time.sleep(0.05)
        server.kill()
        started = time.monotonic()
        answers = probe_api(api.url, outage_s)
        server.start()
        outage = time.monotonic() - started
        status = wait_finished(queue, "job1", 1200 if cli else 180)
        alive = [worker.poll() is None for worker in workers]
        return {"status": status, "results": result_ids(queue, "job1"),
                "trained": drain_trainer(queue), "alive": alive, "answers": answers,
                "outage_s": outage, "log": log_path.read_text()}
    finally:
        stop(workers)
        if api is not None:
            api.stop()
        server.kill()


def check_outage(run: dict[str, Any]) -> None:
    """Nothing lost or duplicated, both workers alive, quick 503s, the outage logged once
    per worker and its end once, no secret or internal address shown."""
    results, trained = Counter(run["results"]), Counter(run["trained"])
    codes = {code for code, _, _ in run["answers"]}
    slowest = max(seconds for _, seconds, _ in run["answers"])
    print(f"outage {run['outage_s']:.1f} s: {len(results)}/200 problems with results "
          f"(max {max(results.values())} each), {len(trained)}/200 trained (max "
          f"{max(trained.values())} each), workers alive {run['alive']}, "
          f"{len(run['answers'])} API answers {codes}, slowest {slowest:.2f} s")
    expected = {f"q{i}" for i in range(200)}
    assert set(results) == expected and set(results.values()) == {1}
    assert set(trained) == expected and set(trained.values()) == {1}
    assert run["status"].status == "completed" and run["status"].done == 200
    assert run["alive"] == [True, True]
    assert codes == {503}
    assert slowest < 2.0
    for _, _, body in run["answers"]:
        assert PASSWORD not in body and "127.0.0.1" not in body
    log = run["log"]
    assert PASSWORD not in log
    for worker in ("w0", "w1"):
        assert log.count(f"worker {worker}: Redis unreachable") == 1, log[-3000:]
        assert log.count(f"worker {worker}: Redis reachable again") == 1, log[-3000:]
    assert "Traceback" not in log


def test_workers_and_api_ride_out_a_20s_outage(prefix: str, tmp_path: Path) -> None:
    check_outage(outage_during_job(prefix, tmp_path, 20.0))


@pytest.mark.slow
def test_workers_and_api_ride_out_a_60s_outage(prefix: str, tmp_path: Path) -> None:
    check_outage(outage_during_job(prefix, tmp_path, 60.0))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not os.environ.get("MINDGAP_LONG_TESTS"), reason="about 8 minutes with the "
                    "real model on 2 cores; MINDGAP_LONG_TESTS=1 runs it (the scripted 60 s "
                    "outage test above runs in CI)")
def test_mindgap_worker_processes_ride_out_a_60s_outage(prefix: str, tmp_path: Path) -> None:
    """The acceptance case: two real ``mindgap worker`` processes (packaged model, CPU)."""
    check_outage(outage_during_job(prefix, tmp_path, 60.0, cli=True))


def test_trainer_stream_rides_out_an_outage(prefix: str, tmp_path: Path) -> None:
    """The trainer's stream waits for Redis (no client-level retries at all) while reading
    and while acknowledging; every entry is served once."""
    server = RedisServer(free_port(), tmp_path)
    server.start()
    restarts: list[threading.Timer] = []
    try:
        queue = Queue.from_url(server.url, prefix, retries=0)
        queue.aligned.publish(synthetic_examples(30))
        stream = RedisStream(queue, consumer="t0", block_ms=200, idle_timeout_s=1.0)
        served: list[str] = []
        for _ in range(4):
            batch = stream.next_batch(10)
            served += [entry_id for entry_id, _ in batch]
            stream.commit([entry_id for entry_id, _ in batch])
            if len(served) in (10, 20):  # an outage while reading, then while acknowledging
                server.kill()
                restarts.append(threading.Timer(3.0, server.start))
                restarts[-1].start()
                if len(served) == 20:
                    stream.settle()
        stream.settle()
        assert len(served) == len(set(served)) == 30
        assert queue.aligned.depth().pending == 0
    finally:
        for restart in restarts:
            restart.join()
        server.kill()
