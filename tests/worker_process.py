"""A rewriter worker process with a scripted engine, and the helpers of multi-process queue
tests (problems, worker processes, a Redis server of their own, reading a job's results).

Run: ``python -m tests.worker_process REDIS_URL PREFIX CONSUMER [DELAY_S] [--visibility-ms MS]
[--batch-size N] [--reload-s S]`` (a policy reload then takes S seconds). The engine answers
``\\boxed{<n>}`` for a question tagged ``ANSWER=<n>`` and raises for one tagged ``POISON``.
The worker logs as ``mindgap worker`` does (redacted).
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mindgap import redact
from mindgap.queue import FINISHED, JobState, Queue
from mindgap.rewriter.engines.base import Sample
from mindgap.rewriter.engines.scripted import ScriptedEngine
from mindgap.rewriter.worker import Worker
from mindgap.schemas import AlignedExample, Problem
from mindgap.verifier.pool import LocalVerifier

ROOT = Path(__file__).resolve().parents[1]


class SlowScriptedEngine(ScriptedEngine):
    """Scripted answers after a fixed delay per call; raises on poisoned prompts."""

    def __init__(self, delay_s: float, reload_s: float = 0.0) -> None:
        super().__init__(lambda prompt, i: "so \\boxed{"
                         + prompt.split("ANSWER=")[1].split()[0] + "}")
        self.delay_s = delay_s
        self.reload_s = reload_s

    def load_policy(self, path: str, version: int) -> None:
        """A reload that takes ``reload_s`` (what a model load looks like)."""
        time.sleep(self.reload_s)
        super().load_policy(path, version)

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        if any("POISON" in p for p in prompts):
            raise RuntimeError("scripted engine refuses a POISON prompt")
        time.sleep(self.delay_s)
        return super().generate(prompts, n, temperature, top_p, max_tokens, seed)


# --- helpers of the tests that run these processes ------------------------------------------


def problems(count: int, poison: int | None = None) -> list[Problem]:
    """``q0 .. q<count-1>``, answers tagged for the scripted engine; ``poison`` refused."""
    return [Problem(id=f"q{i}", question=f"Sum {i}? ANSWER={i}"
                    + (" POISON" if i == poison else ""),
                    solution=f"It is {i}.\n#### {i}") for i in range(count)]


def start_workers(url: str, prefix: str, count: int, delay_s: float, *,
                  visibility_ms: int = 1500, stderr: IO[bytes] | None = None,
                  reload_s: float = 0.0, first: int = 0) -> list[subprocess.Popen[bytes]]:
    """``count`` worker processes ``w<first> ..`` on the queue."""
    return [subprocess.Popen([sys.executable, "-m", "tests.worker_process", url, prefix,
                              f"w{i}", str(delay_s), "--visibility-ms", str(visibility_ms),
                              "--reload-s", str(reload_s)],
                             cwd=ROOT, stderr=stderr) for i in range(first, first + count)]


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process still running, SIGKILL those that do not end within 30 s."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_finished(queue: Queue, job_id: str, timeout_s: float) -> JobState:
    """The job's state once finished (polled every 0.2 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = queue.jobs.status(job_id)
        if status and status.status in FINISHED:
            return status
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} not finished: {queue.jobs.status(job_id)}")


def done(queue: Queue, job_id: str) -> int:
    """How many of the job's problems are done (0 while Redis cannot say)."""
    state = queue.jobs.status(job_id)
    return state.done if state else 0


def result_ids(queue: Queue, job_id: str) -> list[str]:
    """Problem ids of the job's results, in completion order (as the API serves them)."""
    return [AlignedExample.model_validate_json(raw).problem_id
            for _, raw in queue.jobs.results(job_id)]


def drain_trainer(queue: Queue) -> list[str]:
    """Problem ids delivered to one trainer consumer (and acked)."""
    seen = []
    while batch := queue.aligned.read_new("trainer-0", count=100, block_ms=200):
        seen += [example.problem_id for _, example in batch]
        queue.aligned.ack([entry for entry, _ in batch])
    return seen


class RedisServer:
    """A ``redis-server`` of a test's own on ``port``, persisted (AOF, fsync always) in
    ``folder`` so that it can be killed and started again with its data."""

    def __init__(self, port: int, folder: Path, password: str | None = None) -> None:
        self.command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                        "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                        "--dir", str(folder)]
        if password:
            self.command += ["--requirepass", password]
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers (data loaded)."""
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            client = redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0))
            try:
                client.ping()
                return
            except redis.ConnectionError:  # not listening yet, or loading its data
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                client.close()

    def kill(self) -> None:
        """SIGKILL (what a crash or a lost host looks like to clients)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("url", "prefix", "consumer"):
        parser.add_argument(name)
    parser.add_argument("delay_s", nargs="?", type=float, default=0.0)
    parser.add_argument("--visibility-ms", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--reload-s", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    redact.install()
    queue = Queue.from_url(args.url, args.prefix, visibility_timeout_ms=args.visibility_ms)
    with LocalVerifier(workers=1) as verifier:
        worker = Worker(queue, SlowScriptedEngine(args.delay_s, args.reload_s), verifier,
                        args.consumer,
                        batch_size=args.batch_size, block_ms=200)
        worker.install_signal_handlers()
        worker.run()


if __name__ == "__main__":
    main()
