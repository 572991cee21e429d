"""Shared fixtures: paths, free ports, and a real verifier service process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "benchmarks"


def data_file(name: str) -> Path:
    """A benchmark file from ../shared/data/benchmarks, or skip the test with the reason."""
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it lives in ../shared)")
    return path


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
    port = free_port()
    env = {**os.environ, "MINDGAP_API_KEY": "test-key",
           "MINDGAP_VERIFIER_MAX_BODY_BYTES": str(4 * 1024 * 1024),
           "MINDGAP_VERIFIER_TIMEOUT_S": "3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mindgap.cli", "serve", "verifier", "--port", str(port),
         "--workers", "2", "--log-level", "warning"], env=env, cwd=ROOT)
    service = Service(process, f"http://127.0.0.1:{port}")
    try:
        wait_ready(f"{service.url}/readyz")
        yield service
    finally:
        service.stop()
