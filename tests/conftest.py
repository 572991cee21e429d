"""Shared fixtures: paths, free ports, Redis prefixes, and a real verifier service process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "benchmarks"


def data_file(name: str) -> Path:
    """A benchmark file from ../shared/data/benchmarks, or skip the test with the reason."""
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it lives in ../shared)")
    return path


REDIS_URL = os.environ.get("MINDGAP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""The Redis integration tests use (each under its own key prefix)."""


def drop_keys(client: redis.Redis, prefix: str) -> None:
    """Delete every key under ``prefix:``."""
    for key in client.scan_iter(match=f"{prefix}:*", count=500):
        client.delete(key)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh queue key prefix on ``REDIS_URL``, its keys deleted after the test."""
    name = f"mgtest:{uuid.uuid4().hex[:12]}"
    yield name
    drop_keys(redis.Redis.from_url(REDIS_URL), name)


def run_schemathesis(url: str, max_examples: int, timeout_s: float) -> None:
    """Fuzz a service's OpenAPI with schemathesis; fail on any server error or any answer
    that does not match its documented schema."""
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
         "--checks", "not_a_server_error,response_schema_conformance",
         "--header", "Authorization: Bearer test-key",
         "--max-examples", str(max_examples), "--seed", "1"],
        capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
    )
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout_s: float = 60.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


class Service:
    """A service subprocess and its base URL."""

    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    def start(cls, args: list[str], env: dict[str, str], port: int) -> Service:
        """Run ``python ARGS`` from the checkout; it is to listen on 127.0.0.1:``port``."""
        process = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT)
        return cls(process, f"http://127.0.0.1:{port}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def verifier_service() -> Iterator[Service]:
    """A real ``mindgap serve verifier`` process with API key ``test-key``, 2 workers."""
    env = {**os.environ, "MINDGAP_API_KEY": "test-key",
           "MINDGAP_VERIFIER_MAX_BODY_BYTES": str(4 * 1024 * 1024),
           "MINDGAP_VERIFIER_TIMEOUT_S": "3"}
    with serving_verifier(env, workers=2) as service:
        yield service


@contextmanager
def serving_rewriter(prefix: str, **settings: str) -> Iterator[Service]:
    """The rewriter app under uvicorn on the queue ``prefix``, API key ``test-key``, no
    verifier URL; ``settings`` are more environment variables. Stopped after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MINDGAP_VERIFIER_URL"}
    env.update({"MINDGAP_API_KEY": "test-key", "MINDGAP_QUEUE_PREFIX": prefix,
                "MINDGAP_QUEUE_REDIS_URL": REDIS_URL, **settings})
    code = ("import uvicorn; from mindgap.rewriter.app import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={port}, log_level='warning')")
    service = Service.start(["-c", code], env, port)
    try:
        wait_ready(f"{service.url}/healthz")
        yield service
    finally:
        service.stop()


@contextmanager
def serving_verifier(env: dict[str, str], workers: int) -> Iterator[Service]:
    """``mindgap serve verifier`` with ``env`` on a free port, once ready; stopped after."""
    port = free_port()
    service = Service.start(["-m", "mindgap.cli", "serve", "verifier", "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning"], env, port)
    try:
        wait_ready(f"{service.url}/readyz")
        yield service
    finally:
        service.stop()
