"""Soak: the whole service stack under a mixed load, with Redis and worker failures.

A black-box run of real processes talking HTTP: its own ``redis-server`` (AOF with
``appendfsync always`` in a temporary folder, so a killed Redis restarts with its data),
``mindgap serve verifier``, ``mindgap serve rewriter`` and rewrite workers
(``python -m tests.worker_process``: the production ``Worker`` with a scripted engine, since
``mindgap worker`` has no scripted engine; so run this from the checkout). For
``--duration-s`` seconds, at once:

- verifier clients (closed loop, one request in flight each) post single and batch
  verifications; a share of them are pathological (a power tower, a huge factorial: they run
  into the verifier's timeout) and half of those disconnect after 0.5 s;
- a submitter posts a job of 50-200 inline problems every few seconds (``POST /v1/jobs``,
  retried under the same ``job_id`` when the API fails); a poller downloads each job's results
  once it has finished;
- chaos, every 60-90 s (closer in short runs, so that every run sees at least three events),
  in turn: Redis stopped (SIGSTOP) for 20 s then resumed, a worker killed (SIGKILL) and a new
  one started, Redis killed (SIGKILL), left down 10 s and restarted from its AOF.

Workers or services that die on their own are restarted (as a supervisor would) and counted as
crashes. Then the load stops, the jobs drain (bounded by ``--drain-s``) and every process
group is killed. Reported: requests, p50/p99 latency and errors (429, 503, other 5xx,
timeouts, transport errors) per kind; jobs submitted and completed; problems lost (no result
after the drain) and duplicated (a problem with more than one result in its job's results or on
the trainers' stream); restarts and crashes. A PNG of the latencies over time with the chaos
events marked is saved when matplotlib (the ``plot`` extra) is installed.

Exit status 1 when a problem was lost or duplicated or a process crashed.

Run: ``.venv/bin/python benchmarks/soak.py [--duration-s 600]`` (quick: ``--duration-s 60``).
Results: ``benchmarks/results/soak.json`` and ``soak.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _machine
import httpx
import redis

from mindgap.jobs import FINISHED
from mindgap.queue.keys import Keys

DEFAULT_OUTPUT = _machine.RESULTS / "soak.json"
PREFIX = "soak"
REQUEST_TIMEOUT_S = 60.0
DISCONNECT_AFTER_S = 0.5
THINK_S = 0.05
BATCH_ITEMS = 8
POLL_INTERVAL_S = 1.0
SUBMIT_ATTEMPTS = 30
READY_WAIT_S = 180.0
STOP_GRACE_S = 20.0
MIN_CHAOS_EVENTS = 3
CHAOS_KINDS = ("redis_pause", "worker_kill", "redis_restart")

NORMAL = (("The answer is \\boxed{42}.", "42", True), ("so \\boxed{\\frac{1}{2}}", "0.5", True),
          ("It is 17.\n#### 17", "17", True), ("\\boxed{3}", "4", False),
          ("hence \\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),
          ("x = \\boxed{\\frac{3}{4}}", "0.75", True), ("\\boxed{10}", "It is ten.\n#### 10", True))
"""(response, reference, correct) pairs the verifier answers in milliseconds."""
PATHOLOGICAL = (("\\boxed{9^{9^{9^{9}}}}", "5"), ("\\boxed{5}", "9^{9^{9^{9}}}"),
                ("\\boxed{(10^{10})!}", "5"))
"""Pairs that run into the verifier's timeout (tests/integration/test_verifier_pool.py)."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Sample:
    """One HTTP request: when it started (s since the start), its kind, latency, outcome."""

    t: float
    kind: str
    latency_s: float
    outcome: str


class Recorder:
    """Requests, chaos events and counters, shared by the load threads."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.samples: list[Sample] = []
        self.events: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()

    def now(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start

    def request(self, kind: str, began: float, outcome: str) -> None:
        """Record a request that started at ``began`` (from :meth:`now`) and ended now."""
        with self.lock:
            self.samples.append(Sample(began, kind, self.now() - began, outcome))

    def event(self, kind: str, began: float, detail: str) -> None:
        """Record a chaos event that started at ``began`` and ended now."""
        with self.lock:
            self.events.append({"kind": kind, "start_s": round(began, 3),
                                "end_s": round(self.now(), 3), "detail": detail})

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a named counter."""
        with self.lock:
            self.counts[name] += n


def outcome_of(status: int) -> str:
    """The outcome name of an HTTP status."""
    if status < 400:
        return "ok"
    if status in (429, 503):
        return str(status)
    return "5xx" if status >= 500 else "4xx"


def call(rec: Recorder, kind: str, send: Callable[[], httpx.Response],
         abandon: bool = False) -> httpx.Response | None:
    """Send a request and record it; None when it got no answer. With ``abandon`` a read
    timeout is the client leaving on purpose (outcome ``abandoned``)."""
    began = rec.now()
    try:
        response = send()
    except httpx.ReadTimeout:
        rec.request(kind, began, "abandoned" if abandon else "timeout")
        return None
    except httpx.TimeoutException:
        rec.request(kind, began, "timeout")
        return None
    except httpx.TransportError:
        rec.request(kind, began, "transport")
        return None
    rec.request(kind, began, outcome_of(response.status_code))
    return response


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear between closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """A process in its own process group, its output appended to ``log``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or start again)."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=_machine.PROJECT_ROOT,
                                            stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    @property
    def pid(self) -> int:
        """The process id (and process group id)."""
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the process group; False when no process of it is left."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the process itself (not its children), as an OOM kill would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def terminate(self) -> None:
        """SIGTERM the group (after SIGCONT, in case it is stopped)."""
        if self.process is not None:
            self.signal_group(signal.SIGCONT)
            self.signal_group(signal.SIGTERM)

    def finish(self, deadline: float) -> None:
        """Wait for the process until ``deadline`` (monotonic), then SIGKILL its group."""
        if self.process is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        self.signal_group(signal.SIGKILL)
        self.process.wait()

    def tail(self, lines: int = 15) -> str:
        """The last lines of its output."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_until(ready: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``ready`` until it is true; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (httpx.HTTPError, redis.RedisError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")


class Stack:
    """Redis, the verifier and rewriter services and the workers of one soak run."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.key = f"soak-{uuid.uuid4().hex}"
        self.lock = threading.RLock()
        redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.verifier_url = f"http://127.0.0.1:{free_port()}"
        self.rewriter_url = f"http://127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINDGAP_")}
        self.env = env | {"MINDGAP_API_KEY": self.key, "MINDGAP_QUEUE_REDIS_URL": self.redis_url,
                          "MINDGAP_QUEUE_PREFIX": PREFIX, "MINDGAP_VERIFIER_URL": self.verifier_url,
                          "MINDGAP_VERIFIER_TIMEOUT_S": str(args.verifier_timeout_s)}
        self.redis = Child("redis", [
            "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp)],
            self.env, tmp / "redis.log")
        self.verifier = self._service("verifier", self.verifier_url)
        self.rewriter = self._service("rewriter", self.rewriter_url)
        self.redis_down = False
        self.stopping = False
        self.workers: list[Child] = []
        self.retired: list[Child] = []
        self.restarts: Counter[str] = Counter()
        self.crashes: list[dict[str, Any]] = []

    def _service(self, kind: str, url: str) -> Child:
        port = url.rsplit(":", 1)[1]
        return Child(kind, [sys.executable, "-m", "mindgap.cli", "serve", kind, "--port", port,
                            "--log-level", "warning"], self.env, self.tmp / f"{kind}.log")

    @property
    def auth(self) -> dict[str, str]:
        """The bearer header of this run's API key."""
        return {"Authorization": f"Bearer {self.key}"}

    def new_worker(self) -> Child:
        """Start one more worker process."""
        name = f"soak-w{len(self.workers) + len(self.retired) + 1}"
        worker = Child(name, [sys.executable, "-m", "tests.worker_process", self.redis_url,
                              PREFIX, name, str(self.args.engine_delay_s)],
                       self.env, self.tmp / f"{name}.log")
        worker.start()
        self.workers.append(worker)
        return worker

    def start_redis(self) -> None:
        """Start Redis (again: it replays its AOF) and wait until it answers."""
        self.redis.start()
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        wait_until(lambda: bool(client.ping()), 60, "redis")
        client.close()

    def start(self) -> None:
        """Start everything and wait until both services are ready."""
        self.start_redis()
        self.verifier.start()
        for _ in range(self.args.workers):
            self.new_worker()
        self.rewriter.start()
        for url in (self.verifier_url, self.rewriter_url):
            wait_until(lambda url=url: self._ready(url), READY_WAIT_S, url)

    def _ready(self, url: str) -> bool:
        """Whether the service at ``url`` is ready; RuntimeError when a process has exited."""
        for child in [self.redis, self.verifier, self.rewriter, *self.workers]:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited during start-up")
        return httpx.get(f"{url}/readyz", headers=self.auth, timeout=15).status_code == 200

    def supervise(self, rec: Recorder) -> None:
        """Restart whatever died on its own, recording the crash."""
        with self.lock:
            if self.stopping:
                return
            for worker in [w for w in self.workers if not w.alive()]:
                self._crashed(rec, worker)
                self.workers.remove(worker)
                self.retired.append(worker)
                self.new_worker()
            for child in (self.redis, self.verifier, self.rewriter):
                if not child.alive() and not (child is self.redis and self.redis_down):
                    self._crashed(rec, child)
                    self.start_redis() if child is self.redis else child.start()

    def _crashed(self, rec: Recorder, child: Child) -> None:
        assert child.process is not None
        self.crashes.append({"process": child.name, "at_s": round(rec.now(), 1),
                             "returncode": child.process.returncode, "log_tail": child.tail()})
        self.restarts[f"{child.name.split('-')[0]} crash"] += 1

    def stop(self) -> int:
        """Stop every process group; returns how many groups of killed workers still had
        processes (orphans) before the end."""
        with self.lock:
            self.stopping = True
            orphans = sum(1 for w in self.retired if w.signal_group(signal.SIGKILL))
            for group in ([*self.workers, self.rewriter, self.verifier], [self.redis]):
                for child in group:
                    child.terminate()
                deadline = time.monotonic() + STOP_GRACE_S
                for child in group:
                    child.finish(deadline)
        return orphans


# --------------------------------------------------------------------------- chaos


def pause_redis(stack: Stack, rec: Recorder, rng: random.Random) -> str:
    """SIGSTOP Redis for ``--pause-s``, then SIGCONT."""
    stack.redis.signal_group(signal.SIGSTOP)
    try:
        time.sleep(stack.args.pause_s)
    finally:
        stack.redis.signal_group(signal.SIGCONT)
    stack.restarts["redis paused"] += 1
    return f"redis stopped for {stack.args.pause_s:.0f} s"


def kill_worker(stack: Stack, rec: Recorder, rng: random.Random) -> str:
    """SIGKILL a random worker and start a new one."""
    with stack.lock:
        if stack.stopping:
            return "no worker killed: the soak is stopping"
        victim = rng.choice(stack.workers)
        victim.kill()
        stack.workers.remove(victim)
        stack.retired.append(victim)
        fresh = stack.new_worker()
    stack.restarts["worker killed"] += 1
    return f"killed {victim.name}, started {fresh.name}"


def restart_redis(stack: Stack, rec: Recorder, rng: random.Random) -> str:
    """SIGKILL Redis, leave it down for ``--redis-down-s``, start it again from its AOF."""
    with stack.lock:
        stack.redis_down = True
        stack.redis.signal_group(signal.SIGKILL)
        assert stack.redis.process is not None
        stack.redis.process.wait()
    try:
        time.sleep(stack.args.redis_down_s)
    finally:
        with stack.lock:
            began = time.monotonic()
            if not stack.stopping:
                stack.start_redis()
            stack.redis_down = False
    stack.restarts["redis killed"] += 1
    return (f"redis killed, down {stack.args.redis_down_s:.0f} s, answering "
            f"{time.monotonic() - began:.1f} s after its restart")


CHAOS = {"redis_pause": pause_redis, "worker_kill": kill_worker, "redis_restart": restart_redis}


def chaos_gaps(args: argparse.Namespace) -> tuple[float, float]:
    """Seconds between events: ``--chaos-every-s``, closer in runs too short for
    ``MIN_CHAOS_EVENTS`` of them (the Redis pause included)."""
    low, high = args.chaos_every_s
    scale = min(1.0, max(0.0, args.duration_s - args.pause_s) / (MIN_CHAOS_EVENTS * high))
    return low * scale, high * scale


def chaos_loop(stack: Stack, rec: Recorder, done: threading.Event, seed: int) -> None:
    """One chaos event after another, in ``CHAOS_KINDS`` order, until ``done``."""
    rng = random.Random(seed)
    gaps = chaos_gaps(stack.args)
    turn = 0
    while not done.wait(rng.uniform(*gaps)):
        kind = CHAOS_KINDS[turn % len(CHAOS_KINDS)]
        turn += 1
        began = rec.now()
        detail = CHAOS[kind](stack, rec, rng)
        rec.event(kind, began, detail)
        print(f"[{began:6.1f}-{rec.now():.1f} s] chaos: {detail}", flush=True)


def supervise_loop(stack: Stack, rec: Recorder, done: threading.Event) -> None:
    """Check the processes twice a second until ``done``."""
    while not done.wait(0.5):
        stack.supervise(rec)


# --------------------------------------------------------------------------- load


def verify_normal(client: httpx.Client, rec: Recorder, rng: random.Random) -> None:
    """One single or batch verification of quick pairs, its verdicts checked."""
    if rng.random() < 0.5:
        response, reference, correct = rng.choice(NORMAL)
        reply = call(rec, "verify", lambda: client.post(
            "/v1/verify", json={"response": response, "reference": reference}))
        if reply is not None and reply.status_code == 200 and reply.json()["correct"] != correct:
            rec.count("wrong verdicts")
        return
    pairs = [rng.choice(NORMAL) for _ in range(BATCH_ITEMS)]
    reply = call(rec, "verify_batch", lambda: client.post("/v1/verify/batch", json={
        "items": [{"response": r, "reference": ref} for r, ref, _ in pairs]}))
    if reply is not None and reply.status_code == 200:
        verdicts = [result["correct"] for result in reply.json()["results"]]
        rec.count("wrong verdicts", sum(v != p[2] for v, p in zip(verdicts, pairs, strict=True)))


def verify_pathological(client: httpx.Client, rec: Recorder, rng: random.Random,
                        args: argparse.Namespace) -> None:
    """One pathological verification; some clients leave after ``DISCONNECT_AFTER_S``."""
    response, reference = rng.choice(PATHOLOGICAL)
    body = {"response": response, "reference": reference}
    if rng.random() < args.disconnect_share:
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=DISCONNECT_AFTER_S)
        call(rec, "verify_pathological_abandoned", lambda: httpx.post(
            client.base_url.join("/v1/verify"), json=body, headers=client.headers, timeout=timeout),
            abandon=True)
        return
    reply = call(rec, "verify_pathological", lambda: client.post("/v1/verify", json=body))
    if reply is not None and reply.status_code == 200:
        rec.count(f"pathological answered {reply.json()['reason']}")


def verify_client(stack: Stack, rec: Recorder, done: threading.Event, seed: int) -> None:
    """A verifier client: one request after another until ``done``."""
    rng = random.Random(seed)
    args = stack.args
    with httpx.Client(base_url=stack.verifier_url, headers=stack.auth,
                      timeout=REQUEST_TIMEOUT_S) as client:
        while not done.is_set():
            if rng.random() < args.pathological_share:
                verify_pathological(client, rec, rng, args)
            else:
                verify_normal(client, rec, rng)
            done.wait(THINK_S)


@dataclass
class Job:
    """A job of the soak and what came back for it."""

    id: str
    size: int
    accepted: bool = False
    status: str | None = None
    failed: int = 0
    results: Counter[str] = field(default_factory=Counter)

    def problem_ids(self) -> list[str]:
        """The ids of its problems."""
        return [f"q{i}" for i in range(self.size)]

    def body(self) -> dict[str, Any]:
        """Its ``POST /v1/jobs`` body: problems the scripted engine answers."""
        return {"job_id": self.id, "items": [
            {"id": f"q{i}", "question": f"Sum {i}? ANSWER={i}",
             "solution": f"It is {i}.\n#### {i}"} for i in range(self.size)]}


class JobBook:
    """The jobs of the run (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: list[Job] = []

    def add(self, job: Job) -> None:
        """Record a job about to be submitted."""
        with self.lock:
            self.jobs.append(job)

    def open_jobs(self) -> list[Job]:
        """Accepted jobs whose results are not in yet."""
        with self.lock:
            return [job for job in self.jobs if job.accepted and job.status is None]


def submit(client: httpx.Client, rec: Recorder, job: Job) -> None:
    """Post the job, again under the same id while the API fails (bounded)."""
    for _ in range(SUBMIT_ATTEMPTS):
        reply = call(rec, "api_submit", lambda: client.post("/v1/jobs", json=job.body()))
        if reply is not None and reply.status_code in (200, 202):
            job.accepted = True
            return
        if reply is not None and reply.status_code not in (429, 503) and reply.status_code < 500:
            rec.count(f"job refused {reply.status_code}")
            return
        time.sleep(1.0)
    rec.count("job given up after retries")


def submit_loop(stack: Stack, rec: Recorder, book: JobBook, done: threading.Event,
                seed: int) -> None:
    """A job every ``--job-interval-s`` until ``done``."""
    rng = random.Random(seed)
    low, high = stack.args.job_items
    with httpx.Client(base_url=stack.rewriter_url, headers=stack.auth,
                      timeout=REQUEST_TIMEOUT_S) as client:
        number = 0
        while not done.is_set():
            job = Job(f"soak-{number:05d}", rng.randint(low, high))
            number += 1
            book.add(job)
            submit(client, rec, job)
            done.wait(stack.args.job_interval_s)


def fetch_results(client: httpx.Client, rec: Recorder, job: Job) -> bool:
    """Download the job's results into ``job.results``; False when that failed."""
    reply = call(rec, "api_results", lambda: client.get(f"/v1/jobs/{job.id}/results"))
    if reply is None or reply.status_code != 200:
        return False
    job.results = Counter(json.loads(line)["problem_id"] for line in reply.text.splitlines()
                          if line.strip())
    return True


def poll_job(client: httpx.Client, rec: Recorder, job: Job) -> None:
    """Check a job; once it has finished, take its results."""
    reply = call(rec, "api_status", lambda: client.get(f"/v1/jobs/{job.id}"))
    if reply is None or reply.status_code != 200:
        return
    state = reply.json()
    if state["status"] in FINISHED and fetch_results(client, rec, job):
        job.failed = state["failed"]
        job.status = state["status"]


def poll_loop(stack: Stack, rec: Recorder, book: JobBook, done: threading.Event) -> None:
    """Poll the open jobs until ``done``; then take the partial results of unfinished ones."""
    with httpx.Client(base_url=stack.rewriter_url, headers=stack.auth,
                      timeout=REQUEST_TIMEOUT_S) as client:
        while not done.wait(POLL_INTERVAL_S):
            for job in book.open_jobs():
                poll_job(client, rec, job)
        for job in book.open_jobs():
            fetch_results(client, rec, job)


def read_aligned(stack: Stack) -> Counter[tuple[str, str]]:
    """(job, problem id) -> entries on the trainers' stream."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True, socket_timeout=30)
    counts: Counter[tuple[str, str]] = Counter()
    start = "-"
    while batch := client.xrange(Keys(PREFIX).aligned, min=start, count=1000):
        for _, fields in batch:
            counts[(fields["job"], json.loads(fields["example"])["problem_id"])] += 1
        start = f"({batch[-1][0]}"
    client.close()
    return counts


def guarded(rec: Recorder, target: Callable[..., None], *args: Any) -> threading.Thread:
    """A daemon thread running ``target(*args)``; an exception in it is printed and counted
    as an ``instrument error`` (it fails the run)."""
    def body() -> None:
        try:
            target(*args)
        except Exception:
            rec.count("instrument errors")
            traceback.print_exc()

    return threading.Thread(target=body, name=target.__name__, daemon=True)


def threads_of(stack: Stack, rec: Recorder, book: JobBook,
               events: dict[str, threading.Event]) -> dict[str, list[threading.Thread]]:
    """The run's threads by when they stop: load (and chaos), polling, supervision."""
    seed = stack.args.seed
    load = [guarded(rec, verify_client, stack, rec, events["load"], seed + i)
            for i in range(stack.args.verify_clients)]
    load += [guarded(rec, submit_loop, stack, rec, book, events["load"], seed + 1000),
             guarded(rec, chaos_loop, stack, rec, events["load"], seed + 2000)]
    return {"load": load, "poll": [guarded(rec, poll_loop, stack, rec, book, events["poll"])],
            "supervise": [guarded(rec, supervise_loop, stack, rec, events["supervise"])]}


def run_load(stack: Stack, rec: Recorder) -> tuple[JobBook, Counter[tuple[str, str]], float]:
    """The load for ``--duration-s``, then the drain; returns the jobs, the trainers' stream
    counts and the drain's seconds."""
    book = JobBook()
    events = {name: threading.Event() for name in ("load", "poll", "supervise")}
    threads = threads_of(stack, rec, book, events)
    for group in threads.values():
        for thread in group:
            thread.start()
    time.sleep(stack.args.duration_s)
    events["load"].set()
    print(f"[{rec.now():6.1f} s] load stopped; draining", flush=True)
    for thread in threads["load"]:
        thread.join()
    drain_began = time.monotonic()
    deadline = drain_began + stack.args.drain_s
    while book.open_jobs() and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
    drained = time.monotonic() - drain_began
    for name in ("poll", "supervise"):
        events[name].set()
        for thread in threads[name]:
            thread.join()
    return book, read_aligned(stack), drained


# --------------------------------------------------------------------------- report


def request_rows(rec: Recorder) -> dict[str, dict[str, Any]]:
    """Per request kind: counts, latency percentiles of the answered ones, errors."""
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted({s.kind for s in rec.samples}):
        samples = [s for s in rec.samples if s.kind == kind]
        ok = [s.latency_s for s in samples if s.outcome == "ok"]
        failed = [s.latency_s for s in samples if s.outcome not in ("ok", "abandoned")]
        out[kind] = {"requests": len(samples), "ok": len(ok),
                     "p50_s": percentile(ok, 50), "p99_s": percentile(ok, 99),
                     "max_s": max(ok, default=None),
                     "error_p99_s": percentile(failed, 99),
                     "outcomes": dict(Counter(s.outcome for s in samples))}
    return out


def integrity(book: JobBook, aligned: Counter[tuple[str, str]]) -> dict[str, Any]:
    """Jobs and problems: submitted, completed, lost, duplicated (results and stream)."""
    accepted = [job for job in book.jobs if job.accepted]
    out: Counter[str] = Counter()
    for job in accepted:
        expected = set(job.problem_ids())
        out["problems submitted"] += job.size
        out["results"] += sum(job.results.values())
        out["lost"] += len(expected - set(job.results))
        out["lost, reported failed by the job"] += job.failed
        out["duplicated"] += sum(n - 1 for n in job.results.values() if n > 1)
        out["unexpected results"] += len(set(job.results) - expected)
        on_stream = Counter({pid: aligned[(job.id, pid)] for pid in expected})
        out["lost on the trainers' stream"] += sum(1 for n in on_stream.values() if n == 0)
        out["duplicated on the trainers' stream"] += sum(n - 1 for n in on_stream.values()
                                                         if n > 1)
    ids = {job.id for job in accepted}
    statuses = Counter(job.status or "unfinished" for job in accepted)
    return {"jobs created": len(book.jobs), "jobs accepted": len(accepted),
            "jobs by status": dict(statuses), **out,
            "stream entries of jobs never acknowledged": sum(
                n for (job_id, _), n in aligned.items() if job_id not in ids)}


def ms(value: float | None) -> str:
    """Seconds as milliseconds, or a dash."""
    return "-" if value is None else f"{value * 1000:.0f} ms"


def print_requests(rows: dict[str, dict[str, Any]]) -> None:
    """The per-kind request table."""
    columns = ("429", "503", "5xx", "4xx", "timeout", "transport", "abandoned")
    table = [(kind, str(r["requests"]), str(r["ok"]), ms(r["p50_s"]), ms(r["p99_s"]),
              ms(r["max_s"]), ms(r["error_p99_s"]),
              *(str(r["outcomes"].get(c, 0)) for c in columns)) for kind, r in rows.items()]
    print(_machine.format_table(
        ["requests", "sent", "ok", "p50", "p99", "max", "err p99", *columns], table))


def failures(checks: dict[str, Any], crashes: int, counts: Counter[str]) -> list[str]:
    """What failed the run: losses, duplicates, unexpected results, crashes, errors of the
    soak itself."""
    keys = ("lost", "duplicated", "unexpected results", "lost on the trainers' stream",
            "duplicated on the trainers' stream")
    bad = [f"{key}: {checks.get(key, 0)}" for key in keys if checks.get(key, 0)]
    unfinished = checks["jobs by status"].get("unfinished", 0)
    if unfinished:
        bad.append(f"jobs unfinished after the drain: {unfinished}")
    if crashes:
        bad.append(f"processes crashed: {crashes}")
    if counts["instrument errors"]:
        bad.append(f"soak threads failed: {counts['instrument errors']}")
    return bad


def print_integrity(checks: dict[str, Any], stack: Stack, orphans: int,
                    counts: Counter[str]) -> None:
    """The jobs, problems, restarts and counters table."""
    zero = {"lost", "duplicated", "unexpected results", "lost on the trainers' stream",
            "duplicated on the trainers' stream"}
    rows = []
    for key, value in checks.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
        target = "0" if key in zero else "-"
        result = _machine.verdict(value == 0) if key in zero else "info"
        rows.append((key, str(value), target, result))
    rows += [(key, str(value), "-", "info") for key, value in sorted(stack.restarts.items())]
    rows.append(("processes crashed (restarted)", str(len(stack.crashes)), "0",
                 _machine.verdict(not stack.crashes)))
    rows.append(("orphan process groups of killed workers", str(orphans), "-", "info"))
    rows += [(name, str(value), "-", "info") for name, value in sorted(counts.items())]
    print(_machine.format_table(["jobs, problems, restarts", "value", "target", "result"],
                                rows))


# --------------------------------------------------------------------------- plot


def plot(rec: Recorder, path: Path) -> str:
    """Latency over time per kind, errors as crosses, chaos events shaded; a line saying
    where it went, or why there is none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (the plot extra)"
    fig, ax = plt.subplots(figsize=(12, 5))
    for kind in sorted({s.kind for s in rec.samples}):
        ok = [s for s in rec.samples if s.kind == kind and s.outcome == "ok"]
        ax.scatter([s.t for s in ok], [s.latency_s for s in ok], s=4, label=kind)
    bad = [s for s in rec.samples if s.outcome not in ("ok", "abandoned")]
    ax.scatter([s.t for s in bad], [s.latency_s for s in bad], s=16, marker="x", color="red",
               label="errors")
    colors = dict(zip(CHAOS_KINDS, ("tab:orange", "tab:purple", "tab:red"), strict=True))
    for event in rec.events:
        ax.axvspan(event["start_s"], max(event["end_s"], event["start_s"] + 0.5), alpha=0.2,
                   color=colors[event["kind"]])
        ax.text(event["start_s"], 1.0, event["kind"], rotation=90, fontsize=7,
                transform=ax.get_xaxis_transform(), va="top")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the start")
    ax.set_ylabel("latency (s)")
    ax.set_title("soak: request latency, chaos events shaded")
    ax.legend(fontsize=7, markerscale=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written to {path}"


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=600.0,
                        help="seconds of load (quick check: 60)")
    parser.add_argument("--drain-s", type=float, default=180.0,
                        help="longest wait for the jobs to finish after the load")
    parser.add_argument("--workers", type=int, default=2, help="rewrite worker processes")
    parser.add_argument("--verify-clients", type=int, default=4,
                        help="concurrent verifier clients")
    parser.add_argument("--pathological-share", type=float, default=0.1,
                        help="share of verifications that hit the verifier's timeout")
    parser.add_argument("--disconnect-share", type=float, default=0.5,
                        help=f"share of pathological clients leaving after "
                        f"{DISCONNECT_AFTER_S} s")
    parser.add_argument("--verifier-timeout-s", type=float, default=5.0,
                        help="MINDGAP_VERIFIER_TIMEOUT_S of the verifier service")
    parser.add_argument("--job-interval-s", type=float, default=5.0,
                        help="pause between job submissions")
    parser.add_argument("--job-items", type=int, nargs=2, default=(50, 200),
                        metavar=("MIN", "MAX"), help="problems per job")
    parser.add_argument("--engine-delay-s", type=float, default=0.01,
                        help="the scripted engine's delay per batch")
    parser.add_argument("--chaos-every-s", type=float, nargs=2, default=(60.0, 90.0),
                        metavar=("MIN", "MAX"), help="seconds between chaos events "
                        f"(scaled down so that a run has at least {MIN_CHAOS_EVENTS})")
    parser.add_argument("--pause-s", type=float, default=20.0,
                        help="how long Redis stays stopped (SIGSTOP)")
    parser.add_argument("--redis-down-s", type=float, default=10.0,
                        help="how long a killed Redis stays down before its restart")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON results (the plot goes beside it, .png)")
    return parser.parse_args()


@dataclass
class Run:
    """Everything a finished soak produced."""

    rec: Recorder
    book: JobBook
    aligned: Counter[tuple[str, str]]
    drain_s: float
    stack: Stack
    orphans: int = 0


def soak(args: argparse.Namespace, tmp: Path) -> Run:
    """Start the stack, load it, drain it, stop it."""
    stack = Stack(args, tmp)
    try:
        print("starting redis, verifier, rewriter, workers ...", flush=True)
        try:
            stack.start()
        except (TimeoutError, RuntimeError):
            for child in [stack.redis, stack.verifier, stack.rewriter, *stack.workers]:
                print(f"--- {child.name} (running: {child.alive()}):\n{child.tail()}")
            raise
        rec = Recorder()
        print(f"stack ready; {args.duration_s:.0f} s of load, chaos every "
              "{:.0f}-{:.0f} s".format(*chaos_gaps(args)), flush=True)
        book, aligned, drained = run_load(stack, rec)
    finally:
        orphans = stack.stop()
    return Run(rec, book, aligned, drained, stack, orphans)


def report(args: argparse.Namespace, run: Run, info: dict[str, Any]) -> list[str]:
    """Print the tables, save the JSON and plot; returns what failed."""
    rows = request_rows(run.rec)
    checks = integrity(run.book, run.aligned)
    crashes = len(run.stack.crashes)
    bad = failures(checks, crashes, run.rec.counts)
    verifier = sum(r["requests"] for kind, r in rows.items() if kind.startswith("verify"))
    api = sum(r["requests"] for r in rows.values()) - verifier
    print(f"\nsoak: {args.duration_s:.0f} s of load, drained in {run.drain_s:.1f} s, "
          f"{len(run.rec.events)} chaos events, {verifier} verifier and {api} API "
          f"requests, {os.cpu_count()} cores")
    print_requests(rows)
    print()
    print_integrity(checks, run.stack, run.orphans, run.rec.counts)
    for crash in run.stack.crashes:
        last = crash["log_tail"].splitlines()[-1:] or ["(no output)"]
        print(f"crash: {crash['process']} at {crash['at_s']} s, rc {crash['returncode']}: "
              f"{last[0]}")
    line = plot(run.rec, args.output.with_suffix(".png"))
    print(line)
    print(_machine.end_load(info))
    _machine.save_json(args.output, {
        "benchmark": "soak", "machine": info,
        "settings": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in vars(args).items()} | {"output": str(args.output)},
        "requests": rows, "integrity": checks, "restarts": dict(run.stack.restarts),
        "crashes": run.stack.crashes, "orphan_groups": run.orphans,
        "chaos_events": run.rec.events, "counters": dict(run.rec.counts),
        "drain_s": run.drain_s, "plot": line, "failures": bad,
        "samples": [[round(s.t, 3), s.kind, round(s.latency_s, 4), s.outcome]
                    for s in run.rec.samples]})
    print(f"results written to {args.output}")
    print(f"{_machine.verdict(not bad)}" + (": " + "; ".join(bad) if bad else ""))
    return bad


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # clean up
    info = _machine.machine_info()
    with tempfile.TemporaryDirectory(prefix="mindgap-soak-") as tmp:
        run = soak(args, Path(tmp))
        bad = report(args, run, info)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
