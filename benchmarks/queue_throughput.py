"""Queue throughput: tasks -> workers -> aligned, with an instant engine and the real verifier.

Two ``mindgap`` worker processes (the production ``Worker`` with its sandboxed
``LocalVerifier``; only the engine is replaced by one that answers instantly) drain one job
from a local Redis. Reported: examples/s end to end, p50/p99 task latency (enqueue to
result), and backpressure: with no trainer reading, the trainers' lag must stay under the
high-water mark; once a trainer drains, the job completes.

Run: ``.venv/bin/python benchmarks/queue_throughput.py [--problems 20000]``.
Results: ``benchmarks/results/queue_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]

from _machine import format_table, machine_info  # noqa: E402

from mindgap.queue import FINISHED, Backpressure, JobState, Queue  # noqa: E402
from mindgap.rewriter.engines.base import Engine, Sample  # noqa: E402
from mindgap.schemas import Problem  # noqa: E402

OUTPUT = PROJECT_ROOT / "benchmarks/results/queue_throughput.json"
TARGET_EXAMPLES_PER_S = 2000.0


class InstantEngine(Engine):
    """Answers ``\\boxed{n}`` for a question tagged ``ANSWER=n``, at once."""

    model_name = "instant"
    eos_token_id = 0

    def render_chat(self, user_message: str) -> str:
        return user_message

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) % 256 for c in text]

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        out = []
        for prompt in prompts:
            text = "\\boxed{" + prompt.split("ANSWER=")[1].split()[0] + "}"
            out.append([Sample(text, self.tokenize(text), [-0.1] * len(text), "stop")] * n)
        return out

    def _score_tokens(self, prompt_ids: list[int], token_ids: list[int],
                      temperature: float) -> list[float]:
        return [-0.1] * len(token_ids)


def run_worker(url: str, prefix: str, name: str, high: int, low: int, latency_file: str) -> None:
    """Worker process body: the production Worker with the instant engine."""
    from mindgap.rewriter.worker import Worker
    from mindgap.verifier.pool import LocalVerifier

    queue = Queue.from_url(url, prefix)
    pressure = Backpressure(queue.aligned, high, low, interval_s=0.05) if high > 0 else None
    latencies: list[float] = []
    with LocalVerifier(workers=1) as verifier:
        worker = Worker(queue, InstantEngine(), verifier, name, batch_size=256, block_ms=100,
                        backpressure=pressure)
        worker.install_signal_handlers()
        original = queue.tasks.complete_many

        def complete(done):  # type: ignore[no-untyped-def]
            recorded = original(done)
            now = time.time()
            latencies.extend(now - int(task.entry_id.split("-")[0]) / 1000 for task, _ in done)
            return recorded

        queue.tasks.complete_many = complete  # type: ignore[method-assign]
        worker.run()
    Path(latency_file).write_text(json.dumps(latencies))


def problems(count: int, tag: str) -> list[Problem]:
    return [Problem(id=f"{tag}{i}", question=f"Add it up. ANSWER={i % 997}",
                    solution=f"#### {i % 997}") for i in range(count)]


def start_workers(url: str, prefix: str, count: int, high: int, low: int,
                  tmp: Path) -> list[tuple[subprocess.Popen[bytes], Path]]:
    started = []
    for i in range(count):
        path = tmp / f"latency-{prefix}-{i}.json"
        process = subprocess.Popen(
            [sys.executable, __file__, "--worker", url, prefix, f"bench-{i}", str(high),
             str(low), str(path)], cwd=PROJECT_ROOT)
        started.append((process, path))
    return started


def stop_workers(started: list[tuple[subprocess.Popen[bytes], Path]]) -> list[float]:
    for process, _ in started:
        process.send_signal(signal.SIGTERM)
    latencies: list[float] = []
    for process, path in started:
        process.wait(timeout=60)
        if path.exists():
            latencies += json.loads(path.read_text())
            path.unlink()
    return latencies


def wait_status(queue: Queue, job: str, timeout_s: float, on_tick: Any = None) -> JobState:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if on_tick:
            on_tick()
        status = queue.jobs.status(job)
        if status is not None and status.status in FINISHED:
            return status
        time.sleep(0.02)
    raise TimeoutError(f"job {job} not finished: {queue.jobs.status(job)}")


def throughput(url: str, count: int, workers: int, tmp: Path) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    queue = Queue.from_url(url, prefix)
    try:
        started = start_workers(url, prefix, workers, 0, 0, tmp)
        time.sleep(3.0)  # workers import, start their sandbox, block on the empty stream
        begin = time.perf_counter()
        queue.jobs.create("throughput", problems(count, "t"), feed_trainer=False)
        enqueued = time.perf_counter() - begin
        status = wait_status(queue, "throughput", 600)
        seconds = time.perf_counter() - begin
        latencies = sorted(stop_workers(started))
        return {"problems": count, "workers": workers, "enqueue_s": enqueued,
                "seconds": seconds, "examples_per_s": status.done / seconds,
                "done": status.done, "failed": status.failed,
                "latency_p50_s": statistics.median(latencies),
                "latency_p99_s": latencies[int(0.99 * (len(latencies) - 1))]}
    finally:
        for key in queue.redis.scan_iter(f"{prefix}:*"):
            queue.redis.delete(key)


def backpressure(url: str, count: int, workers: int, high: int, low: int,
                 tmp: Path) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    queue = Queue.from_url(url, prefix)
    try:
        started = start_workers(url, prefix, workers, high, low, tmp)
        queue.jobs.create("pressure", problems(count, "b"), feed_trainer=True)
        max_lag = 0
        deadline = time.monotonic() + 8.0  # the trainer is stopped for 8 s
        while time.monotonic() < deadline:
            max_lag = max(max_lag, queue.aligned.lag())
            time.sleep(0.02)
        state = queue.jobs.status("pressure")
        done_while_stopped = state.done if state else 0
        drained = 0

        def trainer() -> None:
            nonlocal drained
            batch = queue.aligned.read_new("trainer", count=500, block_ms=0)
            if batch:
                queue.aligned.ack([entry for entry, _ in batch])
                drained += len(batch)

        status = wait_status(queue, "pressure", 600, on_tick=trainer)
        while batch := queue.aligned.read_new("trainer", count=500, block_ms=0):
            queue.aligned.ack([entry for entry, _ in batch])
            drained += len(batch)
        stop_workers(started)
        return {"problems": count, "high_water": high, "low_water": low,
                "max_lag_with_trainer_stopped": max_lag,
                "done_while_trainer_stopped": done_while_stopped,
                "final_status": status.status.value, "drained_by_trainer": drained,
                "lag_bounded": max_lag <= high}
    finally:
        for key in queue.redis.scan_iter(f"{prefix}:*"):
            queue.redis.delete(key)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, prefix, name, high, low, path = sys.argv[2:8]
        run_worker(url, prefix, name, int(high), int(low), path)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--problems", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--high-water", type=int, default=2000)
    parser.add_argument("--low-water", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    tmp = Path("/tmp")
    info = machine_info()
    run = throughput(args.redis_url, args.problems, args.workers, tmp)
    pressure = backpressure(args.redis_url, min(args.problems, 10000), args.workers,
                            args.high_water, args.low_water, tmp)
    verdict = "PASS" if run["examples_per_s"] >= TARGET_EXAMPLES_PER_S else "FAIL"
    rows = [
        ("examples/s (tasks -> workers -> aligned)", f"{run['examples_per_s']:.0f}",
         f">= {TARGET_EXAMPLES_PER_S:.0f}", verdict),
        ("task latency p50 (enqueue -> result)", f"{run['latency_p50_s'] * 1000:.0f} ms", "-",
         "info"),
        ("task latency p99", f"{run['latency_p99_s'] * 1000:.0f} ms", "-", "info"),
        ("max trainer lag, trainer stopped", str(pressure["max_lag_with_trainer_stopped"]),
         f"<= high-water mark {args.high_water}",
         "PASS" if pressure["lag_bounded"] else "FAIL"),
        ("job after the trainer resumed", pressure["final_status"], "completed",
         "PASS" if pressure["final_status"] == "completed" else "FAIL"),
    ]
    print(f"queue throughput: {args.problems} problems, {args.workers} workers, "
          f"{os.cpu_count()} cores")
    print(format_table(["measure", "value", "target", "result"], rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    info["load_average_at_end"] = list(os.getloadavg())
    args.output.write_text(json.dumps({
        "benchmark": "queue_throughput", "machine": info,
        "settings": vars(args) | {"output": str(args.output)},
        "throughput": run, "backpressure": pressure,
        "target_examples_per_s": TARGET_EXAMPLES_PER_S}, indent=2) + "\n")
    print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
